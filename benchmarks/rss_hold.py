"""Server RSS at N live streams, one per connection, that does not depend on the
machine's load (issue 21): each of N connections says hello and starts ``hold``
(``benchmarks.paced``: n tokens at once, then the run stays live), reads its n
tokens, and stays open; the server's RSS is read then, and again after one scrape
of ``/metrics`` (which imports ``prometheus_client``).

The paced benchmark (``python -m benchmarks.concurrency --at 1000``) is the figure
the aim is set against, but on a loaded machine its streams are late or missing and
its RSS moves with them; here every stream holds the same log and the same state
whatever the load, so two trees can be compared run against run:
``python -m benchmarks.rss_hold --at 1000 --tree /path/to/other/worktree``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import PYTHON, ROOT, free_port, wait_http


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _load(port: int, n: int, tokens: int) -> list[Any]:
    from websockets.asyncio.client import connect

    from unbroken.protocol.client_session import ClientSession
    from unbroken.protocol.frames import encode

    sem = asyncio.Semaphore(32)

    async def one(i: int) -> Any:
        async with sem:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                subprotocols=["unbroken.v1"],  # type: ignore[list-item]
                ping_interval=None,
                max_size=None,
                open_timeout=120,
            )
            cs = ClientSession(caps=("batch",))
            await ws.send(encode(cs.connect()).decode())
            cs.receive(await ws.recv())
            for f in cs.after_welcome():
                await ws.send(encode(f).decode())
            start = cs.start(f"r{i}", "hold", {"n": tokens, "hold": 3600})
            assert start is not None
            await ws.send(encode(start).decode())
        got = 0
        async for msg in ws:  # tokens may be coalesced: count them, not the items
            got += str(msg).count("token-")
            if got >= tokens:
                break
        return ws

    return await asyncio.gather(*(one(i) for i in range(n)))


def run(tree: Path, n: int, tokens: int) -> dict[str, Any]:
    """``unbroken serve benchmarks.paced:app`` from ``tree``, N held streams."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [str(Path(PYTHON).parent / "unbroken"), "serve", "benchmarks.paced:app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--max-loop-lag", "30"]  # admission is not under test (the client does not retry)
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_http(port)
        idle = _rss_mb(proc.pid)

        async def measure() -> tuple[float, float]:
            links = await _load(port, n, tokens)
            await asyncio.sleep(2.0)
            held = _rss_mb(proc.pid)
            async with httpx.AsyncClient() as http:
                (await http.get(f"http://127.0.0.1:{port}/metrics")).raise_for_status()
            await asyncio.sleep(1.0)
            scraped = _rss_mb(proc.pid)
            for ws in links:
                ws.transport.abort()
            return held, scraped

        held, scraped = asyncio.run(measure())
    finally:
        proc.terminate()
        proc.wait(15)
    return {
        "tree": str(tree),
        "streams": n,
        "tokens": tokens,
        "idle_mb": round(idle, 1),
        "rss_mb": round(held, 1),
        "after_scrape_mb": round(scraped, 1),
        "kb_per_stream": round((held - idle) * 1024 / n, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", type=int, default=1000, help="streams, one per connection")
    ap.add_argument("--tokens", type=int, default=200, help="tokens each stream holds")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the source tree to serve")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    for _ in range(a.repeat):
        print(json.dumps(run(a.tree.resolve(), a.at, a.tokens)), flush=True)


if __name__ == "__main__":
    main()
