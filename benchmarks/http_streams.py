"""HTTP streams: a 10 MB catch-up read over HTTP, and SSE recovery after a cut.

A real uvicorn server, the fault proxy and the readers on loopback, in one process
(as :mod:`benchmarks.recovery` measures the WebSocket path).

- **catch-up**: an agent writes a 10 MB answer (100-byte chunks: 100k events); it is
  then read from offset ``-1`` three ways: plain catch-up ``GET``s following
  ``Stream-Next-Offset`` (no verification: what any Durable Streams client does),
  :class:`~unbroken.client.http_reader.HttpReader` over SSE and over long-poll (every
  event decoded and chained, the digest checked). MB/s of answer text, median of
  ``--repeat`` runs.
- **recovery**: a paced agent (~1,000 tokens/s) read live over SSE through
  :class:`~unbroken.chaos.FaultProxy`; every ``--every`` s every connection is cut
  (``rst`` or ``fin``). Recovery: cut → the first event the reader did not hold at the
  cut, yielded verified (the reader reconnects with ``Last-Event-ID``).

- **live** (``--live N``): ``unbroken serve benchmarks.paced:app`` in a child process;
  N paced streams (20 tokens/s, each token stamped with its production time) read by
  N WebSocket clients, then N other streams read by N SSE readers
  (:class:`HttpReader`, verifying, one connection each; each stream started over a
  WebSocket closed right after the start), in the same run. Per-token
  latency p50/p99 (ms) for both, tokens of each stream's first second left out
  (connecting). The readers share this one process (the clients' CPU counts against
  both alike).

    python -m benchmarks.http_streams [--mb 10] [--cuts 50] [--live 200 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RESULTS, finish, meta, summary, unbroken_server
from unbroken import Unbroken
from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.client.http_reader import HttpReader
from unbroken.client.response import TextDelta
from unbroken.protocol.backoff import BackoffPolicy
from unbroken.server import Output, Request
from unbroken.testing import serve

OUT = Path(RESULTS) / "http_streams.json"


def make_app() -> Unbroken:
    app = Unbroken(allow_anonymous=True, shutdown_grace=1.0)

    @app.agent("bulk")
    async def bulk(req: Request, out: Output) -> None:
        chunk = "x" * (req.input["chunk"] - 1)
        for i in range(req.input["bytes"] // req.input["chunk"]):
            await out.text(chunk + chr(97 + i % 26))
            if i % 64 == 0:
                await asyncio.sleep(0)

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        for i in range(req.input["n"]):
            await out.text(f"t{i:07d} ")
            await asyncio.sleep(0.001)

    return app


async def catchup(mb: int, repeat: int) -> dict[str, Any]:
    app = make_app()
    size = mb * 1024 * 1024
    async with serve(app) as srv:
        async with Client(srv.url) as c:
            stream = await c.start("bulk", {"bytes": size, "chunk": 100})
            answer = await stream.wait()
        text_mb = len(answer.text) / 1e6
        url = f"{srv.http}/v1/agent/{stream.id}"
        runs: dict[str, list[float]] = {"raw_catchup": [], "reader_sse": [], "reader_long_poll": []}
        requests = 0
        for _ in range(repeat):
            async with httpx.AsyncClient(timeout=30) as http:
                t0 = time.perf_counter()
                offset, got, requests = "-1", 0, 0
                while True:
                    r = await http.get(url, params={"offset": offset})
                    requests += 1
                    got += len(r.content)
                    offset = r.headers["stream-next-offset"]
                    if r.headers.get("stream-closed") == "true" and r.content == b"[]":
                        break
                runs["raw_catchup"].append(text_mb / (time.perf_counter() - t0))
            for live in ("sse", "long-poll"):
                async with HttpReader(srv.http, live=live) as reader:  # type: ignore[arg-type]
                    t0 = time.perf_counter()
                    n = 0
                    async for _ev in reader.events(stream.id):
                        n += 1
                    runs[f"reader_{live.replace('-', '_')}"].append(
                        text_mb / (time.perf_counter() - t0)
                    )
                    assert reader.status == "completed"
    return {
        "benchmark": "http_catchup",
        "answer_mb": round(text_mb, 2),
        "events": n,
        "raw_catchup_requests": requests,
        "mb_per_s": {k: round(statistics.median(v), 1) for k, v in runs.items()},
        "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
    }


async def recovery(cuts: int, every: float, mode: str) -> dict[str, Any]:
    app = make_app()
    times: list[float] = []
    async with (
        serve(app) as srv,
        FaultProxy(f"127.0.0.1:{srv.port}") as proxy,
        Client(srv.url) as c,
    ):
        stream = await c.start("paced", {"n": 10_000_000})
        policy = BackoffPolicy(base=0.01, cap=0.5, max_attempts=50, deadline=30.0)
        reader = HttpReader(f"http://{proxy.listen}", backoff=policy)
        held = 0
        wanted = 0
        arrived = asyncio.Event()

        async def consume() -> None:
            nonlocal held
            async for ev in reader.events(stream.id):
                held = ev.seq
                if wanted and held >= wanted:
                    arrived.set()

        task = asyncio.ensure_future(consume())
        for _ in range(cuts):
            await asyncio.sleep(every)
            arrived.clear()
            wanted = held + 1
            t0 = time.perf_counter()
            await proxy.cut_all(mode)  # type: ignore[arg-type]
            await asyncio.wait_for(arrived.wait(), 10)
            times.append((time.perf_counter() - t0) * 1000)
            wanted = 0
        await stream.cancel()
        task.cancel()
        await reader.aclose()
    return {
        "benchmark": "http_sse_recovery",
        "fault": f"FaultProxy cut_all({mode}) every {every}s, "
        "in-process uvicorn + HttpReader (SSE)",
        "cuts": cuts,
        "recovery_ms": summary(times),
        "reconnects": reader.reconnects,
    }


def _latency(text: str, now: float, into: list[float], after: float) -> None:
    """Per token of ``text`` (20-byte stamped tokens) produced after ``after``:
    now - its production time, ms."""
    for i in range(0, len(text) - 19, 20):
        made = float(text[i : i + 14])
        if made >= after:
            into.append((now - made) * 1000)


async def live(n: int, seconds: float, rate: float = 20.0) -> dict[str, Any]:
    tokens = int(seconds * rate)
    spec = {"n": tokens, "rate": rate}
    result: dict[str, Any] = {"benchmark": "http_sse_live", "streams": n, "rate": rate}
    with unbroken_server("benchmarks.paced:app") as (port, _proc):
        url = f"ws://127.0.0.1:{port}/ws"
        base = f"http://127.0.0.1:{port}"
        ws_lat: list[float] = []
        clients = [Client(url) for _ in range(n)]

        ramp = n / 200  # connect 200 a second: a burst of 1,000 handshakes times out here

        async def ws_one(i: int, c: Client) -> None:
            await asyncio.sleep(i * ramp / n)
            async with c:
                s = await c.start("paced", spec)
                warm = time.monotonic() + 1.0  # the first second: connecting, not streaming
                async for ev in s:
                    if isinstance(ev, TextDelta):
                        _latency(ev.text, time.monotonic(), ws_lat, warm)

        t0 = time.perf_counter()
        await asyncio.gather(*(ws_one(i, c) for i, c in enumerate(clients)))
        result["websocket"] = {
            "latency_ms": summary(ws_lat),
            "tokens": len(ws_lat),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        sse_lat: list[float] = []
        limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, read=5.0)) as http:

            async def sse_one(i: int) -> None:
                await asyncio.sleep(i * ramp / n)
                # started over a WebSocket that closes at once: the run goes on (the log
                # is the buffer) and no WebSocket client reads it besides the SSE reader
                async with Client(url) as starter:
                    stream = await starter.start("paced", spec)
                warm = time.monotonic() + 1.0
                reader = HttpReader(base, client=http)
                async for ev in reader.events(stream.id):
                    if ev.kind == 1:
                        _latency(ev.body, time.monotonic(), sse_lat, warm)

            t0 = time.perf_counter()
            await asyncio.gather(*(sse_one(i) for i in range(n)))
            result["sse"] = {
                "latency_ms": summary(sse_lat),
                "tokens": len(sse_lat),
                "seconds": round(time.perf_counter() - t0, 1),
            }
    return result


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [await catchup(args.mb, args.repeat)]
    for mode in ("rst", "fin"):
        out.append(await recovery(args.cuts, args.every, mode))
    for n in args.live:
        out.append(await live(n, args.seconds))
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cuts", type=int, default=50)
    p.add_argument("--every", type=float, default=0.2)
    p.add_argument("--live", type=int, nargs="*", default=[], help="streams (live comparison)")
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    m = meta()
    results = asyncio.run(main(a))
    for r in results:
        r.update(m)
        finish(r)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
