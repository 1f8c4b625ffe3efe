"""Waiting on a condition in tests: poll it under a timeout (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    ok: Callable[[], bool | Awaitable[bool]], limit: float = 10.0, every: float = 0.01
) -> None:
    """Return once ``ok()`` is true; ``TimeoutError`` after ``limit`` seconds.

    ``ok`` may be a coroutine function (a check that asks a server), awaited each time."""
    async with asyncio.timeout(limit):
        while True:
            done = ok()
            if inspect.isawaitable(done):
                done = await done
            if done:
                return
            await asyncio.sleep(every)
