"""FastAPI glue: an ``APIRouter`` whose WebSocket route takes ordinary dependencies.

Authenticate with a dependency typed on ``HTTPConnection`` (token from a cookie,
the query string or a header) and pass it as ``principal=``; it must return a
:class:`~unbroken.server.agent.Principal` or raise
``WebSocketException(code=1008)``. Without it, the ``hello`` frame's token goes
to the app's ``authenticate`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, WebSocket

from .agent import Principal
from .asgi import Served, serve_websocket


def build_router(
    app: Served,
    path: str = "/ws",
    *,
    dependencies: Sequence[Any] | None = None,
    principal: Callable[..., Any] | None = None,
) -> APIRouter:
    """Build the router; see the module docstring."""
    router = APIRouter(dependencies=list(dependencies or []))

    if principal is not None:

        async def ws_with_principal(
            websocket: WebSocket,
            who: Principal = Depends(principal),  # noqa: B008 - FastAPI idiom
        ) -> None:
            await serve_websocket(app, websocket.scope, websocket.receive, websocket.send, who)

        router.add_api_websocket_route(path, ws_with_principal)
    else:

        async def ws_plain(websocket: WebSocket) -> None:
            await serve_websocket(app, websocket.scope, websocket.receive, websocket.send)

        router.add_api_websocket_route(path, ws_plain)
    return router
