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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol.codes import CloseCode
from ..protocol.frames import negotiate_subprotocol
from .agent import Principal
from .connection import ConnectInfo, Connection

if TYPE_CHECKING:
    from .app import Unbroken

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ASGITransport:
    """:class:`~unbroken.server.connection.Transport` over raw ASGI callables."""

    __slots__ = ("_gone", "_receive", "_send", "disconnect_code")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._gone = False
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
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
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class StarletteTransport:
    """:class:`~unbroken.server.connection.Transport` over a Starlette WebSocket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._gone = False
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
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
            await self.ws.close(code, reason)


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


def _refusal(app: Unbroken, offered: list[str], client: str) -> tuple[int, str] | None:
    """Why this connection must be closed right after the handshake, if it must."""
    if offered and negotiate_subprotocol(offered) is None:
        log.warning(
            "unsupported subprotocol client=%s offered=%s code=%d",
            client,
            offered,
            CloseCode.UNSUPPORTED_VERSION,
        )
        return CloseCode.UNSUPPORTED_VERSION, f"supported subprotocols: unbroken.v1 (got {offered})"
    if not app.hub.accepting:
        log.info("refused while shutting down client=%s code=%d", client, CloseCode.SERVICE_RESTART)
        return CloseCode.SERVICE_RESTART, "server restarting"
    return None


async def serve_asgi(app: Unbroken, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one WebSocket connection on raw ASGI callables."""
    if (await receive())["type"] != "websocket.connect":
        return
    offered = [str(p) for p in scope.get("subprotocols") or []]
    chosen = negotiate_subprotocol(offered) if offered else None
    accept: Message = {"type": "websocket.accept"}
    if chosen is not None:
        accept["subprotocol"] = chosen
    await send(accept)
    transport = ASGITransport(receive, send)
    refusal = _refusal(app, offered, _client(scope))
    if refusal is not None:
        await transport.close(*refusal)
        return
    await Connection(app, transport, connect_info(scope)).run()


async def serve_websocket(app: Unbroken, ws: WebSocket, principal: Principal | None = None) -> None:
    """Negotiate the subprotocol, accept, and serve one connection (Starlette/FastAPI)."""
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = negotiate_subprotocol(offered) if offered else None
    await ws.accept(subprotocol=chosen)
    refusal = _refusal(app, offered, _client(ws.scope))
    if refusal is not None:
        await ws.close(*refusal)
        return
    info = connect_info(ws.scope, principal)
    await Connection(app, StarletteTransport(ws), info).run()


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

    def __init__(self, app: Unbroken, path: str, routes: list[Any]) -> None:
        super().__init__(routes=routes, lifespan=app.lifespan)
        self.unbroken = app
        self.ws_path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == self.ws_path:
            await serve_asgi(self.unbroken, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_starlette(app: Unbroken, path: str) -> Starlette:
    async def endpoint(ws: WebSocket) -> None:  # reached only through url_for-style routing
        await serve_websocket(app, ws)

    async def healthz(_request: HttpRequest) -> JSONResponse:
        return JSONResponse(
            {
                "ok": app.hub.accepting,
                "epoch": app.store.epoch,
                "runs": len(app.hub.runs),
                "connections": len(app.connections),
            },
            status_code=200 if app.hub.accepting else 503,
        )

    routes: list[Any] = [WebSocketRoute(path, endpoint), Route("/healthz", healthz)]
    return UnbrokenStarlette(app, path, routes)
