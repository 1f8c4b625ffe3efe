"""ASGI glue: the WebSocket endpoint, ``/healthz`` and the transport adapters.

:meth:`Unbroken.asgi` returns a Starlette app (mount it anywhere). Its WebSocket
path is served straight on the raw ASGI ``receive``/``send`` callables, below
Starlette's routing and middleware: a connection is long-lived, and every frame
of every token goes through ``send``, so the layers in between would cost on
every token and a few KB of held coroutine frames per connection. The FastAPI
router form goes through FastAPI (for its dependencies) with
:class:`StarletteTransport`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol.codes import CloseCode, ErrorCode, close_reason
from ..protocol.frames import Error, encode, excerpt, negotiate_subprotocol
from ..store.base import StreamLog
from .agent import Principal
from .config import ServerConfig
from .connection import Authenticate, ConnectInfo, Connection, Transport
from .guard import ConnectionGuard
from .hub import Hub
from .websocket import MAX_SIZE_EXTENSION

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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
    def lifespan(self, _app: object = None) -> AbstractAsyncContextManager[None]: ...


def open_connection(app: Served, transport: Transport, info: ConnectInfo) -> Connection:
    """A :class:`Connection` of ``app`` on ``transport`` (its narrow ports only)."""
    return Connection(
        app.config,
        app.hub,
        app.store,
        transport,
        info,
        authenticate=app.authenticate,
        registry=app.connections,
    )


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


class ASGITransport:
    """:class:`~unbroken.server.connection.Transport` over raw ASGI callables."""

    __slots__ = ("_frames", "_gone", "_limit", "_receive", "_send", "disconnect_code")

    def __init__(self, receive: Receive, send: Send, limit: _SizeLimit | None = None) -> None:
        self._receive = receive
        self._send = send
        self._gone = False
        self._limit = limit
        self._frames = 0
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
        if self._limit is not None:
            self._frames += 1
            if self._frames == 2:  # the hello was accepted
                self._limit.next_frame()
                self._limit = None
        msg = await self._receive()
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
        await self._send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int, reason: str = "") -> None:
        self._gone = True
        with contextlib.suppress(Exception):
            await self._send(
                {"type": "websocket.close", "code": code, "reason": close_reason(reason)}
            )


class StarletteTransport:
    """:class:`~unbroken.server.connection.Transport` over a Starlette WebSocket."""

    def __init__(self, ws: WebSocket, limit: _SizeLimit | None = None) -> None:
        self.ws = ws
        self._gone = False
        self._limit = limit
        self._frames = 0
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
        if self._limit is not None:
            self._frames += 1
            if self._frames == 2:  # the hello was accepted
                self._limit.next_frame()
                self._limit = None
        try:
            msg = await self.ws.receive()
        except WebSocketDisconnect as exc:
            self._gone = True
            self.disconnect_code = exc.code
            return None
        except RuntimeError:
            self._gone = True
            return None
        if msg["type"] == "websocket.disconnect":
            self._gone = True
            self.disconnect_code = msg.get("code")
            return None
        text = msg.get("text")
        if text is not None:
            return str(text)
        data = msg.get("bytes")
        return bytes(data) if data is not None else b""

    async def send(self, data: bytes) -> None:
        await self.ws.send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int, reason: str = "") -> None:
        self._gone = True
        with contextlib.suppress(Exception):
            await self.ws.close(code, close_reason(reason))


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


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
        cookies=cookie_parser(headers.get("cookie", "")),
        principal=principal,
    )


#: ``retry_after_ms`` of a session refused because the server is full.
FULL_RETRY_AFTER_MS = 1000


def _refusal(app: Served, offered: list[str], client: str) -> tuple[int, str] | None:
    """Why this connection must be closed right after the handshake, if it must."""
    if offered and negotiate_subprotocol(offered) is None:
        log.warning(
            "unsupported subprotocol client=%s offered=%s code=%d",
            client,
            excerpt(repr(offered), 200),  # the peer's header: quoted and bounded
            CloseCode.UNSUPPORTED_VERSION,
        )
        return CloseCode.UNSUPPORTED_VERSION, "supported subprotocols: unbroken.v1"
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


async def _refuse(send_text: Callable[[str], Awaitable[None]], code: int) -> None:
    """Before a 4008 close: an ``error overloaded`` frame with ``retry_after_ms``
    (a close frame has no room for it)."""
    if code == CloseCode.OVERLOADED:
        frame = Error(
            code=ErrorCode.OVERLOADED,
            message="server full",
            retry_after_ms=FULL_RETRY_AFTER_MS,
        )
        with contextlib.suppress(Exception):
            await send_text(encode(frame).decode())


async def serve_asgi(app: Served, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one WebSocket connection on raw ASGI callables."""
    if (await receive())["type"] != "websocket.connect":
        return
    offered = [str(p) for p in scope.get("subprotocols") or []]
    chosen = negotiate_subprotocol(offered) if offered else None
    accept: Message = {"type": "websocket.accept"}
    if chosen is not None:
        accept["subprotocol"] = chosen
    await send(accept)
    transport = ASGITransport(receive, send, _SizeLimit(scope, app.config.max_client_frame))
    refusal = _refusal(app, offered, _client(scope))
    if refusal is not None:

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        await _refuse(send_text, refusal[0])
        await transport.close(*refusal)
        return
    await open_connection(app, transport, connect_info(scope)).run()


async def serve_websocket(app: Served, ws: WebSocket, principal: Principal | None = None) -> None:
    """Negotiate the subprotocol, accept, and serve one connection (Starlette/FastAPI)."""
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = negotiate_subprotocol(offered) if offered else None
    await ws.accept(subprotocol=chosen)
    refusal = _refusal(app, offered, _client(ws.scope))
    if refusal is not None:
        await _refuse(ws.send_text, refusal[0])
        await ws.close(*refusal)
        return
    info = connect_info(ws.scope, principal)
    transport = StarletteTransport(ws, _SizeLimit(ws.scope, app.config.max_client_frame))
    await open_connection(app, transport, info).run()


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


class UnbrokenStarlette(Starlette):
    """A Starlette app whose unbroken WebSocket path bypasses routing (see module doc)."""

    def __init__(self, app: Served, path: str, routes: list[Any]) -> None:
        super().__init__(routes=routes, lifespan=app.lifespan)
        self.unbroken = app
        self.ws_path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == self.ws_path:
            await serve_asgi(self.unbroken, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_starlette(app: Served, path: str) -> Starlette:
    async def endpoint(ws: WebSocket) -> None:  # reached only through url_for-style routing
        await serve_websocket(app, ws)

    async def healthz(_request: HttpRequest) -> JSONResponse:
        body: dict[str, Any] = {"ok": app.hub.accepting}
        if app.health_detail:  # opt-in: /healthz answers anyone
            body["epoch"] = app.store.epoch
            body["runs"] = len(app.hub.runs)
            body["connections"] = len(app.connections)
            if app.guard is not None:
                body["sockets"] = app.guard.stats()
        return JSONResponse(body, status_code=200 if app.hub.accepting else 503)

    routes: list[Any] = [WebSocketRoute(path, endpoint), Route("/healthz", healthz)]
    return UnbrokenStarlette(app, path, routes)
