"""The bare baseline of the paced benchmarks: a plain ``websockets`` server that
sends paced tokens, one message each, one stream per connection.

``python -m benchmarks.bare --port P [--loop uvloop]``. It imports nothing of
unbroken (``benchmarks.paced`` builds unbroken's app when imported: run from there,
the baseline held unbroken's server modules in its RSS, ~11 MB).

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
