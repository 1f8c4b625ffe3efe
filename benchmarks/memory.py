"""Memory: RSS overhead of 5,000 live streams, and a 100,000-lifecycle leak check.

The server is ``unbroken serve`` in its own process (RSS read with psutil).

* **Live streams**: N streams that each wrote 50 tokens (1 KB) and keep running.
  Overhead = RSS(with the streams) − RSS(before) − payload bytes held in the log.
  Two shapes: one connection per stream (browsers) and all streams multiplexed on
  8 connections (a backend client). Clients: raw ``websockets`` in 2 processes.
* **Leak check**: complete stream lifecycles (start → 5 tokens → end), 8
  connections with 64 starts in flight each, against ``benchmarks.paced:leak_app``
  whose finished streams and tombstones expire after 2 s. RSS is sampled every
  few thousand lifecycles and once more after expiry; the aim is that RSS
  returns to within 5 % of its level after a 2,000-lifecycle warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import finish, meta, progress, unbroken_server

TOKENS_PER_STREAM = 50
TOKEN_BYTES = 20
AIM_OVERHEAD_MB = 50.0
AIM_LEAK_PCT = 5.0


async def _open(port: int) -> Any:
    from benchmarks.server import Client

    return await Client.open(port)


async def _hold_streams(port: int, streams: int, conns: int, ready: Any, stop: Any) -> None:
    from unbroken.protocol.frames import encode

    sem = asyncio.Semaphore(64)

    async def one() -> Any:
        async with sem:
            return await _open(port)

    clients = await asyncio.gather(*(one() for _ in range(conns)))
    tag = os.urandom(6).hex()
    ends = {"n": 0}
    all_started = asyncio.Event()

    async def read(c: Any) -> None:
        with contextlib.suppress(Exception):
            async for msg in c.ws:
                if isinstance(msg, str) and msg.startswith('{"t":"started"'):
                    ends["n"] += 1
                    if ends["n"] >= streams:
                        all_started.set()

    readers = [asyncio.ensure_future(read(c)) for c in clients]
    for i in range(streams):
        c = clients[i % conns]
        inp = {"n": TOKENS_PER_STREAM, "hold": 120}
        f = c.cs.start(f"{tag}-{i}", "hold", inp)
        await c.ws.send(encode(f).decode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_started.wait(), 60)
    ready.put(ends["n"])
    await asyncio.to_thread(stop.wait, 180)
    for r in readers:
        r.cancel()
    for c in clients:
        c.ws.transport.abort()


def _hold_main(port: int, streams: int, conns: int, ready: Any, stop: Any) -> None:
    asyncio.run(_hold_streams(port, streams, conns, ready, stop))


def settle(p: psutil.Process, seconds: float = 0.5) -> float:
    """RSS in MB once it has stopped moving (bounded)."""
    last = p.memory_info().rss
    deadline = time.monotonic() + seconds * 5
    while time.monotonic() < deadline:
        time.sleep(seconds / 2)
        now = p.memory_info().rss
        if abs(now - last) < 256 * 1024:
            return now / 2**20
        last = now
    return last / 2**20


def live_streams(streams: int, conns: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    # admission is not under test: its default caps (1,000 runs, 500 per principal)
    # would hold this benchmark to 1,000 streams; a loaded machine's loop lag neither
    lifted = ("--max-runs", str(10 * streams), "--max-runs-per-principal", str(10 * streams))
    with unbroken_server("benchmarks.paced:app", *lifted, "--max-loop-lag", "30") as (port, proc):
        before = settle(proc)
        ready, stop = ctx.Queue(), ctx.Event()
        procs = 2 if conns >= 2 else 1
        ps = []
        for k in range(procs):
            share = streams // procs + (1 if k < streams % procs else 0)
            p = ctx.Process(
                target=_hold_main, args=(port, share, max(1, conns // procs), ready, stop)
            )
            p.start()
            ps.append(p)
        started = sum(ready.get(timeout=120) for _ in ps)
        after = settle(proc)
        stop.set()
        for p in ps:
            p.join(20)
            if p.is_alive():
                p.kill()
    payload = started * TOKENS_PER_STREAM * TOKEN_BYTES / 2**20
    overhead = after - before - payload
    return {
        "streams": started,
        "connections": conns,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "payload_mb": round(payload, 2),
        "overhead_mb": round(overhead, 1),
        "overhead_kb_per_stream": round(overhead * 1024 / max(1, started), 2),
    }


async def _lifecycles(port: int, total: int, proc: psutil.Process) -> list[tuple[int, float]]:
    from unbroken.protocol.frames import encode

    conns, inflight = 8, 64
    clients = [await _open(port) for _ in range(conns)]
    tag = os.urandom(6).hex()
    samples: list[tuple[int, float]] = []
    done = {"n": 0}
    every = max(1000, total // 20)
    next_sample = [every]

    async def worker(k: int, c: Any, quota: int) -> None:
        sent = 0
        pending = 0
        while sent < quota or pending:
            while pending < inflight and sent < quota:
                f = c.cs.start(f"{tag}-{k}-{sent}", "quick", {"n": 5})
                await c.ws.send(encode(f).decode())
                sent += 1
                pending += 1
            msg = await asyncio.wait_for(c.ws.recv(), 30)
            if isinstance(msg, str) and '"k":"end"' in msg[-120:]:
                pending -= 1
                done["n"] += 1
                if done["n"] >= next_sample[0]:
                    next_sample[0] += every
                    samples.append((done["n"], proc.memory_info().rss / 2**20))
                    progress(done["n"], total)

    quota = total // conns
    await asyncio.gather(*(worker(k, c, quota) for k, c in enumerate(clients)))
    for c in clients:
        await c.ws.close()
    return samples


def leak_check(total: int, warmup: int = 2000) -> dict[str, Any]:
    with unbroken_server("benchmarks.paced:leak_app") as (port, proc):
        asyncio.run(_lifecycles(port, warmup, proc))  # warm-up: allocator pools, caches
        time.sleep(3.5)  # let the warm-up streams expire too
        start = settle(proc)
        t0 = time.monotonic()
        samples = asyncio.run(_lifecycles(port, total, proc))
        took = time.monotonic() - t0
        peak = max((r for _, r in samples), default=start)
        time.sleep(5.0)  # ttl 2 s + tombstone 2 s, swept every second
        end = settle(proc)
        healthz = __import__("httpx").get(f"http://127.0.0.1:{port}/healthz").json()
    growth = 100 * (end - start) / start
    # a leak keeps growing; a working set (the streams retention holds for their ttl) and
    # the allocator's arenas level off: compare the second half of the lifecycles
    half = [r for n, r in samples if n >= total // 2]
    second_half = 100 * (half[-1] - half[0]) / half[0] if len(half) > 1 else float("nan")
    return {
        "lifecycles": total,
        "seconds": round(took, 1),
        "lifecycles_per_s": round(total / took),
        "rss_start_mb": round(start, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_end_mb": round(end, 1),
        "growth_pct": round(growth, 2),
        "growth_second_half_pct": round(second_half, 2),
        "samples": [(n, round(r, 1)) for n, r in samples],
        "healthz_after": healthz,
    }


def run(quick: bool = False) -> dict[str, Any]:
    res = meta()
    res["benchmark"] = "memory"
    n_live = 200 if quick else 5000
    res["live_multiplexed"] = live_streams(n_live, 8)
    # quick: a smoke run; the one-connection-per-stream shape reuses the multiplexed one
    res["live_per_connection"] = res["live_multiplexed"] if quick else live_streams(n_live, n_live)
    res["leak"] = leak_check(1_000 if quick else 100_000, warmup=300 if quick else 2000)
    lp, lm, lk = res["live_per_connection"], res["live_multiplexed"], res["leak"]
    res["figures"] = [
        {
            "name": f"RSS overhead beyond payload, {lp['streams']:,} live streams, 1 conn each",
            "value": lp["overhead_mb"],
            "aim": AIM_OVERHEAD_MB,
            "met": lp["overhead_mb"] < AIM_OVERHEAD_MB,
            "unit": "MB",
        },
        {
            "name": f"RSS overhead beyond payload, {lm['streams']:,} live streams on 8 conns",
            "value": lm["overhead_mb"],
            "aim": AIM_OVERHEAD_MB,
            "met": lm["overhead_mb"] < AIM_OVERHEAD_MB,
            "unit": "MB",
        },
        {
            "name": f"RSS growth after {lk['lifecycles']:,} stream lifecycles",
            "value": lk["growth_pct"],
            "aim": AIM_LEAK_PCT,
            "met": abs(lk["growth_pct"]) <= AIM_LEAK_PCT,
            "unit": "%",
        },
        {
            "name": "RSS growth over the second half of those lifecycles (a leak keeps growing)",
            "value": lk["growth_second_half_pct"],
            "aim": AIM_LEAK_PCT,
            "met": abs(lk["growth_second_half_pct"]) <= AIM_LEAK_PCT,
            "unit": "%",
        },
    ]
    return finish(res)


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    lk = res["leak"]
    xs = [0] + [n for n, _ in lk["samples"]] + [lk["lifecycles"] * 1.04]
    ys = [lk["rss_start_mb"]] + [r for _, r in lk["samples"]] + [lk["rss_end_mb"]]
    a.plot(xs, ys, "o-", ms=3, label="server RSS")
    a.axhline(lk["rss_start_mb"] * 1.05, color="red", ls=":", lw=0.8, label="start + 5 %")
    a.annotate("after expiry", (xs[-1], ys[-1]), fontsize=7)
    a.set(xlabel="completed stream lifecycles", ylabel="RSS, MB", title="Leak check")
    a.legend(fontsize=7)
    shapes = [("1 conn / stream", res["live_per_connection"]), ("8 conns", res["live_multiplexed"])]
    names = [s for s, _ in shapes]
    b.bar(names, [r["payload_mb"] for _, r in shapes], label="payload in the log")
    b.bar(
        names,
        [r["overhead_mb"] for _, r in shapes],
        bottom=[r["payload_mb"] for _, r in shapes],
        label="overhead",
    )
    b.axhline(AIM_OVERHEAD_MB, color="red", ls=":", lw=0.8, label="aim: overhead < 50 MB")
    b.set(ylabel="MB of RSS", title=f"{res['live_multiplexed']['streams']:,} live streams")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- where RSS goes
class _LoopbackPeer:
    """A client in the server's own process (no sockets): sends ``start``s, acks
    every ``events`` frame, counts ``end`` events (for :func:`traced_lifecycles`)."""

    def __init__(self, on_end: Any) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.on_end = on_end
        self.refused = 0
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        import json

        from unbroken.protocol.frames import Ack, encode

        for line in data.split(b"\n"):
            if line.startswith(b'{"t":"error"'):  # a start refused: it ends here
                self.refused += 1
                self.on_end(self)
            elif line.startswith(b'{"t":"events"'):
                f = json.loads(line)
                last = f["seq"] + len(f["items"]) - 1
                self.inbox.put_nowait(encode(Ack(stream=f["stream"], seq=last)).decode())
                for item in f["items"]:
                    if type(item) is dict and item.get("k") == "end":
                        self.on_end(self)

    async def close(self, code: int, reason: str = "") -> None:
        self.inbox.put_nowait(None)


async def _traced(total: int, warmup: int, steps: int, top: int) -> dict[str, Any]:
    import ctypes
    import dataclasses
    import gc
    import logging
    import tracemalloc

    from benchmarks.paced import build_app
    from unbroken.protocol.frames import Hello, Start, encode
    from unbroken.server.connection import ConnectInfo, Connection

    logging.getLogger("unbroken").setLevel(logging.ERROR)
    app = build_app(ttl=2.0, tombstone_ttl=2.0)  # as benchmarks.paced:leak_app
    app.hub.set_admission(dataclasses.replace(app.hub.admission, max_loop_lag=30.0))
    app.hub.ensure_started()
    proc = psutil.Process()
    state = {"done": 0, "issued": 0, "target": 0}
    reached = asyncio.Event()

    def issue(peer: _LoopbackPeer) -> None:
        state["issued"] += 1
        start = Start(req=f"r{state['issued']}", agent="quick", input={"n": 5})
        peer.inbox.put_nowait(encode(start).decode())

    def on_end(peer: _LoopbackPeer) -> None:
        state["done"] += 1
        if state["issued"] < state["target"]:
            issue(peer)
        elif state["done"] >= state["target"]:
            reached.set()

    peers = [_LoopbackPeer(on_end) for _ in range(8)]
    tasks = []
    for i, peer in enumerate(peers):
        peer.inbox.put_nowait(encode(Hello(caps=["batch"])).decode())
        conn = Connection(app.config, app.hub, app.store, peer, ConnectInfo(client=f"c{i}"))
        tasks.append(asyncio.ensure_future(conn.run()))

    async def run_to(n: int) -> None:  # 8 connections, 64 starts in flight each
        state["target"] = n
        reached.clear()
        for peer in peers:
            for _ in range(64):
                if state["issued"] < n:
                    issue(peer)
        await asyncio.wait_for(reached.wait(), 900)

    rows: list[dict[str, Any]] = []

    def sample(tag: str) -> None:
        rows.append(
            {
                "lifecycles": state["done"],
                "at": tag,
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "python_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),
                "live_streams": len(app.store),  # type: ignore[arg-type]
                "refused_starts": sum(p.refused for p in peers),
            }
        )
        print(rows[-1], flush=True)

    async def expire() -> None:
        await asyncio.sleep(5.0)  # ttl 2 s + tombstones 2 s, swept every second
        gc.collect()

    tracemalloc.start()
    await run_to(warmup)
    await expire()
    sample("after warm-up, expired")
    before = tracemalloc.take_snapshot()
    for k in range(1, steps + 1):
        await run_to(warmup + k * (total // steps))
        sample("running")
    await expire()
    sample("expired")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    sample("after malloc_trim(0)")
    after = tracemalloc.take_snapshot()
    growth = [
        {
            "where": str(st.traceback[0]),
            "kib": round(st.size_diff / 1024, 1),
            "count": st.count_diff,
        }
        for st in after.compare_to(before, "lineno")[:top]
    ]
    tracemalloc.stop()
    for peer in peers:
        peer.inbox.put_nowait(None)
    await asyncio.gather(*tasks, return_exceptions=True)
    await app.hub.shutdown(1.0)
    return {"samples": rows, "python_growth_top": growth}


def traced_lifecycles(total: int = 100_000, warmup: int = 2000, steps: int = 5) -> dict[str, Any]:
    """Stream lifecycles in one process under ``tracemalloc`` (8 in-process clients,
    64 starts in flight each, ``leak_app``'s 2 s retention): RSS and the bytes Python
    holds at each step, after expiry and after ``malloc_trim(0)``, and the source
    lines whose allocations grew most. A leak grows the Python bytes without bound;
    the allocator's high water (arenas kept after the peak of live streams) grows
    RSS until the peak is reached, then stays flat."""
    import uvloop

    res = meta()
    res["benchmark"] = "memory_lifecycles"
    res.update(uvloop.run(_traced(total, warmup, steps, 12)))
    return finish(res)


if __name__ == "__main__":
    import argparse
    import json

    from benchmarks.common import RESULTS

    ap = argparse.ArgumentParser(description="memory: tracemalloc over stream lifecycles")
    ap.add_argument("--traced", type=int, metavar="N", help="N lifecycles in one process")
    a = ap.parse_args()
    if a.traced:
        out = traced_lifecycles(a.traced)
        (RESULTS / "memory_lifecycles.json").write_text(json.dumps(out, indent=2) + "\n")
        for g in out["python_growth_top"]:
            print(g)
