"""ASGI glue: the app as a plain ASGI callable, its one WebSocket transport, ``/healthz``.

Every WebSocket handshake is judged by the app's origin policy
(:mod:`unbroken.server.policy`) before it is accepted: a refused one is answered HTTP
403 and nothing of the app runs. Every HTTP answer carries the CORS headers the same
policy gives (``Vary: Origin``, an allowed ``Origin`` echoed), preflights included.

:meth:`Unbroken.asgi` returns an :class:`ASGIApp` (mount it anywhere, or serve it
alone: it runs the app's lifespan). Its WebSocket path is served straight on the
raw ASGI ``receive``/``send`` callables, with no framework in between: a
connection is long-lived, and every frame of every token goes through ``send``,
so any layer in between would cost on every token. The FastAPI router form
(:mod:`unbroken.server.fastapi`) goes through FastAPI for its dependencies, then
hands the WebSocket's ``receive``/``send`` to the same :func:`serve_websocket`:
one transport (:class:`ASGITransport`) for every path.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol
from urllib.parse import parse_qsl

import msgspec

from ..protocol import versions
from ..protocol.codes import CloseCode, ErrorCode, close_reason
from ..protocol.frames import Error, encode, excerpt
from ..protocol.frames_v2 import encode_server as encode_server_v2
from ..store.base import StreamLog
from .agent import Principal
from .config import ServerConfig
from .connection import PENDING, Authenticate, ConnectInfo, Connection, Pending
from .guard import ConnectionGuard
from .http_common import (
    STREAM_METHODS,
    STREAM_REQUEST_HEADERS,
    Request,
    _HttpRefusal,
    authenticate,
)
from .hub import Hub
from .policy import LivePolicy, OriginPolicy
from .websocket import (
    MAX_SIZE_EXTENSION,
    RECEIVE_EXTENSION,
    RUN_EXTENSION,
    SEND_BINARY_EXTENSION,
    SEND_TEXT_EXTENSION,
)

if TYPE_CHECKING:
    from .http_agent import AgentStreams
    from .http_streams import ByteStreams
    from .ui_streams import UIStreams

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]


class Served(Protocol):
    """What the ASGI glue needs of an app (:class:`~unbroken.server.app.Unbroken`)."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def store(self) -> StreamLog: ...
    @property
    def authenticate(self) -> Authenticate | None: ...
    @property
    def connections(self) -> set[Connection]: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def health_detail(self) -> bool: ...
    @property
    def guard(self) -> ConnectionGuard | None: ...
    @property
    def policy(self) -> LivePolicy: ...
    @property
    def metrics_path(self) -> str | None: ...
    def metrics_app(self) -> ASGI: ...
    def lifespan(self, _app: object = None) -> AbstractAsyncContextManager[None]: ...


class _SizeLimit:
    """Raises the WebSocket layer's message limit once the ``hello`` is handled.

    The layer (:mod:`unbroken.server.websocket`) starts a connection at
    ``max_hello_frame``; the connection asks for its second frame only after it
    accepted the first (the ``hello``, authentication included), so that is when
    ``max_client_frame`` applies. Without that layer (another ASGI server) this
    does nothing: the frame decoder still checks sizes.
    """

    __slots__ = ("_after_hello", "_set")

    def __init__(self, scope: Scope, after_hello: int) -> None:
        self._set = (scope.get("extensions") or {}).get(MAX_SIZE_EXTENSION)
        self._after_hello = after_hello

    def next_frame(self) -> None:
        if self._set is not None:
            self._set(self._after_hello)
            self._set = None


#: the extensions of unbroken's WebSocket layer (what :class:`ASGITransport` takes)
_OWN_EXTENSIONS: Final = (
    MAX_SIZE_EXTENSION,
    SEND_TEXT_EXTENSION,
    SEND_BINARY_EXTENSION,
    RECEIVE_EXTENSION,
    RUN_EXTENSION,
)


class ASGITransport:
    """:class:`~unbroken.server.connection.Transport` over ASGI ``receive``/``send``
    (the server's raw callables, or a Starlette/FastAPI ``WebSocket``'s methods)."""

    __slots__ = (
        "_asking",
        "_frames",
        "_gone",
        "_limit",
        "_receive",
        "_send",
        "_send_now",
        "_take",
        "_wait",
        "binary",
        "disconnect_code",
        "polls",
        "send_nowait",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send,
        limit: _SizeLimit | None = None,
        scope: Scope | None = None,
        binary: bool = False,
    ) -> None:
        #: frames go as binary messages (protocol v2), else as text
        self.binary = binary
        self._receive = receive
        self._send = send
        #: the WebSocket layer's direct text send, when ``send`` is that layer's own
        #: (:data:`~unbroken.server.websocket.SEND_TEXT_EXTENSION`; not through a wrapper)
        self._send_now: Callable[[bytes], bool] | None = None
        kind = SEND_BINARY_EXTENSION if binary else SEND_TEXT_EXTENSION
        extensions = (scope or {}).get("extensions") or {}
        now = extensions.get(kind)
        if now is not None and getattr(now, "__self__", None) is getattr(send, "__self__", send):
            self._send_now = now
        #: the WebSocket layer's receive without a coroutine, when ``receive`` is that
        #: layer's own (:data:`~unbroken.server.websocket.RECEIVE_EXTENSION`)
        self._take: Callable[[], Any] | None = None
        self._wait: Callable[[], Awaitable[None]] | None = None
        direct = extensions.get(RECEIVE_EXTENSION)
        if direct is not None and getattr(direct[0], "__self__", None) is getattr(
            receive, "__self__", receive
        ):
            self._take, self._wait = direct
        #: :meth:`receive_nowait` and :meth:`arrival` may be used (the layer's own
        #: receive): a connection waiting for a message then holds no coroutine here
        self.polls = self._take is not None
        self._asking = False
        #: the WebSocket layer's direct send as is (``False``: nothing sent, use
        #: :meth:`send`): the connection calls it without a coroutine per frame
        self.send_nowait: Callable[[bytes], bool] | None = self._send_now
        self._gone = False
        self._limit = limit
        self._frames = 0
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._take is not None:
            data = self.receive_nowait()
            while data is PENDING:
                assert self._wait is not None
                await self._wait()
                data = self.receive_nowait()
            return data
        if self._gone:
            return None
        self._asked()
        return self._message(await self._receive())

    def receive_nowait(self) -> str | bytes | Pending | None:
        """:meth:`receive` without a coroutine, where :attr:`polls`: the next message,
        ``None`` once the peer is gone, or :data:`~unbroken.server.connection.PENDING`
        (nothing yet: await :meth:`arrival`, then ask again)."""
        if self._gone:
            return None
        if not self._asking:  # a message asked for (not each time it is looked for)
            self._asking = True
            self._asked()
        assert self._take is not None
        msg = self._take()
        if msg is None:
            return PENDING
        self._asking = False
        return self._message(msg)

    def arrival(self) -> Awaitable[None]:
        """A future done when a message is queued (:meth:`receive_nowait`)."""
        assert self._wait is not None
        return self._wait()

    def _asked(self) -> None:
        if self._limit is not None:
            self._frames += 1
            if self._frames == 2:  # the hello was accepted
                self._limit.next_frame()
                self._limit = None

    def _message(self, msg: Message) -> str | bytes | None:
        if msg["type"] == "websocket.receive":
            text = msg.get("text")
            if text is not None:
                return str(text)
            data = msg.get("bytes")
            return bytes(data) if data is not None else b""
        self._gone = True
        if msg["type"] == "websocket.disconnect":
            self.disconnect_code = msg.get("code", 1005)
        return None

    async def send(self, data: bytes) -> None:
        now = self._send_now
        if now is not None and now(data):
            return
        if self.binary:
            await self._send({"type": "websocket.send", "bytes": data})
        else:
            await self._send({"type": "websocket.send", "text": data.decode()})

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str = "") -> None:
        self._gone = True
        with contextlib.suppress(Exception):
            await self._send(
                {"type": "websocket.close", "code": code, "reason": close_reason(reason)}
            )


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def _header(scope: Scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower case), None if absent; several of them
    are joined with ``,`` (which no Origin or Host contains: such a request is
    then refused as malformed)."""
    found: list[str] = [
        v.decode("latin-1") for k, v in scope.get("headers") or [] if k.lower() == name
    ]
    if not found:
        return None
    return found[0] if len(found) == 1 else ",".join(found)


async def _refuse_handshake(scope: Scope, send: Send, reason: str, status: int = 403) -> None:
    """Refuse a WebSocket handshake with HTTP ``status`` (before accept): with a short
    body saying why where the server supports ASGI's WebSocket denial response, else by
    ``websocket.close``, which the ASGI spec has the server answer with a 403."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = f"{'forbidden' if status == 403 else 'not found'}: {reason}\n".encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # 1008 (policy violation): never sent as a frame, the server answers 403
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


def connect_info(scope: Scope, principal: Principal | None = None) -> ConnectInfo:
    """What an ``authenticate`` hook may look at before ``hello``."""
    headers: dict[str, str] = {}
    for k, v in scope.get("headers") or []:
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return ConnectInfo(
        client=_client(scope),
        headers=headers,
        query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        cookies=parse_cookies(headers.get("cookie", "")),
        principal=principal,
    )


def parse_cookies(header: str) -> dict[str, str]:
    """A ``Cookie`` header's pairs, read as browsers write them (not RFC 6265's
    strict grammar): ``;``-separated ``name=value``, a part without ``=`` is a value
    with an empty name, a double-quoted value loses its quotes. (Starlette's parser,
    which this replaces, was the only import of Starlette in a serving process.)"""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, eq, value = part.partition("=")
        if not eq:
            name, value = "", name
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name or value:
            cookies[name] = value
    return cookies


#: ``retry_after_ms`` of a session refused because the server is full.
FULL_RETRY_AFTER_MS = 1000


def _refusal(
    app: Served, offered: list[str], chosen: str | None, client: str
) -> tuple[int, str] | None:
    """Why this connection must be closed right after the handshake, if it must."""
    if chosen is None:
        spoken = app.config.protocols
        log.warning(
            "unsupported subprotocol client=%s offered=%s spoken=%s code=%d",
            client,
            excerpt(repr(offered), 200),  # the peer's header: quoted and bounded
            ",".join(spoken),
            CloseCode.UNSUPPORTED_VERSION,
        )
        return CloseCode.UNSUPPORTED_VERSION, versions.refusal_reason(spoken)
    if not app.hub.accepting:
        log.info("refused while shutting down client=%s code=%d", client, CloseCode.SERVICE_RESTART)
        return CloseCode.SERVICE_RESTART, "server restarting"
    if len(app.connections) >= app.max_connections:
        log.warning(
            "session refused client=%s reason=server full sessions=%d max_connections=%d code=%d",
            client,
            len(app.connections),
            app.max_connections,
            CloseCode.OVERLOADED,
        )
        return CloseCode.OVERLOADED, "server full"
    return None


async def _refuse(transport: ASGITransport, code: int) -> None:
    """Before a 4008 close: an ``error overloaded`` frame with ``retry_after_ms``
    (a close frame has no room for it), in the connection's version."""
    if code == CloseCode.OVERLOADED:
        frame = Error(
            code=ErrorCode.OVERLOADED,
            message="server full",
            retry_after_ms=FULL_RETRY_AFTER_MS,
        )
        data = encode_server_v2(frame) if transport.binary else encode(frame)
        with contextlib.suppress(Exception):
            await transport.send(data)


async def serve_websocket(
    app: Served, scope: Scope, receive: Receive, send: Send, principal: Principal | None = None
) -> None:
    """Negotiate the subprotocol, accept, and serve one WebSocket connection.

    ``principal`` is set when a framework dependency authenticated the peer."""
    connection = await open_websocket(app, scope, receive, send, principal)
    if connection is not None:
        await connection.run()


async def open_websocket(
    app: Served, scope: Scope, receive: Receive, send: Send, principal: Principal | None = None
) -> Connection | None:
    """:func:`serve_websocket` up to the connection it serves (``None``: refused).

    The caller runs it: this frame and what it held (the handshake's offers and
    answer) are not kept for the connection's life (per-connection memory)."""
    if (await receive())["type"] != "websocket.connect":
        return None
    # the origin policy first: a refused page learns nothing else (no subprotocol,
    # no close code), and nothing of the app runs for it
    decision = app.policy.check_handshake(
        _header(scope, b"origin"), _header(scope, b"host"), _client(scope)
    )
    if not decision.allowed:
        app.hub.observer.refused("origin", _client(scope), detail=decision.reason)
        await _refuse_handshake(scope, send, decision.reason)
        return None
    offered = [str(p) for p in scope.get("subprotocols") or []]
    chosen = versions.negotiate(offered, app.config.protocols)
    accept: Message = {"type": "websocket.accept"}
    if offered:
        # no common version: echo the client's first offer, so that it sees the 4005
        # close and its reason (a browser fails a handshake whose answer names none of
        # the subprotocols it offered: it would see a dropped connection, retried)
        accept["subprotocol"] = versions.subprotocol(chosen) if chosen is not None else offered[0]
    await send(accept)
    transport = ASGITransport(
        receive,
        send,
        _SizeLimit(scope, app.config.max_client_frame),
        scope=scope,
        binary=chosen == "v2",
    )
    refusal = _refusal(app, offered, chosen, _client(scope))
    if refusal is not None:
        app.hub.observer.refused_close(refusal[0], _client(scope))
        await _refuse(transport, refusal[0])
        await transport.close(*refusal)
        return None
    return Connection(
        app.config,
        app.hub,
        app.store,
        transport,
        connect_info(scope, principal),
        authenticate=app.authenticate,
        registry=app.connections,
        version=chosen or "v1",
    )


def route_path(scope: Scope) -> str:
    """The path below where the app is mounted (as Starlette computes it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root) :]
    return path


def health(app: Served) -> tuple[int, dict[str, Any]]:
    """``/healthz``: 200 ``{"ok": true}`` while accepting runs, else 503."""
    body: dict[str, Any] = {"ok": app.hub.accepting}
    if app.health_detail:  # opt-in: /healthz answers anyone
        body["epoch"] = app.store.epoch
        body["runs"] = len(app.hub.runs)
        body["connections"] = len(app.connections)
        if app.guard is not None:
            body["sockets"] = app.guard.stats()
    return (200 if app.hub.accepting else 503), body


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, *extra: Any, head: bool = False
) -> None:
    """One whole HTTP response (``head``: its headers only, as for ``HEAD``)."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": b"" if head else body})


#: Where the HTTP stream endpoints live (below the app's mount point).
AGENT_PREFIX = "/v1/agent/"
BYTE_PREFIX = "/v1/stream/"
UI_PREFIX = "/v1/ui/"
STREAM_PREFIXES = (AGENT_PREFIX, BYTE_PREFIX, UI_PREFIX)

#: The methods the app's HTTP endpoints answer (CORS preflights allow these).
CORS_METHODS = ("GET", "HEAD", "OPTIONS")
_ALLOW = (b"allow", ", ".join(CORS_METHODS).encode())
_VARY = (b"vary", b"Origin")


def cors_headers(policy: OriginPolicy, origin: str | None, host: str | None) -> list[Any]:
    """The CORS response headers for a request from ``origin``: the origin echoed
    in ``Access-Control-Allow-Origin`` when the policy allows it (with
    ``Access-Control-Allow-Credentials`` if set), and always ``Vary: Origin`` (the
    answer depends on it, so a cache must not serve one origin's to another)."""
    headers: list[Any] = [_VARY]
    if origin is not None and policy.check(origin, host).allowed:
        headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
        if policy.cors_allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
    return headers


class ASGIApp:
    """An unbroken app as an ASGI application: the WebSocket at ``path``, ``GET
    /healthz``, and the lifespan (startup opens the app for runs, shutdown drains
    them). Anything else is 404 (HTTP) or closed before the handshake (WebSocket).
    ``OPTIONS`` is answered (204, or a CORS preflight's answer); every HTTP answer
    carries the origin policy's CORS headers (:func:`cors_headers`)."""

    __slots__ = (
        "_agent_streams",
        "_byte_streams",
        "_inflight",
        "_long_poll_timeout",
        "_ui_streams",
        "app",
        "max_http_streams",
        "path",
    )
    #: a connection's serving may be handed to unbroken's WebSocket layer, which
    #: awaits it once this app's call returned (:data:`~unbroken.server.websocket.RUN_EXTENSION`)
    unbroken_hand_off: ClassVar[bool] = True

    def __init__(
        self,
        app: Served,
        path: str = "/ws",
        *,
        long_poll_timeout: float = 15.0,
        max_http_streams: int | None = None,
    ) -> None:
        self.app = app
        self.path = path
        # the HTTP stream handlers (and their modules) are made on their first request:
        # a server whose clients only use the WebSocket does not hold them (issue 21)
        self._long_poll_timeout = long_poll_timeout
        self._agent_streams: AgentStreams | None = None
        self._byte_streams: ByteStreams | None = None
        self._ui_streams: UIStreams | None = None
        #: HTTP stream requests served at once at most (SSE and long-polls included);
        #: beyond, 429 with Retry-After. ``None``: the app's ``max_connections``.
        self.max_http_streams = max_http_streams
        self._inflight = 0

    def _accepting(self) -> bool:
        return self.app.hub.accepting

    @property
    def agent_streams(self) -> AgentStreams:
        """``/v1/agent/{stream}``: agent streams over HTTP (read only)."""
        if self._agent_streams is None:
            from .http_agent import AgentStreams

            self._agent_streams = AgentStreams(
                self.app.store, long_poll_timeout=self._long_poll_timeout, accepting=self._accepting
            )
        return self._agent_streams

    @property
    def byte_streams(self) -> ByteStreams:
        """``/v1/stream/{path}``: plain Durable Streams byte and JSON streams."""
        if self._byte_streams is None:
            from .http_streams import ByteStreams

            self._byte_streams = ByteStreams(
                long_poll_timeout=self._long_poll_timeout, accepting=self._accepting
            )
        return self._byte_streams

    @property
    def ui_streams(self) -> UIStreams:
        """``/v1/ui/{ai-sdk|ag-ui}/{stream}``: agent answers in the UI protocols (read only)."""
        if self._ui_streams is None:
            from .ui_streams import UIStreams

            self._ui_streams = UIStreams(self.app.store, accepting=self._accepting)
        return self._ui_streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self.app.metrics_path == route_path(scope):
            await self.app.metrics_app()(scope, receive, send)
        elif kind == "websocket":
            if route_path(scope) == self.path:
                # opened here and run here: no serve_websocket frame held meanwhile
                connection = await open_websocket(self.app, scope, receive, send)
                if connection is not None:
                    # the handshake's headers are in the connection's ConnectInfo (what
                    # an authenticate hook reads): the scope's list of them, held by
                    # every frame under this one for the connection's life, goes
                    # (~1 KB a connection, issue 21)
                    scope["headers"] = ()
                    # so do the WebSocket layer's calls: the transport keeps those it
                    # uses (the other version's send and, after the hello, the size
                    # limit's go: ~0.2 KB a connection)
                    hand_off = None
                    extensions = scope.get("extensions")
                    if extensions:
                        hand_off = extensions.get(RUN_EXTENSION)
                        for name in _OWN_EXTENSIONS:
                            extensions.pop(name, None)
                    if hand_off is not None:
                        # the layer runs it once this call returned: this frame (and
                        # uvicorn's proxy-headers one above it) are not held for the
                        # connection's life (~0.6 KB a connection, issue 21)
                        hand_off(connection.run)
                    else:
                        await connection.run()
            else:
                # a wrong URL: 404 tells the client to check the path (a plain close
                # is answered 403, as if credentials were refused)
                await _refuse_handshake(
                    scope,
                    send,
                    f"no unbroken WebSocket here; it is at {scope.get('root_path', '')}{self.path}",
                    404,
                )
        elif kind == "http":
            path = route_path(scope)
            if path.startswith(STREAM_PREFIXES):
                await self._streams(scope, receive, send, path)
            else:
                await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        policy = self.app.policy.current  # one snapshot for the whole request
        origin = _header(scope, b"origin")
        method = scope.get("method", "GET")
        if method == "OPTIONS" and origin is not None:
            wanted = _header(scope, b"access-control-request-method")
            if wanted is not None:
                await self._preflight(scope, send, policy, origin, wanted)
                return
        cors = cors_headers(policy, origin, _header(scope, b"host"))
        if route_path(scope) != "/healthz":
            await _respond(send, 404, b"Not Found", b"text/plain; charset=utf-8", *cors)
            return
        if method == "OPTIONS":
            await _respond(send, 204, b"", b"text/plain; charset=utf-8", _ALLOW, *cors)
            return
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"Method Not Allowed", b"text/plain; charset=utf-8", _ALLOW, *cors
            )
            return
        status, body = health(self.app)
        data = msgspec.json.encode(body)
        await _respond(send, status, data, b"application/json", *cors, head=method == "HEAD")

    async def _streams(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """The HTTP stream endpoints (:mod:`unbroken.server.http_agent`,
        :mod:`unbroken.server.http_streams`): the origin policy first (a page of a
        refused origin gets 403 and nothing runs), then authentication, then the
        stream. Any error is an HTTP answer; nothing here can take the server down."""
        policy = self.app.policy.current
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        method = scope.get("method", "GET")
        if method == "OPTIONS" and origin is not None:
            wanted = _header(scope, b"access-control-request-method")
            if wanted is not None:
                await self._preflight(scope, send, policy, origin, wanted, streams=True)
                return
        request = Request.of(scope, receive, send, path, cors_headers(policy, origin, host))
        try:
            if origin is not None:
                decision = self.app.policy.check_handshake(origin, host, request.client)
                if not decision.allowed:
                    self.app.hub.observer.refused("origin", request.client, detail="http")
                    raise _HttpRefusal(403, f"forbidden: {decision.reason}")
            if method == "OPTIONS":
                allow = ", ".join(STREAM_METHODS).encode()
                await request.respond(204, b"", [(b"allow", allow)], None)
                return
            if not self.app.hub.accepting:
                raise _HttpRefusal(503, "server restarting", [(b"retry-after", b"1")])
            cap = self.max_http_streams or self.app.max_connections
            if self._inflight >= cap:
                log.warning(
                    "http stream refused client=%s reason=server full inflight=%d max=%d",
                    request.client,
                    self._inflight,
                    cap,
                )
                self.app.hub.observer.refused("overloaded", request.client, detail="http")
                raise _HttpRefusal(429, "server full", [(b"retry-after", b"1")])
            self._inflight += 1
            try:
                principal = await authenticate(
                    request, self.app.authenticate, self.app.config.allow_anonymous
                )
                if path.startswith(AGENT_PREFIX):
                    stream = path[len(AGENT_PREFIX) :]
                    if not stream or "/" in stream:
                        raise _HttpRefusal(404, "no such stream")
                    await self.agent_streams.handle(request, stream, principal)
                elif path.startswith(UI_PREFIX):
                    await self.ui_streams.handle(request, path[len(UI_PREFIX) :], principal)
                else:
                    await self.byte_streams.handle(request, path[len(BYTE_PREFIX) :], principal)
            finally:
                self._inflight -= 1
        except _HttpRefusal as exc:
            await request.refuse(exc)
        except Exception:
            log.exception(
                "http stream request failed client=%s path=%s", request.client, path[:200]
            )
            with contextlib.suppress(Exception):
                await request.respond(500, b"internal error\n")

    async def _preflight(
        self,
        scope: Scope,
        send: Send,
        policy: OriginPolicy,
        origin: str,
        wanted: str,
        *,
        streams: bool = False,
    ) -> None:
        """A CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``):
        204 with the allowed method and headers, or 400 saying what is refused."""
        decision = policy.check(origin, _header(scope, b"host"))
        asked = [
            h.strip().lower()
            for h in (_header(scope, b"access-control-request-headers") or "").split(",")
            if h.strip()
        ]
        methods = STREAM_METHODS if streams else CORS_METHODS
        allowed_headers = set(policy.cors_allow_headers)
        if streams:
            allowed_headers |= STREAM_REQUEST_HEADERS
        refused = ""
        if not decision.allowed:
            refused = f"origin ({decision.reason})"
        elif wanted.upper() not in methods:
            refused = "method"
        elif "*" not in allowed_headers and any(h not in allowed_headers for h in asked):
            refused = "headers"
        if refused:
            log.info(
                "CORS preflight refused client=%s origin=%r method=%r headers=%r reason=%s",
                _client(scope),
                excerpt(origin, 120),
                excerpt(wanted, 40),
                excerpt(",".join(asked), 120),
                refused,
            )
            body = f"Disallowed CORS {refused.split(' ')[0]}".encode()
            await _respond(send, 400, body, b"text/plain; charset=utf-8", _VARY)
            return
        headers = [
            *cors_headers(policy, origin, _header(scope, b"host")),
            (b"access-control-allow-methods", ", ".join(methods).encode()),
            (b"access-control-max-age", str(policy.cors_max_age).encode()),
        ]
        if asked:
            headers.append((b"access-control-allow-headers", ", ".join(asked).encode("latin-1")))
        await _respond(send, 204, b"", b"text/plain; charset=utf-8", *headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        started = False
        await receive()  # lifespan.startup
        try:
            async with self.app.lifespan():
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})
