"""The connection guard: limits on accepted TCP connections, below HTTP.

uvicorn bounds none of these: its keep-alive timeout starts only after a first
response, so a connection that never sends a complete request head (a silent
TCP connection, a slowloris trickling header bytes) is held forever, and its
``limit_concurrency`` is not applied to WebSocket upgrades at all. A thousand
such connections per process reach the descriptor limit; then ``accept()`` fails,
legitimate clients time out, and asyncio logs a traceback per failed accept.

:class:`ConnectionGuard` wraps uvicorn's HTTP protocol (and its WebSocket
protocol, which takes over the socket after the upgrade) and enforces
:class:`ConnectionLimits`:

- **handshake deadline**: each HTTP request head (the WebSocket upgrade request
  included) must be complete within ``handshake_timeout`` seconds of its first
  byte; the first one within that time of the TCP accept. Else the socket is
  closed. Once upgraded, the WebSocket's own rules apply (``hello_timeout``,
  heartbeats, ``send_timeout``).
- **connection cap**: at most ``max_connections`` sockets are served at once
  (default: from the process's descriptor limit, :func:`default_max_connections`).
  One more is refused: its request head is read (for at most a second), answered
  ``503 Service Unavailable`` with ``Retry-After``, and closed. Refusals in progress are
  bounded too; past that bound a socket is closed at once.
- **per-IP cap** (off by default: clients behind one proxy share its address):
  at most ``max_per_ip`` sockets per peer address, else ``429 Too Many
  Requests`` with ``Retry-After``.

Log lines of the guard go through a :class:`~unbroken.server.logfilter.FloodFilter`
of its own, so a flood logs a bounded number of lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from .logfilter import FloodFilter

log = logging.getLogger(__name__)

#: The end of an HTTP/1.x request head: an empty line (h11 accepts bare LF too).
_HEAD_END = re.compile(rb"\n\r?\n")
#: Descriptors left to the rest of the process (log files, Redis, the listener).
_RESERVE = 64


def descriptor_limit() -> int:
    """The process's soft descriptor limit (``ulimit -n``)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one (as Go's runtime does at
    start); returns (before, after). A server process, not a library, calls this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, descriptor_limit()


def max_refusing(max_connections: int) -> int:
    """Refusals answered at once (each reads a request head for at most a second);
    past it, an extra socket is closed at once."""
    return min(256, max(16, max_connections // 64))


def default_max_connections(nofile: int | None = None) -> int:
    """The descriptor limit (``ulimit -n``) less what the rest needs: one batch of
    accepts (see :func:`accept_backlog`: 2048, or a quarter of the limit), the
    refusals in progress, and 64 for the process's own files. 1024 descriptors:
    688; 20,000: 17,632; 65,536: 63,168."""
    if nofile is None:
        nofile = descriptor_limit()
    batch = min(2048, nofile // 4)
    return max(1, nofile - batch - max_refusing(nofile) - _RESERVE)


def accept_backlog(wanted: int, max_connections: int, nofile: int | None = None) -> int:
    """The listen backlog to use: at most ``wanted``, and small enough that one
    batch of accepts (asyncio accepts up to ``backlog`` sockets per wake-up,
    before any of them is refused) fits in the descriptors the cap leaves free,
    so ``accept()`` does not fail with EMFILE (asyncio then stops accepting for a
    second and logs a traceback per try). At least 16."""
    if nofile is None:
        nofile = descriptor_limit()
    free = nofile - max_connections - max_refusing(max_connections) - _RESERVE
    return max(16, min(wanted, free))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Limits on accepted connections (see the module doc and docs/reference/security.md).

    ``max_connections`` (``None``: :func:`default_max_connections`) caps the
    sockets served at once; ``max_per_ip`` (``None``: no cap) those of one peer
    address; ``handshake_timeout`` is the time to send a complete HTTP request
    head; ``retry_after`` (seconds) is sent with a refusal.
    """

    max_connections: int | None = None
    max_per_ip: int | None = None
    handshake_timeout: float = 10.0
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_per_ip is not None and self.max_per_ip < 1:
            raise ValueError("max_per_ip must be at least 1")
        if self.handshake_timeout <= 0 or self.retry_after < 0:
            raise ValueError("handshake_timeout must be positive and retry_after not negative")

    def resolved_max_connections(self) -> int:
        """``max_connections``, or the default from the descriptor limit."""
        if self.max_connections is not None:
            return self.max_connections
        return default_max_connections()


def _refusal(status: int, phrase: str, retry_after: float, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Retry-After: {max(0, round(retry_after))}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


class ConnectionGuard:
    """Counts and limits the sockets of one server; see the module doc.

    Build one per server and pass :meth:`http_protocol` and :meth:`ws_protocol`
    to ``uvicorn.Config(http=…, ws=…)`` (:func:`unbroken.server.serving.uvicorn_config`
    does it).
    """

    def __init__(self, limits: ConnectionLimits | None = None, *, log_burst: int = 10) -> None:
        self.limits = limits if limits is not None else ConnectionLimits()
        self.max_connections = self.limits.resolved_max_connections()
        #: refusals in progress (reading the head to answer it) at most
        self.max_refusing = max_refusing(self.max_connections)
        self.open = 0  # sockets admitted and not yet closed
        self.refusing = 0
        self.per_ip: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()  # accepted, refused_full, refused_ip, …
        self._ip_of: dict[asyncio.BaseTransport, str] = {}
        self._flood = FloodFilter(burst=log_burst, interval=10.0)

    def _log(self, level: int, template: str, *args: object) -> None:
        """Log through the guard's own flood limiter (a flood of refusals or
        timeouts logs ``log_burst`` lines per kind per 10 s, then a count)."""
        if not log.isEnabledFor(level):
            return
        ok, note = self._flood.admit(log.name, level, template)
        if ok:
            log.log(level, template + note.replace("%", "%%"), *args)

    # ------------------------------------------------------------ uvicorn glue
    def http_protocol(self, inner: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """A protocol class for ``uvicorn.Config(http=…)`` that guards ``inner``."""
        return type("GuardedHTTP", (_GuardedHTTP,), {"guard": self, "inner_class": inner})

    def ws_protocol(self, inner: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """A protocol class for ``uvicorn.Config(ws=…)``: ``inner`` that releases the
        socket's place when it closes (the HTTP protocol hands the socket over)."""
        return type("GuardedWS", (_ReleaseOnLost, inner), {"guard": self})

    def stats(self) -> dict[str, int]:
        """Open sockets, refusals in progress, and counts since start."""
        return {
            "open": self.open,
            "max_connections": self.max_connections,
            "refusing": self.refusing,
            **self.counts,
        }

    # ------------------------------------------------------------ admission
    def _admit(self, transport: asyncio.BaseTransport) -> tuple[int, str] | None:
        """Take a place for ``transport``, or say why not: (HTTP status, reason)."""
        ip = _peer_ip(transport)
        if self.open >= self.max_connections:
            self.counts["refused_full"] += 1
            return 503, "full"
        cap = self.limits.max_per_ip
        if cap is not None and self.per_ip[ip] >= cap:
            self.counts["refused_ip"] += 1
            return 429, "per_ip"
        self.open += 1
        self.per_ip[ip] += 1
        self._ip_of[transport] = ip
        self.counts["accepted"] += 1
        return None

    def _release(self, transport: asyncio.BaseTransport) -> None:
        ip = self._ip_of.pop(transport, None)
        if ip is None:
            return
        self.open -= 1
        n = self.per_ip[ip] - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            del self.per_ip[ip]


def _peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


class _ReleaseOnLost(asyncio.Protocol):
    """Mixin for the WebSocket protocol: the socket's place is released when it closes."""

    guard: ClassVar[ConnectionGuard]
    transport: Any

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self.transport
        try:
            super().connection_lost(exc)
        finally:
            self.guard._release(transport)


class _GuardedHTTP(asyncio.Protocol):
    """uvicorn's HTTP protocol behind the guard (built by :meth:`ConnectionGuard.http_protocol`)."""

    guard: ClassVar[ConnectionGuard]
    inner_class: ClassVar[type[asyncio.Protocol]]

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs  # config, server_state, app_state, _loop: for the inner protocol
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, to find a head end split across reads
        self._in_head = True
        self._refusal: bytes | None = None
        self._since = 0.0

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # not an isinstance check: uvloop's TCPTransport is not an asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        guard = self.guard
        self.transport = transport
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        verdict = guard._admit(transport)
        if verdict is not None:
            self._refuse(transport, *verdict)
            return
        self.inner = self.inner_class(**self._kwargs)
        self.inner.connection_made(transport)
        self._timer = loop.call_later(guard.limits.handshake_timeout, self._expire)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:  # refusing: wait for the end of the head, then answer
            if self._refusal is not None and self._head_ends(data):
                self._answer_refusal()
            return
        if self._in_head:
            if self._head_ends(data):
                self._in_head = False
                self._cancel_timer()
        elif self._between_requests():  # keep-alive: this byte starts the next head
            self._tail = b""
            self._in_head = not self._head_ends(data)
            if self._in_head:
                self._since = asyncio.get_running_loop().time()
                self._timer = asyncio.get_running_loop().call_later(
                    self.guard.limits.handshake_timeout, self._expire
                )
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            if self._refusal is not None:
                self._answer_refusal()
            return None
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.inner is None:
            if self._refusal is not None:
                self.guard.refusing -= 1
                self._refusal = None
            return
        try:
            self.inner.connection_lost(exc)
        finally:
            if self.transport is not None:
                self.guard._release(self.transport)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ------------------------------------------------------------ deadline
    def _head_ends(self, data: bytes) -> bool:
        seen = self._tail + data
        self._tail = seen[-3:]
        return _HEAD_END.search(seen) is not None

    def _between_requests(self) -> bool:
        """The HTTP protocol has answered the last request (so a new byte begins a
        head). h11 and httptools keep the request in ``cycle``; an unknown protocol
        is never between requests (only the first head is timed)."""
        cycle = getattr(self.inner, "cycle", False)
        if cycle is False:
            return False
        return cycle is None or bool(getattr(cycle, "response_complete", False))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        t = self.transport
        if t is None or t.is_closing() or t.get_protocol() is not self or not self._in_head:
            return
        guard = self.guard
        guard.counts["handshake_timeouts"] += 1
        waited = asyncio.get_running_loop().time() - self._since
        guard._log(
            logging.WARNING,
            "handshake timeout client=%s after=%.1fs (no complete request head); closed",
            _peer_ip(t),
            waited,
        )
        t.close()

    # ------------------------------------------------------------ refusal
    def _refuse(self, transport: asyncio.Transport, status: int, why: str) -> None:
        guard = self.guard
        limits = guard.limits
        if why == "full":
            guard._log(
                logging.WARNING,
                "connection refused client=%s reason=at capacity open=%d max_connections=%d",
                _peer_ip(transport),
                guard.open,
                guard.max_connections,
            )
        else:
            guard._log(
                logging.WARNING,
                "connection refused client=%s reason=per-IP limit max_per_ip=%d",
                _peer_ip(transport),
                limits.max_per_ip,
            )
        if guard.refusing >= guard.max_refusing:  # no room even to answer: close now
            guard.counts["refused_unanswered"] += 1
            transport.abort()
            return
        guard.refusing += 1
        text = (
            "server at capacity; retry later\n"
            if status == 503
            else "too many connections from this address; retry later\n"
        )
        phrase = "Service Unavailable" if status == 503 else "Too Many Requests"
        self._refusal = _refusal(status, phrase, limits.retry_after, text)
        # answered at the end of the head (so the peer reads it before our FIN),
        # or after at most a second
        self._timer = asyncio.get_running_loop().call_later(
            min(1.0, limits.handshake_timeout), self._answer_refusal
        )

    def _answer_refusal(self) -> None:
        self._cancel_timer()
        t, answer = self.transport, self._refusal
        if t is None or answer is None or t.is_closing():
            return
        t.write(answer)
        t.close()
