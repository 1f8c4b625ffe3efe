"""Helpers to run a real unbroken server inside a test or a script."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingExtra

try:
    import uvicorn
except ModuleNotFoundError as exc:  # a client-only install
    raise MissingExtra("unbroken.testing", "server", "uvicorn") from exc

from .server.app import Unbroken


@dataclass(slots=True)
class RunningServer:
    """A server listening on loopback: ``url`` is its WebSocket endpoint."""

    host: str
    port: int
    path: str
    server: uvicorn.Server
    task: asyncio.Task[None]
    _stopping: asyncio.Task[None] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def http(self) -> str:
        """Base HTTP URL (for ``/healthz`` and other routes)."""
        return f"http://{self.host}:{self.port}"

    def stop(self) -> asyncio.Task[None]:
        """Begin a graceful shutdown as on SIGTERM (connections get 1012, runs drain);
        the task finishes when the server has exited. Idempotent."""
        if self._stopping is None:
            self.server.should_exit = True
            self._stopping = asyncio.get_running_loop().create_task(self._wait())
        return self._stopping

    async def _wait(self) -> None:
        async with asyncio.timeout(30):
            await asyncio.shield(self.task)


@contextlib.asynccontextmanager
async def serve(
    app: Unbroken | Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    path: str = "/ws",
    ws_max_size: int | None = None,
    timeout_graceful_shutdown: int = 1,
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` with uvicorn on this event loop; shut it down (draining) on exit.

    ``app`` is an :class:`~unbroken.server.app.Unbroken` (served as
    ``app.asgi(path)``) or any ASGI app (then ``path`` is only used to build
    :attr:`RunningServer.url`). ``ws_max_size`` defaults to the app's
    ``max_frame`` (16 MiB for any other app), as ``unbroken serve`` does.

    The listening socket is bound before this yields, so clients may connect at
    once: connections queue in the backlog until uvicorn accepts them.
    """
    if isinstance(app, Unbroken):
        asgi: Any = app.asgi(path)
        max_size = ws_max_size if ws_max_size is not None else app.limits.max_frame
    else:
        asgi = app
        max_size = ws_max_size if ws_max_size is not None else 16 * 1024 * 1024
    # proto=TCP: asyncio sets TCP_NODELAY on accepted sockets only then (no 40 ms Nagle stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        asgi,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=max_size,
        ws_per_message_deflate=False,
        lifespan="on",
        ws_ping_interval=None,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    server = uvicorn.Server(config)
    # inside a test or a script the caller owns SIGINT/SIGTERM, not uvicorn
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    running = RunningServer(host, sock.getsockname()[1], path, server, task)
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await running.stop()
        sock.close()
