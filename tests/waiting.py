"""Waiting on a condition in tests: poll it under a timeout (never a bare sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(ok: Callable[[], bool], limit: float = 10.0, every: float = 0.01) -> None:
    """Return once ``ok()`` is true; ``TimeoutError`` after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not ok():  # noqa: ASYNC110 - polled under a timeout
            await asyncio.sleep(every)
