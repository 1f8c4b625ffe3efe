"""Helpers to run a real unbroken server inside a test or a script."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from .server.app import Unbroken


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server listening on loopback: ``url`` is its WebSocket endpoint."""

    host: str
    port: int
    path: str
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"


@contextlib.asynccontextmanager
async def serve(
    app: Unbroken, *, host: str = "127.0.0.1", port: int = 0, path: str = "/ws"
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` with uvicorn on this event loop; shut it down (draining) on exit.

    The listening socket is bound before this yields, so clients may connect at
    once: connections queue in the backlog until uvicorn accepts them.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        app.asgi(path),
        log_level="warning",
        ws="websockets-sansio",
        lifespan="on",
        ws_ping_interval=None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield RunningServer(host, sock.getsockname()[1], path, server)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        sock.close()
