"""``examples.redis_app`` with one more agent, for tests that need a stream to be
mid-answer at a given moment however loaded the machine is: ``held_count``."""

from __future__ import annotations

import asyncio
import os

from examples.redis_app import app
from unbroken.server import Output, Request

__all__ = ["app"]


@app.agent("held_count")
async def held_count(req: Request, out: Output) -> None:
    """The ``count`` agent's tokens (same text, same digest) that stop after
    ``hold_at`` tokens until the file ``gate`` exists: a stream that cannot end
    before the test lets it (it was the machine's speed that decided)."""
    inp = req.input if isinstance(req.input, dict) else {}
    n, every, pause = int(inp.get("n", 1000)), int(inp.get("every", 50)), float(inp.get("pause", 0))
    hold_at, gate = int(inp["hold_at"]), str(inp["gate"])
    for i in range(n):
        if i == hold_at:
            await out.flush()
            # the gate is the test process's file: a condition waited on, not a time
            while not await asyncio.to_thread(os.path.exists, gate):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await out.text(f"tok{i:06d} ")
        if every and i % every == every - 1:
            await out.flush()
            await asyncio.sleep(pause)
