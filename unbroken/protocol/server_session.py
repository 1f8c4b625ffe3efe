"""The server's session state machine (sans-I/O): what a client frame means.

``AWAIT_HELLO → READY → CLOSED``. Any frame before ``hello`` closes with
4001; a second ``hello`` closes with 4000. An ``ack`` is never a reason to close:
late or repeated acks for a stream released here (its end was sent) are ignored,
whatever their number, and an ack for a stream this connection never had is
answered with an ``error`` (:meth:`ServerSession.ack` returns ``None``), so it
cannot take the connection's other streams down. Time is always an argument.
"""

from __future__ import annotations

from collections import OrderedDict
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
    ) -> None:
        self.state = ServerState.AWAIT_HELLO
        self.max_frame = max_frame
        #: the limit before ``hello`` is accepted (a peer not yet authenticated)
        self.max_hello_frame = max_frame if max_hello_frame is None else max_hello_frame
        self.max_streams = max_streams
        self.streams: dict[str, int] = {}  # attached stream -> highest ack
        #: streams no longer attached (their end was sent, or retention dropped them)
        #: whose acks may still be on their way: legal, and ignored. Bounded (oldest
        #: forgotten first), so a client that never acks cannot grow the session.
        self.released: OrderedDict[str, None] = OrderedDict()
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
            kind = peek_type(data, self.max_hello_frame)
            if kind != "hello":
                raise ProtocolError(
                    f"first frame must be hello, got '{excerpt(kind, 40)}'",
                    CloseCode.AUTH_REQUIRED,
                )
            frame = decode_client(data, self.max_hello_frame)
            assert isinstance(frame, Hello)
            self.hello = frame
            self.state = ServerState.READY
            return frame
        frame = decode_client(data, self.max_frame)
        if isinstance(frame, Hello):
            raise ProtocolError("hello sent twice", CloseCode.BAD_FRAME)
        return frame

    def admit_start(self, now: float) -> float:
        """0 when a start may proceed now, else seconds to wait (rate or stream limit)."""
        if len(self.streams) >= self.max_streams:
            return 1.0
        return self._starts.take(now)

    def attach(self, stream: str, acked: int = 0) -> None:
        """A stream was started or resumed on this connection."""
        self.streams.setdefault(stream, acked)
        self.released.pop(stream, None)

    def detach(self, stream: str) -> None:
        """The stream is done with on this connection (its end was acked)."""
        self.streams.pop(stream, None)
        self.released.pop(stream, None)

    def release(self, stream: str) -> None:
        """The stream no longer counts as attached (its end was sent, or it is gone),
        but acks for it may still arrive: they stay legal until acked or forgotten."""
        if self.streams.pop(stream, None) is None and stream not in self.released:
            return
        released = self.released
        released[stream] = None
        while len(released) > self.max_released:
            released.popitem(last=False)

    def ack(self, stream: str, seq: int) -> int | None:
        """Record a cumulative ack; returns the highest ack so far, or ``None`` for a
        stream neither attached nor released here (answer it with an error).

        Acks for a released stream are legal however many arrive (the client may
        have several in flight when the end is sent): they change nothing, and the
        entry stays until the bound on :attr:`released` forgets it."""
        best = self.streams.get(stream)
        if best is None:
            return seq if stream in self.released else None
        if seq > best:
            self.streams[stream] = best = seq
        return best

    def close(self) -> None:
        self.state = ServerState.CLOSED
        self.streams.clear()
        self.released.clear()
