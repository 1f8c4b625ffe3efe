"""What both HTTP stream endpoints share: requests, answers, SSE, cursors, auth.

The HTTP transport (:mod:`unbroken.server.http_agent` for agent streams,
:mod:`unbroken.server.http_streams` for plain Durable Streams byte and JSON streams)
is served on the raw ASGI callables, like the WebSocket path. This module holds the
pieces both use: reading a bounded body, writing an answer with the security and
CORS headers, SSE event encoding, the Durable Streams cursor rule, waiting for a
change or a disconnect, and turning a bearer token into a principal through the
app's ``authenticate`` hook (the same hook a WebSocket ``hello`` goes through).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from ..errors import AuthError, JWKSUnavailable
from ..protocol.frames import Hello
from .agent import Principal, anonymous_principal
from .connection import Authenticate, ConnectInfo
from .shape import call_hook

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

#: Headers a browser page may read from a cross-origin answer.
EXPOSED: Final = (
    b"stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, "
    b"stream-ttl, stream-expires-at, stream-sse-data-encoding, etag, location, "
    b"producer-epoch, producer-seq, producer-expected-seq, producer-received-seq, "
    b"unbroken-epoch, unbroken-status, unbroken-gone, retry-after, x-vercel-ai-ui-message-stream"
)
#: Sent on every answer of the HTTP stream endpoints (Durable Streams §12.7).
SECURITY: Final[list[Header]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"access-control-expose-headers", EXPOSED),
]
#: Methods the stream endpoints answer (a CORS preflight allows these).
STREAM_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
#: Request headers a CORS preflight for a stream URL may always ask for: the
#: protocol's own (a stream client cannot work without them).
STREAM_REQUEST_HEADERS: Final = frozenset(
    {
        "authorization",
        "content-type",
        "if-none-match",
        "last-event-id",
        "stream-closed",
        "stream-seq",
        "stream-ttl",
        "stream-expires-at",
        "producer-id",
        "producer-epoch",
        "producer-seq",
    }
)

#: Durable Streams cursor intervals: 20 s counted from 2024-10-09T00:00:00Z (§10.1).
CURSOR_EPOCH: Final = 1728432000
CURSOR_INTERVAL: Final = 20


def cursor(now: float, client: str | None) -> str:
    """The ``Stream-Cursor`` of a live answer: the current interval number, or,
    when the client's echoed cursor is not behind it, a number strictly above the
    client's (1–3600 s of jitter, in intervals), so a cache never loops."""
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is not None and client.isdigit() and len(client) < 20:
        theirs = int(client)
        if theirs >= current:
            jitter = random.randint(1, 3600)
            return str(theirs + max(1, jitter // CURSOR_INTERVAL))
    return str(current)


class _HttpRefusal(Exception):
    """An HTTP request the endpoint refuses; ``status`` and ``message`` are its answer."""

    def __init__(self, status: int, message: str, headers: list[Header] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass(slots=True)
class Request:
    """One HTTP request to a stream URL."""

    scope: Scope
    receive: Receive
    send: Send
    method: str
    path: str
    cors: list[Header]
    headers: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(
        cls, scope: Scope, receive: Receive, send: Send, path: str, cors: list[Header]
    ) -> Request:
        headers: dict[str, str] = {}
        for k, v in scope.get("headers") or []:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return cls(scope, receive, send, scope.get("method", "GET"), path, cors, headers, query)

    def param(self, name: str) -> str | None:
        """The one value of query parameter ``name`` (``None``: absent); twice is a 400."""
        found = [v for k, v in self.query if k == name]
        if len(found) > 1:
            raise _HttpRefusal(400, f"the {name} parameter is given more than once")
        return found[0] if found else None

    @property
    def client(self) -> str:
        c = self.scope.get("client")
        return f"{c[0]}:{c[1]}" if c else ""

    async def body(self, limit: int) -> bytes:
        """The whole request body; over ``limit`` bytes is a 413."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _HttpRefusal(413, f"the body is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise _HttpRefusal(400, "the client went away before sending its body")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _HttpRefusal(413, f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: list[Header] | None = None,
        content_type: bytes | None = b"text/plain; charset=utf-8",
        *,
        head: bool = False,
    ) -> None:
        """One whole answer, with the security and CORS headers."""
        out: list[Header] = []
        if content_type is not None:
            out.append((b"content-type", content_type))
        if status not in (204, 304):
            out.append((b"content-length", str(len(body)).encode()))
        out += headers or []
        out += SECURITY
        out += self.cors
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        no_body = head or status in (204, 304)
        await self.send({"type": "http.response.body", "body": b"" if no_body else body})

    async def refuse(self, exc: _HttpRefusal) -> None:
        """Answer a refused request, logged with its reason."""
        log.info(
            "http refused client=%s method=%s path=%s status=%d reason=%s",
            self.client,
            self.method,
            self.path[:200],
            exc.status,
            exc.message,
        )
        await self.respond(
            exc.status, exc.message.encode() + b"\n", exc.headers, head=self.method == "HEAD"
        )

    async def wait_disconnect(self) -> None:
        """Return when the client has gone (call once the body has been read)."""
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                return


_BEARER: Final = re.compile(r"^[Bb]earer +([^\s]+)\s*$")


async def authenticate(
    request: Request, hook: Authenticate | None, allow_anonymous: bool
) -> Principal:
    """The principal of an HTTP request: the app's ``authenticate`` hook given a
    ``Hello`` holding the ``Authorization: Bearer`` token (``None`` without one), or
    the anonymous principal when the app allows anonymous access and has no hook.

    Raises :class:`_HttpRefusal` 401 (no or refused credentials) or 503 (the JWKS
    could not be fetched: the token may be fine, retry).
    """
    if hook is None:
        if allow_anonymous:
            return anonymous_principal(None)[0]
        raise _HttpRefusal(401, "authentication required", [(b"www-authenticate", b"Bearer")])
    token: str | None = None
    raw = request.headers.get("authorization")
    if raw is not None:
        m = _BEARER.match(raw)
        if m is None or len(m.group(1)) > 16384:
            raise _HttpRefusal(
                401,
                "malformed Authorization header: use 'Bearer <token>'",
                [(b"www-authenticate", b'Bearer error="invalid_request"')],
            )
        token = m.group(1)
    info = ConnectInfo(
        client=request.client,
        headers=request.headers,
        query=dict(request.query),
        cookies={},
    )
    try:
        principal = await call_hook(hook, Hello(token=token), info)
    except JWKSUnavailable as exc:
        raise _HttpRefusal(503, str(exc), [(b"retry-after", b"1")]) from None
    except AuthError as exc:
        raise _HttpRefusal(
            401,
            f"authentication failed: {exc}",
            [(b"www-authenticate", b'Bearer error="invalid_token"')],
        ) from None
    if principal.expires is not None and principal.expires <= time.time():
        raise _HttpRefusal(
            401,
            "credentials expired; get a new token",
            [(b"www-authenticate", b'Bearer error="invalid_token"')],
        )
    return principal


class Changes:
    """A stream's change signal for one waiting request: :meth:`fire` (a store
    listener) wakes :meth:`wait`.

    A wait is one future, a timer and a callback on the disconnect future: no task
    per wait (an SSE reader waits once per append it is sent)."""

    __slots__ = ("_fired", "_waiter", "dropped")

    def __init__(self) -> None:
        self._fired = False
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = False

    def fire(self, _stream: str = "", head: int = 0) -> None:
        if head < 0:
            self.dropped = True
        self._fired = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, disconnect: asyncio.Future[None], limit: float) -> bool:
        """Wait for a change (True), ``limit`` seconds or the client's disconnect (False;
        check ``disconnect.done()``). Clears the signal."""
        if not self._fired and not disconnect.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            self._waiter = waiter
            timer = loop.call_later(limit, wake)
            disconnect.add_done_callback(wake)
            try:
                await waiter
            finally:
                timer.cancel()
                disconnect.remove_done_callback(wake)
                self._waiter = None
        fired = self._fired
        self._fired = False
        return fired


_LINES: Final = re.compile(r"\r\n|\r|\n")


def sse_event(kind: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE event; every line of ``data`` (any of CR, LF, CRLF ends one) gets
    its own ``data:`` field, so no payload can end an event or start another."""
    parts = [f"event: {kind}\n"]
    for line in _LINES.split(data):
        # a reader strips one leading space: keep a line's own with a second one
        parts.append(f"data: {line}\n" if line[:1] == " " else f"data:{line}\n")
    if event_id is not None:
        parts.append(f"id:{event_id}\n")
    parts.append("\n")
    return "".join(parts).encode()


SSE_HEADERS: Final[list[Header]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
