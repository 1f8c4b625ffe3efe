"""A real unbroken server (uvicorn on loopback) on a thread of its own, so its CPU time
is measured apart from the client's and the proxy's, and a busy client cannot stall the
server's heartbeats."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ...server import Unbroken
from ...testing import serve
from .tap import ASGIApp

if TYPE_CHECKING:
    from ...chaos.kernel import Namespace

T = TypeVar("T")


#: The name of the thread :class:`ServerThread` serves on (its log lines carry it).
SERVER_THREAD: Final = "unbroken-server"


class ServerThread:
    """Serve an ASGI app (an :class:`Unbroken` app, or one wrapped in middleware) with
    uvicorn on loopback, on a thread of its own with its own event loop."""

    def __init__(
        self,
        app: Unbroken,
        asgi: ASGIApp | None = None,
        *,
        path: str = "/ws",
        host: str = "127.0.0.1",
        netns: Namespace | None = None,
    ) -> None:
        self.app = app
        self.asgi = asgi
        self.path = path
        self.host = host
        self.netns = netns
        """Serve from this network namespace (the thread enters it for its whole life)."""
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's own WebSocket URL (without the proxy)."""
        return f"ws://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=SERVER_THREAD, daemon=True)
        self.thread.start()
        self.port = await asyncio.wait_for(asyncio.wrap_future(self._ready), 30)

    def _main(self) -> None:
        try:
            with self.netns.entered() if self.netns is not None else contextlib.nullcontext():
                asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starter
            self.error = exc
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        target: Any = self.asgi if self.asgi is not None else self.app.asgi(self.path)
        async with serve(
            target, host=self.host, path=self.path, ws_max_size=self.app.limits.max_frame
        ) as srv:
            self._ready.set_result(srv.port)
            await self._stop.wait()

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the server's loop and return its result here."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), self.loop))

    async def cpu_time(self) -> float:
        """CPU seconds the server thread has used so far."""

        async def read() -> float:
            return time.thread_time()

        return await self.call(read)

    async def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 30)

    async def __aenter__(self) -> ServerThread:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
