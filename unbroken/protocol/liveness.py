"""When is the link dead? The client's liveness rule (pure: time is passed in).

The link is declared dead when nothing arrives for the silence limit, or when a
``ping`` stays unanswered that long (the client's own frames are then lost). The
limit is ``silence_factor`` heartbeats plus the RTO, ``SRTT + 4·RTTVAR`` of the
measured round trips (RFC 6298), the RTO term capped at :data:`MAX_RTO`. Time the
client's own process ran late (its checks ran behind schedule) never counts
against the link. A pong that queued behind a large message measures the queue,
not the path: it is no RTT sample (as Karn's rule skips ambiguous ones), and the
ping it answers is judged from when that data finished arriving.

On a link slower than the stream, the backlog may sit between server and client
(socket buffers, a slow hop) as many small messages: every pong then waits behind
it. A pong that came back behind data (:data:`BULK` bytes or more heard between
ping and pong) tells how long that queue made it wait; while data keeps arriving
ahead of the next pong, that ping may wait that long again, twice over (the queue
may be growing), at most :data:`MAX_QUEUE` more than the limit. A receive-only
link is still found: its pongs stop coming at all, so the last delay seen is the
healthy link's round trip, and a stalled server sends nothing but ``hb``.

The flow window bounds that queue even before any pong came back: the server sends
a stream at most its window beyond the client's last ack, so when a ping goes out at
most :attr:`Liveness.ahead` event bytes (the session's estimate: each live stream's
window less what it received unacked) can be on their way ahead of its pong. While
those event bytes still arrive, an unanswered ping is judged from the last of them, at
most :data:`MAX_AHEAD` after the first ping of the unanswered spell: a link far slower
than the stream (5 KB/s against a 16 KiB window: a 3.4 s queue) is not cut on its
first ping. Event bytes past that bound could only have been sent after the server
read an ack sent after the ping; a link whose upstream died gets no more than the
bound, then only ``hb``. The allowance applies once :data:`AHEAD_MIN` event bytes
arrived in the spell: a receive-only failure under a slow trickle is still found at
the limit, under a faster one at most :data:`MAX_AHEAD` later.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Ping

#: the most the round trip may add to the silence limit (seconds)
MAX_RTO = 2.0

#: bytes of one message still arriving that make a late pong "queued behind data",
#: not lost: paced tokens and heartbeats come as small whole messages and never count
BULK = 4096

#: the most a ping may wait beyond the limit because its pong queues behind data
#: that keeps arriving (seconds)
MAX_QUEUE = 10.0

#: how many times the last queued pong's delay the next ping may wait while data
#: still arrives ahead of it (the queue may be growing)
QUEUE_GROWTH = 2.0

#: the most the flow window's allowance may move the judging of an unanswered ping,
#: from the first ping of the spell (seconds): a 5 KB/s link against a 16 KiB window
#: (3.4 s ahead) is kept; a receive-only failure under a fast trickle, whose server
#: keeps sending within its window, is found this much later than the limit at most
MAX_AHEAD = 3.0

#: event bytes a ping must have seen arrive before the flow window's allowance applies
#: to it: a link carrying a slow trickle (a few tokens a second) is judged at the limit
AHEAD_MIN = 2048

#: a check that ran this much behind schedule lets the reader go first (seconds)
LATE_RUN = 0.05

#: the heartbeat a server may ask for is clamped to this range (seconds): a server's
#: parameter must not switch silence detection off
MIN_HEARTBEAT = 0.05
MAX_HEARTBEAT = 10.0

#: pings remembered while unanswered (the oldest is dropped beyond this)
MAX_PINGS = 8

#: the longest wait between two checks (seconds)
MAX_CHECK_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class Check:
    """What a liveness check decided: the link is ``dead`` (why), or send ``ping``
    (if any) and check again at ``wake_at``."""

    wake_at: float
    dead: str | None = None
    ping: Ping | None = None


class Liveness:
    """The liveness state of one client across its connections (the RTT estimate
    survives a reconnect; pings and partial messages do not)."""

    def __init__(self, *, silence_factor: float = 3.0, ping_every: float = 0.75) -> None:
        self.silence_factor = silence_factor
        #: seconds between pings while a stream is live (0: only answers and acks ping)
        self.ping_every = ping_every
        #: the server's heartbeat interval (seconds), from ``welcome``
        self.heartbeat = 1.0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.last_recv = 0.0
        #: seconds this process ran late (checks behind schedule), summed: never the link's
        self.lag = 0.0
        self.lag_at_recv = 0.0
        # n -> (sent at, lag then, bytes heard then, event bytes heard then, ahead then)
        self.pings: dict[int, tuple[float, float, int, int, int]] = {}
        self.ping_n = 0
        self.last_ping_at = 0.0
        self.last_bulk = 0.0  # when the last BULK bytes finished arriving
        self.lag_at_bulk = 0.0
        self._partial = 0  # bytes heard since the last whole message arrived
        #: bytes heard on this client (all connections), for "data since the ping"
        self.heard = 0
        #: how long the last pong that came back behind data took (seconds; 0: the
        #: last pong had nothing ahead of it)
        self.queue_delay = 0.0
        self._deferred = False  # the last check let the reader go first
        #: event bytes that may be on their way when a ping is sent (the session sets
        #: it: each live stream's flow window less what it received unacked; 0: none)
        self.ahead = 0
        #: event bytes heard on this client (all connections)
        self.events = 0
        self.last_ahead = 0.0  # when event bytes ahead of the oldest pong last arrived
        self.lag_at_ahead = 0.0
        #: the ping that began the unanswered spell: (sent at, event bytes then, ahead)
        self._spell: tuple[float, int, int] | None = None

    # ---- inputs
    def connecting(self) -> None:
        """A new connection is being opened: what was in flight on the last is moot."""
        self.pings.clear()
        self._spell = None
        self._partial = 0
        self._deferred = False
        self.queue_delay = 0.0

    def hello_sent(self, now: float) -> None:
        """The connection is open and ``hello`` is sent: the clocks start."""
        self.last_recv, self.lag_at_recv = now, self.lag
        self.last_ping_at = now

    def welcomed(self, now: float, heartbeat_ms: float, rtt: float) -> None:
        """``welcome`` arrived ``rtt`` seconds after the attempt began."""
        self.last_recv, self.lag_at_recv = now, self.lag
        self.rtt_sample(rtt)
        self.heartbeat = min(max(heartbeat_ms / 1000, MIN_HEARTBEAT), MAX_HEARTBEAT)

    def bytes_heard(self, now: float, n: int) -> None:
        """``n`` bytes arrived (a frame may still be arriving): proof of life."""
        self.last_recv, self.lag_at_recv = now, self.lag
        self.heard += n
        self._partial += n
        if self._partial >= BULK:
            # a large message is still arriving: a pong sent after it can only come
            # after it (TCP is in order): late, not lost
            self._partial = 0
            self.last_bulk, self.lag_at_bulk = now, self.lag

    def events_heard(self, n: int) -> None:
        """A frame of ``n`` event bytes arrived (with the bytes last heard): while the
        oldest ping may still have them ahead of its pong (:attr:`ahead`), it is
        judged from now on."""
        self.events += n
        spell = self._spell
        if spell is not None and self.pings and self.events - spell[1] <= spell[2]:
            self.last_ahead, self.lag_at_ahead = self.last_recv, self.lag_at_recv

    def message_heard(self) -> None:
        """A whole message arrived: nothing is in progress."""
        self._partial = 0

    def ping(self, now: float) -> Ping:
        """A ping to send now (remembered until its pong)."""
        self.ping_n += 1
        if not self.pings:  # a spell of unanswered pings begins
            self._spell = (now, self.events, self.ahead)
        self.pings[self.ping_n] = (now, self.lag, self.heard, self.events, self.ahead)
        self.last_ping_at = now
        if len(self.pings) > MAX_PINGS:
            self.pings.pop(min(self.pings))
        return Ping(self.ping_n)

    def pong(self, now: float, n: int) -> None:
        """Pong ``n`` arrived: it and every older ping are answered (frames arrive in
        order); its round trip is a sample unless it queued behind data (Karn). If
        data came ahead of it, its delay is how long the queue made it wait."""
        sent = self.pings.pop(n, None)
        if sent is None:
            return
        at, lag, heard, _, _ = sent
        for older in [k for k in self.pings if k < n]:
            del self.pings[older]
        rest = next(iter(self.pings.values()), None)  # a new spell from the oldest left
        self._spell = None if rest is None else (rest[0], rest[3], rest[4])
        took = max(0.0, now - at - (self.lag - lag))
        self.queue_delay = took if self.heard - heard >= BULK else 0.0
        if self.last_bulk <= at:
            self.rtt_sample(took)

    def rtt_sample(self, rtt: float) -> None:
        """RFC 6298's smoothed RTT and RTT variance."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt

    # ---- answers
    @property
    def awaiting_pong(self) -> bool:
        return bool(self.pings)

    def limit(self) -> float:
        """Silence that means dead: ``silence_factor`` heartbeats plus the RTO
        (``SRTT + 4·RTTVAR``, as TCP, at most :data:`MAX_RTO`), so a slow or lossy
        but living link is not cut."""
        rto = min(MAX_RTO, (self.srtt or 0.0) + 4 * self.rttvar)
        return self.silence_factor * self.heartbeat + rto

    def _oldest_ping(self) -> tuple[float, float, float] | None:
        """The oldest unanswered ping: (judged from, lag then, extra wait allowed)."""
        if not self.pings:
            return None
        sent, lag, heard, _, _ = self.pings[min(self.pings)]
        extra = 0.0
        if self.heard - heard >= BULK:
            # data keeps arriving ahead of the pong: it may queue as the last one did
            extra = min(MAX_QUEUE, QUEUE_GROWTH * self.queue_delay)
        if self.last_bulk > sent:  # data was still arriving ahead of the pong
            sent, lag = self.last_bulk, self.lag_at_bulk
        spell = self._spell
        if spell is not None and self.last_ahead > sent and self.events - spell[1] >= AHEAD_MIN:
            # events the window let out before the spell began were still arriving (a
            # link that carries a slow trickle only is judged as before: its upstream
            # may be dead while the trickle flows on)
            judged = min(self.last_ahead, spell[0] + MAX_AHEAD)
            if judged > sent:
                sent, lag = judged, self.lag_at_ahead
        return sent, lag, extra

    def ping_age(self, now: float) -> float:
        """How long the oldest unanswered ping has waited (less this process's lag)."""
        oldest = self._oldest_ping()
        if oldest is None:
            return 0.0
        sent, lag, _ = oldest
        return now - sent - (self.lag - lag)

    def ping_limit(self) -> float:
        """How long the oldest unanswered ping may wait: the limit, plus the queueing
        delay the last pong showed (twice, at most :data:`MAX_QUEUE`) while data
        keeps arriving ahead of it."""
        oldest = self._oldest_ping()
        return self.limit() + (oldest[2] if oldest is not None else 0.0)

    def deadline(self) -> float:
        """When the link will be declared dead if nothing more arrives and this
        process runs on time from now on."""
        limit = self.limit()
        at = self.last_recv + (self.lag - self.lag_at_recv) + limit
        oldest = self._oldest_ping()
        if oldest is not None:
            sent, lag, extra = oldest
            at = min(at, sent + (self.lag - lag) + limit + extra)
        return at

    def dead(self, now: float) -> str | None:
        """Why the link is dead at ``now``, or ``None`` while it lives."""
        limit = self.limit()
        ours = self.lag - self.lag_at_recv  # the quiet time this process ran late
        quiet = now - self.last_recv
        if quiet - ours > limit:
            return f"no frame for {quiet:.2f}s (limit {limit:.2f}s, {ours:.2f}s late)"
        unanswered = self.ping_age(now)
        plimit = self.ping_limit()
        if unanswered > plimit:
            return (
                f"ping unanswered for {unanswered:.2f}s (limit {plimit:.2f}s): "
                "this client's frames are not reaching the server"
            )
        return None

    def first_check(self, now: float) -> float:
        """When to run the first check on a welcomed connection."""
        return now + self.limit() / 3

    def check(self, now: float, due: float, expecting: bool) -> Check:
        """The periodic check, run at ``now`` though due at ``due``. ``expecting``:
        some stream is live (the server sends ``hb`` only then: an idle connection
        is quiet by design, not dead)."""
        late = max(0.0, now - due)
        self.lag += late
        if late > LATE_RUN and not self._deferred:
            # this process was busy (the consumer blocked the loop, or load): frames
            # may be waiting in the socket. They are proof of life: let the reader
            # take them before anything is judged (once: under sustained load the
            # next check judges, lag discounted)
            self._deferred = True
            return Check(wake_at=now)
        self._deferred = False
        limit = self.limit()
        if not expecting:
            self.last_recv, self.lag_at_recv = now, self.lag
            self.pings.clear()
        dead = self.dead(now)
        if dead is not None:
            return Check(wake_at=now, dead=dead)
        ping = None
        if self.ping_every and now - self.last_ping_at >= self.ping_every and expecting:
            ping = self.ping(now)
        return Check(wake_at=now + min(limit / 3, MAX_CHECK_EVERY), ping=ping)


__all__ = [
    "AHEAD_MIN",
    "BULK",
    "MAX_AHEAD",
    "MAX_QUEUE",
    "MAX_RTO",
    "QUEUE_GROWTH",
    "Check",
    "Liveness",
]
