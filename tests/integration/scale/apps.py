"""Apps the scale tests serve with ``unbroken serve``: the ``count`` agent of
``examples/redis_app.py`` on a MemoryStore (one process only)."""

from __future__ import annotations

import asyncio

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
