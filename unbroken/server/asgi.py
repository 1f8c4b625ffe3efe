"""Starlette glue: the WebSocket endpoint, ``/healthz`` and the transport adapter."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
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


async def serve_websocket(app: Unbroken, ws: WebSocket, principal: Principal | None = None) -> None:
    """Negotiate the subprotocol, accept, and serve one connection."""
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = negotiate_subprotocol(offered) if offered else None
    await ws.accept(subprotocol=chosen)
    if offered and chosen is None:
        log.warning(
            "unsupported subprotocol client=%s offered=%s code=%d",
            f"{ws.client.host}:{ws.client.port}" if ws.client else "",
            offered,
            CloseCode.UNSUPPORTED_VERSION,
        )
        await ws.close(
            CloseCode.UNSUPPORTED_VERSION, f"supported subprotocols: unbroken.v1 (got {offered})"
        )
        return
    if not app.hub.accepting:
        await ws.close(CloseCode.SERVICE_RESTART, "server restarting")
        return
    client = ws.client
    info = ConnectInfo(
        client=f"{client.host}:{client.port}" if client else "",
        headers=dict(ws.headers),
        query=dict(ws.query_params),
        cookies=dict(ws.cookies),
        principal=principal,
    )
    await Connection(app, StarletteTransport(ws), info).run()


def build_starlette(app: Unbroken, path: str) -> Starlette:
    async def endpoint(ws: WebSocket) -> None:
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
    return Starlette(routes=routes, lifespan=app.lifespan)
