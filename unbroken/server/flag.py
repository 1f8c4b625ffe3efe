"""An ``asyncio.Event`` without its ``deque``: held per connection and per run."""

from __future__ import annotations

import asyncio
import contextlib


class Flag:
    """The part of ``asyncio.Event`` unbroken and uvicorn use (``set``, ``clear``, ``is_set``,
    ``wait``), without a ``deque`` per instance: a list of futures only while
    someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, is_set: bool = False) -> None:
        self._set = is_set
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for w in waiters or ():
            if not w.done():
                w.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        w = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        waiters = self._waiters
        waiters.append(w)
        try:
            await w  # as asyncio.Event: woken once set, even if cleared again since
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(w)
        return True
