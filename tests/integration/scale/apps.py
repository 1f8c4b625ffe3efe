"""Apps the scale tests serve with ``unbroken serve``: the ``count`` agent of
``examples/redis_app.py`` on a MemoryStore (one process only)."""

from __future__ import annotations

import asyncio
import contextlib

from unbroken.server import Output, Request, Unbroken
from unbroken.store.memory import MemoryStore

memory_app = Unbroken(store=MemoryStore(), allow_anonymous=True)


@memory_app.agent("count")
async def count(req: Request, out: Output) -> None:
    """``n`` tokens ``tok000000 `` …, pausing ``pause`` s after every ``every`` tokens."""
    inp = req.input if isinstance(req.input, dict) else {}
    n, every, pause = int(inp.get("n", 1000)), int(inp.get("every", 50)), float(inp.get("pause", 0))
    for i in range(n):
        await out.text(f"tok{i:06d} ")
        if every and i % every == every - 1:
            await out.flush()
            await asyncio.sleep(pause)


stubborn_app = Unbroken(store=MemoryStore(), allow_anonymous=True)
_leaked: set[asyncio.Task[None]] = set()


async def _stubborn() -> None:
    """A task that swallows every cancel (a bug in user code the server must survive)."""
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


@stubborn_app.agent("leak")
async def leak(req: Request, out: Output) -> None:
    """Leaves a task behind that never ends, then answers ``ok``."""
    task = asyncio.get_running_loop().create_task(_stubborn(), name="stubborn")
    _leaked.add(task)
    await out.text("ok")
