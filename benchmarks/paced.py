"""A paced agent (an LLM's pace) for the concurrency, storm and leak benchmarks.

``app`` is served with ``unbroken serve benchmarks.paced:app``. The bare baseline
(a plain ``websockets`` server sending the same paced tokens, one message each, one
stream per connection) is :mod:`benchmarks.bare`, which imports nothing of unbroken
(``python -m benchmarks.bare --port P``).

Each token is 20 bytes: the monotonic time it was produced (``%014.6f``), how late
the agent was against its schedule in ms (``%05d``) and a space. Server and
clients run on one machine, so they share CLOCK_MONOTONIC.
"""

from __future__ import annotations

import asyncio

from benchmarks.bare import TOKEN_BYTES, paced_tokens, stamp
from benchmarks.common import bench_app
from unbroken.server import Output, Request, Unbroken
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

__all__ = ["TOKEN_BYTES", "app", "build_app", "leak_app", "paced_tokens", "stamp"]


def build_app(ttl: float = 30.0, tombstone_ttl: float = 3600.0) -> Unbroken:
    retention = Retention(
        max_total_bytes=4 << 30, max_stream_bytes=64 << 20, ttl=ttl, tombstone_ttl=tombstone_ttl
    )
    store = MemoryStore(retention)
    app = bench_app(store)

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        await paced_tokens(int(req.input["n"]), float(req.input["rate"]), out.text)

    @app.agent("quick")
    async def quick(req: Request, out: Output) -> None:
        for i in range(int(req.input.get("n", 5))):
            await out.text(f"token-{i:013d} ")

    @app.agent("hold")
    async def hold(req: Request, out: Output) -> None:
        """Write ``n`` tokens, then stay running (a live stream) for ``hold`` seconds."""
        for i in range(int(req.input["n"])):
            await out.text(f"token-{i:013d} ")
        await asyncio.sleep(float(req.input["hold"]))

    return app


app = build_app()
# for the leak check: completed streams and their tombstones expire after 2 s, so
# 100,000 lifecycles leave nothing behind once swept
leak_app = build_app(ttl=2.0, tombstone_ttl=2.0)
