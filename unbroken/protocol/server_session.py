"""The server's session state machine (sans-I/O): what a client frame means, and
where each attached stream stands.

``AWAIT_HELLO → READY → CLOSED``. Any frame before ``hello`` closes with
4001; a second ``hello`` closes with 4000. An ``ack`` is never a reason to close:
late or repeated acks for a stream released here (its end was sent) are ignored,
whatever their number, and an ack for a stream this connection never had, or of
events never sent, is answered with an ``error`` (:meth:`ServerSession.take_ack`),
so it cannot take the connection's other streams down.

The session is the one owner of each attached stream's flow state
(:class:`StreamFlow`: sent, acked, bytes in flight against the window); the
server's attachments only read the log and report the frames they built. Time is
always an argument.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..errors import ProtocolError
from .codes import CloseCode
from .frames import (
    DEFAULT_MAX_FRAME,
    ClientFrame,
    Hello,
    decode_client,
    excerpt,
    peek_type,
)
from .frames_v2 import T_HELLO, peek_tag
from .frames_v2 import decode_client as decode_client_v2


# ===================================================================== rate limit
@dataclass(slots=True)
class TokenBucket:
    """A token bucket; :meth:`take` returns 0 when allowed, else seconds to wait."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> float:
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else float("inf")


# ===================================================================== flow
#: The largest first ``events`` frame of an attachment (:class:`StreamFlow`).
FIRST_FRAME = 4 * 1024

#: The least the flow window shrinks to on a slow link (bytes): enough for the link
#: to stay busy while the client's acks come every heartbeat over a 2 s round trip.
MIN_WINDOW = 64 * 1024
#: Queueing delay (s) beyond the path's round trip that marks the link as the
#: bottleneck: the bytes in flight are then cut to what the link drains.
QUEUE_TARGET = 0.5
#: Seconds of the measured drain rate kept in flight beyond the round trip: the
#: client acks at least every second (or on ``hb``), so less would idle the link.
ACK_SPAN = 1.0
#: The round trip's floor is the least sample seen in this many seconds (as BBR's
#: min-RTT filter: a path whose latency grew is adopted after this).
RTT_WINDOW = 10.0
#: Frames in flight are counted in records, not one each: a frame joins the newest
#: record while that record spans less than this many seconds (from its first
#: frame) and stays within :data:`COALESCE_BYTES`. A round trip is timed from a
#: record's first frame, so it reads at most this much long: well under
#: :data:`QUEUE_TARGET`.
COALESCE_SPAN = 0.2
#: The most bytes one record of frames in flight counts (and at most a sixteenth of
#: the window): an ack inside a record frees it only once its last frame is acked,
#: so this bounds what a partial ack leaves counted in flight.
COALESCE_BYTES = 4 * 1024
#: The most records of frames in flight one stream keeps (at least; twice what a
#: full window of full records needs): a client that never acks while a stream
#: trickles (a frame a record, one each :data:`COALESCE_SPAN`) holds at most this
#: many, 24 bytes each, the two oldest merged into one when a new one would pass it.
MAX_RECORDS = 64


class StreamFlow:
    """One stream on one connection: what was sent, what the client acked, and the
    bytes in flight against the flow window.

    A frame ``[first..last]`` of ``size`` bytes is recorded with :meth:`sent_frame`;
    a cumulative ack removes every frame it covers from the window. At most
    ``window`` unacked bytes are in flight, at most ``frame_cap`` per frame (one
    frame goes out whatever the window when nothing is in flight: an event larger
    than the window is never stuck).

    The first frame of an attachment (after ``started`` or ``resumed``) is small,
    at most ``first_frame`` bytes, and each next one may be twice the last, up to
    ``frame_cap``: a client that reconnects mid-answer verifies and shows the first
    missing events after decoding 4 KiB (~0.5 ms in a busy page), not a whole
    256 KiB catch-up frame, and a long catch-up still reaches full-size frames after
    a few (4 → 256 KiB in seven frames, 508 KiB).

    With a ``clock`` the window follows the link (:attr:`cwnd`): each ack measures
    the round trip of the newest frame it covers and the rate at which the client
    drains the stream. When the round trip exceeds its floor (the least of the last
    :data:`RTT_WINDOW` seconds) by more than :data:`QUEUE_TARGET`, the bytes are
    queueing between server and client (a link slower than the stream): the window
    becomes the drain rate times the floor plus :data:`ACK_SPAN`, at least
    :data:`MIN_WINDOW`. The backlog then waits in the log, where the next frame
    coalesces it, not in socket buffers, and the client's pongs and acks wait behind
    less. When the queue is gone the window doubles per ack back to ``window``. An
    ack that answers an ``hb`` sent after the frame (:attr:`hb_at`) measures the
    heartbeat's wait, not the link: no round-trip sample."""

    __slots__ = (
        "_max_records",
        "acked",
        "acked_at",
        "adaptive",
        "clock",
        "coalesce",
        "cwnd",
        "ended",
        "frame_cap",
        "hb_at",
        "inflight_at",
        "inflight_bytes",
        "inflight_ends",
        "inflight_last",
        "ramp",
        "rate",
        "record_at",
        "record_start",
        "rtt_floor",
        "rtt_floor_at",
        "sent",
        "sent_bytes",
        "window",
    )

    def __init__(
        self,
        after: int,
        *,
        window: int,
        frame_cap: int,
        acked: int = -1,
        first_frame: int = FIRST_FRAME,
        clock: Callable[[], float] | None = None,
        adaptive: bool = True,
    ) -> None:
        #: last seq sent (the cursor)
        self.sent = after
        #: highest seq the client acked (cumulative)
        self.acked = max(after, acked)
        #: the configured window: the most ever in flight
        self.window = window
        #: the window in force: ``window``, or less on a link slower than the stream
        self.cwnd = window
        self.frame_cap = frame_cap
        #: the largest next frame while ramping up (doubles per frame sent)
        self.ramp = max(1, min(first_frame, frame_cap))
        #: the time source of the link measurements (``None``: the window is fixed)
        self.clock = clock
        #: with a ``clock``: the window follows the link (``False``: frames are still
        #: timed, for :meth:`~unbroken.server.connection.Connection.behind`, but the
        #: window stays fixed)
        self.adaptive = adaptive
        #: when the connection last sent ``hb`` (set by the connection)
        self.hb_at = 0.0
        #: the client's drain rate (bytes/s, smoothed; 0: not measured yet)
        self.rate = 0.0
        #: the least round trip seen lately (s; ``inf``: none yet) and since when
        self.rtt_floor = float("inf")
        self.rtt_floor_at = 0.0
        self.acked_at = 0.0  # when the last ack that moved the window arrived
        # the frames in flight, in records of frames sent close together (a paced
        # stream's tokens, one frame each, are counted, not kept one by one: the log
        # holds the frames' events), in three arrays (24 bytes a record, no object):
        # a record's last seq, the bytes sent up to and with it (``sent_bytes``
        # then), and when its first frame was sent. A frame joins the newest record
        # while it spans < COALESCE_SPAN s and <= ``coalesce`` bytes; a cumulative
        # ack removes the records it covers, a prefix, in one slice. The newest
        # record always ends with the last frame sent: its last seq and bytes are
        # ``sent`` and ``sent_bytes``, written into the arrays when it is closed (a
        # newer record starts) or read (:meth:`records`, :meth:`ack`), not per frame
        # (an array item store parses its argument: ~400 instructions a token).
        #: the most bytes one record counts
        self.coalesce = min(COALESCE_BYTES, window // 16)
        self._max_records = max(MAX_RECORDS, 2 * window // max(1, self.coalesce))
        self.inflight_last = array("q")
        self.inflight_ends = array("q")
        self.inflight_at = array("d")
        self.inflight_bytes = 0
        self.sent_bytes = 0
        #: where the newest record's bytes start (``sent_bytes`` before its first frame)
        self.record_start = 0
        #: when the newest record's first frame went (``inflight_at[-1]`` while there
        #: is a record; a slot, not the array's float, read per frame: one cache line
        #: and one float object fewer a paced token)
        self.record_at = 0.0
        #: the ``end`` event was sent
        self.ended = False

    def max_records(self) -> int:
        """The most records of frames in flight kept (see :data:`MAX_RECORDS`)."""
        return self._max_records

    def records(self) -> tuple[array[int], array[int], array[float]]:
        """The records of frames in flight, oldest first: each one's last seq, the
        bytes sent up to and with it, and when its first frame went (the arrays
        themselves, read-only to the caller)."""
        lasts = self.inflight_last
        if lasts:
            lasts[-1] = self.sent
            self.inflight_ends[-1] = self.sent_bytes
        return lasts, self.inflight_ends, self.inflight_at

    def budget(self) -> int:
        """Bytes that may be sent now (0 or less: wait for an ack)."""
        if self.inflight_bytes == 0:
            # one frame always goes (an event larger than the window is never stuck),
            # no larger than a window cut to a slow link
            return self.ramp if self.cwnd >= self.window else min(self.ramp, self.cwnd)
        return min(self.ramp, self.cwnd - self.inflight_bytes)

    def sent_frame(self, last: int, size: int, end: bool) -> None:
        """A frame whose last event is ``last`` (``end``: the stream's end) went out."""
        before = self.sent
        self.sent = last
        if self.ramp < self.frame_cap:
            ramp = self.ramp * 2
            self.ramp = ramp if ramp < self.frame_cap else self.frame_cap
        self.inflight_bytes += size
        sent = self.sent_bytes + size
        self.sent_bytes = sent
        now = self.clock() if self.clock is not None else 0.0
        lasts = self.inflight_last
        if not (
            lasts
            and now - self.record_at < COALESCE_SPAN
            and sent - self.record_start <= self.coalesce
        ):  # a new record (else the newest takes the frame: its last and end are ours)
            if lasts:  # the newest record is closed with the frame before this one
                lasts[-1] = before
                self.inflight_ends[-1] = sent - size
                if len(lasts) >= self._max_records:
                    # a client that does not ack: the two oldest records become one
                    # (the second's last frame and bytes, the first's time), so a
                    # trickle never acked costs a bounded few kB, not a record per
                    # 0.2 s forever
                    del lasts[0]
                    del self.inflight_ends[0]
                    del self.inflight_at[1]
            self.record_start = sent - size
            self.record_at = now
            lasts.append(last)
            self.inflight_ends.append(sent)
            self.inflight_at.append(now)
        if end:
            self.ended = True

    def ack(self, seq: int) -> bool:
        """Apply a cumulative ack; ``False`` (nothing changes) if it acks events
        never sent."""
        if seq > self.sent:
            return False
        if seq > self.acked:
            self.acked = seq
        lasts = self.records()[0]  # (the newest record's last and end written)
        # frames go out in seq order: the records an ack covers are a prefix
        k = bisect_right(lasts, seq)
        if k:
            # what was in flight, less what is left after the k-th record
            freed = self.inflight_bytes - (self.sent_bytes - self.inflight_ends[k - 1])
            self.inflight_bytes -= freed
            if self.clock is not None and self.adaptive:
                # timed by the newest record whose first frame the ack reaches: the
                # next one, when the ack goes past the k-th record's last frame
                at = self.inflight_at
                sent_at = at[k] if k < len(lasts) and seq > lasts[k - 1] else at[k - 1]
                self._measure(self.clock(), sent_at, freed)
            del lasts[:k]
            del self.inflight_ends[:k]
            del self.inflight_at[:k]
        return True

    def _measure(self, now: float, sent_at: float, freed: int) -> None:
        """An ack at ``now`` freed ``freed`` bytes, the newest of them sent at
        ``sent_at``: update the drain rate, the round trip's floor, and the window."""
        if self.acked_at and now > self.acked_at:
            sample = freed / (now - self.acked_at)
            if math.isfinite(sample):  # two acks a denormal apart: no sample
                self.rate = sample if not self.rate else 0.75 * self.rate + 0.25 * sample
        self.acked_at = now
        if self.hb_at > sent_at:
            return  # the ack answered a heartbeat: it timed the wait, not the link
        rtt = now - sent_at
        if rtt <= self.rtt_floor or now - self.rtt_floor_at > RTT_WINDOW:
            self.rtt_floor, self.rtt_floor_at = rtt, now
        if rtt - self.rtt_floor > QUEUE_TARGET and self.rate:
            # bytes queue between us and the client: keep in flight what it drains
            pipe = min(float(self.window), self.rate * (self.rtt_floor + ACK_SPAN))
            self.cwnd = max(min(MIN_WINDOW, self.window), int(pipe))
        elif self.cwnd < self.window:
            self.cwnd = min(self.window, self.cwnd * 2)

    @property
    def finished(self) -> bool:
        """The end event was sent and acknowledged."""
        return self.ended and self.acked >= self.sent

    @property
    def stalled(self) -> bool:
        """Live, with a full window: nothing more may be sent until the client acks."""
        return not self.ended and self.budget() <= 0


class AckResult(Enum):
    """What an ``ack`` frame did (:meth:`ServerSession.take_ack`)."""

    #: the window moved
    APPLIED = "applied"
    #: the end was sent and is now acked: the stream is done with here (detach it)
    FINISHED = "finished"
    #: a late ack for a released stream: legal, ignored
    RELEASED = "released"
    #: a stream neither attached nor released here: answer with an error
    UNKNOWN = "unknown"
    #: acks events never sent: answer with an error
    BEYOND = "beyond"


# ===================================================================== server
class ServerState(Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


class ServerSession:
    """One connection, as the server sees it."""

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_hello_frame: int | None = None,
        max_streams: int = 1000,
        start_rate: float = 100.0,
        start_burst: int = 200,
        window: int = 1024 * 1024,
        frame_cap: int = 256 * 1024,
        peer_silence: float = 1.5,
        first_frame: int = FIRST_FRAME,
        clock: Callable[[], float] | None = None,
        adaptive: bool = True,
        version: str = "v1",
    ) -> None:
        self.state = ServerState.AWAIT_HELLO
        #: the protocol version of the connection (its frames' encoding)
        self.version = version
        self._decode: Callable[[bytes | str, int], ClientFrame] = (
            decode_client_v2 if version == "v2" else decode_client
        )
        self.max_frame = max_frame
        #: the limit before ``hello`` is accepted (a peer not yet authenticated)
        self.max_hello_frame = max_frame if max_hello_frame is None else max_hello_frame
        self.max_streams = max_streams
        #: the flow window (unacked bytes in flight per stream) and the largest frame
        self.window = window
        self.frame_cap = frame_cap
        #: the first frame's cap of each attachment (it doubles up to ``frame_cap``)
        self.first_frame = first_frame
        #: the time source that lets each flow window follow its link (``None``: fixed)
        self.clock = clock
        #: ``False``: the frames are timed but the windows stay fixed (adaptive delivery off)
        self.adaptive = adaptive
        #: a stalled stream and nothing heard for this long: the peer is lost
        self.peer_silence = peer_silence
        #: attached streams: the one record of what was sent and acked on each
        self.flows: dict[str, StreamFlow] = {}
        self._stalled_since = 0.0  # when a flow window was first seen full
        #: streams no longer attached (their end was sent, or retention dropped them)
        #: whose acks may still be on their way: legal, and ignored. Bounded (oldest
        #: forgotten first), so a client that never acks cannot grow the session.
        # a dict (insertion order; 64 B empty), not an OrderedDict (128 B)
        self.released: dict[str, None] = {}
        self.max_released = 1024
        self.hello: Hello | None = None
        self._starts = TokenBucket(start_rate, start_burst)

    def receive(self, data: bytes | str) -> ClientFrame:
        """Decode and check one frame; raises :class:`ProtocolError` to close."""
        if self.state is ServerState.CLOSED:
            raise ProtocolError("connection is closed", CloseCode.BAD_FRAME)
        if self.state is ServerState.AWAIT_HELLO:
            # its type first, its body only if it is a hello: a peer not yet
            # authenticated cannot make the server build a large body
            if self.version == "v2":
                tag = peek_tag(data, self.max_hello_frame)
                kind = "hello" if tag == T_HELLO else f"tag {tag}"
            else:
                kind = peek_type(data, self.max_hello_frame)
            if kind != "hello":
                raise ProtocolError(
                    f"first frame must be hello, got '{excerpt(kind, 40)}'",
                    CloseCode.AUTH_REQUIRED,
                )
            frame = self._decode(data, self.max_hello_frame)
            assert isinstance(frame, Hello)
            self.hello = frame
            self.state = ServerState.READY
            return frame
        frame = self._decode(data, self.max_frame)
        if isinstance(frame, Hello):
            raise ProtocolError("hello sent twice", CloseCode.BAD_FRAME)
        return frame

    @property
    def streams(self) -> dict[str, int]:
        """Attached stream -> highest ack (a view of :attr:`flows`)."""
        return {stream: flow.acked for stream, flow in self.flows.items()}

    def admit_start(self, now: float) -> float:
        """0 when a start may proceed now, else seconds to wait (rate or stream limit)."""
        if len(self.flows) >= self.max_streams:
            return 1.0
        return self._starts.take(now)

    def attach(self, stream: str, acked: int = 0) -> StreamFlow:
        """A stream was started or resumed on this connection, after seq ``acked``:
        a new cursor there (attached again, it keeps the highest ack seen)."""
        old = self.flows.get(stream)
        flow = StreamFlow(
            acked,
            window=self.window,
            frame_cap=self.frame_cap,
            acked=old.acked if old is not None else -1,
            first_frame=self.first_frame,
            clock=self.clock,
            adaptive=self.adaptive,
        )
        self.flows[stream] = flow
        self.released.pop(stream, None)
        return flow

    def detach(self, stream: str) -> None:
        """The stream is done with on this connection (its end was acked)."""
        self.flows.pop(stream, None)
        self.released.pop(stream, None)

    def release(self, stream: str) -> None:
        """The stream no longer counts as attached (its end was sent, or it is gone),
        but acks for it may still arrive: they stay legal until acked or forgotten."""
        if self.flows.pop(stream, None) is None and stream not in self.released:
            return
        released = self.released
        released[stream] = None
        while len(released) > self.max_released:
            del released[next(iter(released))]  # the oldest

    def ack(self, stream: str, seq: int) -> int | None:
        """Record a cumulative ack; returns the highest ack so far, or ``None`` for a
        stream neither attached nor released here (answer it with an error).

        Acks for a released stream are legal however many arrive (the client may
        have several in flight when the end is sent): they change nothing, and the
        entry stays until the bound on :attr:`released` forgets it.

        This records the ack only (for a driver that counts no frames); a server
        that sends through the flows uses :meth:`take_ack`, which checks it."""
        flow = self.flows.get(stream)
        if flow is None:
            return seq if stream in self.released else None
        if seq > flow.acked:
            flow.acked = seq
        return flow.acked

    def take_ack(self, stream: str, seq: int) -> AckResult:
        """Apply a client's cumulative ack to the stream's flow (see :class:`AckResult`).

        A finished stream (its end sent and now acked) is detached here."""
        flow = self.flows.get(stream)
        if flow is None:
            return AckResult.RELEASED if stream in self.released else AckResult.UNKNOWN
        if not flow.ack(seq):
            return AckResult.BEYOND
        if flow.finished:
            self.detach(stream)
            return AckResult.FINISHED
        return AckResult.APPLIED

    # ------------------------------------------------------------ liveness
    def hb_sent(self, now: float) -> None:
        """An ``hb`` went out at ``now``: the acks it provokes time the heartbeat's
        wait, not the link (:class:`StreamFlow` takes no round trip from them)."""
        for flow in self.flows.values():
            flow.hb_at = now

    def live(self) -> bool:
        """Some attached stream has not sent its end yet."""
        for flow in self.flows.values():  # noqa: SIM110 - every heartbeat tick: no generator
            if not flow.ended:
                return True
        return False

    def window_full(self) -> bool:
        """Some live stream may send nothing more until the client acks."""
        for flow in self.flows.values():
            # flow.stalled, inlined (every heartbeat tick): the budget is at most 0
            # only with bytes in flight filling the window in force (the ramp is >= 1)
            inflight = flow.inflight_bytes
            if inflight and inflight >= flow.cwnd and not flow.ended:
                return True
        return False

    def peer_silent(self, now: float, last_heard: float, sending: bool) -> float:
        """Seconds the client has been silent while a stream waits for its ack, when
        that is over ``peer_silence`` (the client's frames are being lost: give up
        on the connection); else 0.

        A client that hears us answers every ``hb`` and acks as it reads, so a full
        window with nothing heard means its acks are lost. Silence counts from when
        the window was first seen full (or from the last frame heard, if later); a
        connection stuck in a send (``sending``) is judged by the send timeout
        instead. Call it on every heartbeat tick."""
        if sending or not self.window_full():
            self._stalled_since = 0.0
            return 0.0
        if not self._stalled_since:
            self._stalled_since = now
        silent = now - max(last_heard, self._stalled_since)
        return silent if silent > self.peer_silence else 0.0

    def close(self) -> None:
        self.state = ServerState.CLOSED
        self.flows.clear()
        self.released.clear()
