"""A paced agent (an LLM's pace) for the concurrency, storm and leak benchmarks.

``app`` is served with ``unbroken serve benchmarks.paced:app``; ``python -m
benchmarks.paced --port P`` runs the bare baseline: a plain ``websockets`` server
sending the same paced tokens, one message each, one stream per connection.

Each token is 20 bytes: the monotonic time it was produced (``%014.6f``), how late
the agent was against its schedule in ms (``%05d``) and a space. Server and
clients run on one machine, so they share CLOCK_MONOTONIC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from unbroken.server import Output, Request, Unbroken
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

TOKEN_BYTES = 20


def stamp(due: float) -> str:
    now = time.monotonic()
    return f"{now:014.6f}{min(99999, max(0, int((now - due) * 1000))):05d} "


async def paced_tokens(n: int, rate: float, emit: Any) -> None:
    """Call ``emit(token)`` ``n`` times at ``rate`` per second (absolute schedule)."""
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(n):
        due = start + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await emit(stamp(due))


def build_app(ttl: float = 30.0, tombstone_ttl: float = 3600.0) -> Unbroken:
    retention = Retention(
        max_total_bytes=4 << 30, max_stream_bytes=64 << 20, ttl=ttl, tombstone_ttl=tombstone_ttl
    )
    store = MemoryStore(retention)
    app = Unbroken(
        store,
        allow_anonymous=True,
        start_rate=1e6,
        start_burst=1_000_000,
        max_streams_per_connection=100_000,
    )

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


def run_bare(port: int, loop: str = "asyncio") -> None:
    import logging

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # aborted load clients
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            req = json.loads(msg)
            await paced_tokens(int(req["n"]), float(req["rate"]), ws.send)
            await ws.send("END")

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            compression=None,
            max_size=None,
            ping_interval=None,
            backlog=4096,
        ):
            await asyncio.Future()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="bare websockets server with paced tokens")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = ap.parse_args()
    run_bare(a.port, a.loop)
