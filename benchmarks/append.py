"""Agent-side append rate: how fast an agent can write tokens into the memory log.

An agent writes 20-byte tokens in a tight loop with ``await out.text(token)``: each is
digested (the BLAKE2b chain), encoded into the producer's buffer and appended to the
``MemoryStore`` in batches (one append per loop tick, or every ``max_batch`` tokens).
No reader is attached: this is the cost the agent itself pays per token, the ceiling
for any delivery. Also measured: the producer alone (``Producer.add_chunk`` + ``flush``,
no ``Output``), and a paced agent's one-token appends (a flush per token).

Each is repeated (5 times, interleaved) and timed twice: wall clock and this process's
CPU time (``time.process_time``). On a shared machine the wall rate mostly measures
the neighbours (a run descheduled for 30 % of its time reads 30 % slower); the CPU
rate is what the code costs. Reported: the median and the best of each.

Run: ``.venv/bin/python -m benchmarks.append [--quick]`` (also ``python -m benchmarks
append``). Writes ``benchmarks/results/append.json`` and ``append.png``.

A figure the machine's load does not move: ``--instructions`` runs the agent (and the
producer alone, 512 per append) under ``valgrind --tool=cachegrind`` at 50k and 150k
tokens and prints the instructions per token of the difference (start-up cancels out;
the harness's own token list, about 1,300 per token, stays in). ``--agent N`` /
``--producer N`` run one pass of N tokens and print nothing (what it counts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, figure, finish, meta, progress, pyplot
from unbroken.server import Output, Request, Unbroken
from unbroken.server.agent import Principal
from unbroken.server.producer import Producer
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

TOKEN = "tok{:06d} abcdefghi "[:20]
AIM = 1_000_000
BIG = Retention(max_stream_bytes=1 << 30, max_total_bytes=8 << 30, ttl=3600)


def _tokens(n: int) -> list[str]:
    return [f"tok{i % 1_000_000:06d} abcdefghij"[:20] for i in range(n)]


async def agent_rate(n: int) -> dict[str, Any]:
    """A real hub and agent: ``await out.text(token)`` n times, then the run ends."""
    tokens = _tokens(n)
    app = Unbroken(MemoryStore(BIG), allow_anonymous=True)
    done = asyncio.Event()
    took: dict[str, float] = {}
    gc.collect()  # not the garbage of the run before

    @app.agent("burst")
    async def burst(req: Request, out: Output) -> None:
        text = out.text
        t0, c0 = time.perf_counter(), time.process_time()
        for tok in tokens:
            await text(tok)
        await out.flush()
        took["wall"] = time.perf_counter() - t0
        took["cpu"] = time.process_time() - c0
        done.set()

    app.hub.ensure_started()
    created = await app.hub.start(Principal("bench"), "r", "burst", {})
    await asyncio.wait_for(done.wait(), 300)
    meta_ = await app.store.meta(created.stream)
    assert meta_ is not None and meta_.head >= n, "not every token reached the log"
    await app.hub.shutdown(grace=5.0)
    return {
        "tokens": n,
        "seconds": took["wall"],
        "cpu_seconds": took["cpu"],
        "tokens_per_s": n / took["wall"],
        "cpu_tokens_per_s": n / took["cpu"],
        "mb_per_s": n * 20 / took["wall"] / 1e6,
        "log_bytes": meta_.nbytes,
    }


async def producer_rate(n: int, flush_every: int) -> dict[str, Any]:
    """``Producer.add_chunk`` + a ``flush`` every ``flush_every`` tokens (1 = a paced agent)."""
    tokens = _tokens(n)
    store = MemoryStore(BIG)
    c = await store.create("bench", f"p{flush_every}", 0.0)
    p = Producer(store, c.stream, store.epoch, c.producer)
    add, flush = p.add_chunk, p.flush
    t0, c0 = time.perf_counter(), time.process_time()
    for i, tok in enumerate(tokens, 1):
        add(1, "text", tok)
        if i % flush_every == 0:
            await flush()
    await flush()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    head = (await store.meta(c.stream)).head  # type: ignore[union-attr]
    assert head == n, f"log holds {head} of {n}"
    return {
        "tokens": n,
        "flush_every": flush_every,
        "seconds": dt,
        "cpu_seconds": cpu,
        "tokens_per_s": n / dt,
        "cpu_tokens_per_s": n / cpu,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall rate, and the spread of both rates over the runs:
    ``*_tokens_per_s`` median, ``min_``/``max_`` of the wall rate, ``best_cpu_`` and
    ``median_cpu_`` of the CPU-time rate."""
    rates = sorted(r["tokens_per_s"] for r in runs)
    med = statistics.median(rates)
    pick = min(runs, key=lambda r: abs(r["tokens_per_s"] - med))
    cpu = sorted(r["cpu_tokens_per_s"] for r in runs)
    return {
        **pick,
        "tokens_per_s": med,
        "min_tokens_per_s": rates[0],
        "max_tokens_per_s": rates[-1],
        "median_cpu_tokens_per_s": statistics.median(cpu),
        "best_cpu_tokens_per_s": cpu[-1],
        "all_tokens_per_s": [round(r) for r in rates],
        "all_cpu_tokens_per_s": [round(r) for r in cpu],
        "runs": len(runs),
    }


def run(quick: bool = False) -> dict[str, Any]:
    result = meta()
    n = 100_000 if quick else 1_000_000
    reps = 1 if quick else 5
    steps = 3 * reps
    done = 0
    agent, batched, paced = [], [], []
    for _ in range(reps):
        agent.append(asyncio.run(agent_rate(n)))
        done += 1
        progress(done, steps)
        batched.append(asyncio.run(producer_rate(n, 512)))
        done += 1
        progress(done, steps)
        paced.append(asyncio.run(producer_rate(n // 4, 1)))
        done += 1
        progress(done, steps)
    a = _median(agent)
    result.update(
        benchmark="append",
        token_bytes=20,
        store="MemoryStore",
        agent=a,
        producer_batched=_median(batched),
        producer_one_per_flush=_median(paced),
        aim_tokens_per_s=AIM,
        met=a["median_cpu_tokens_per_s"] >= AIM,
    )
    batched, one = result["producer_batched"], result["producer_one_per_flush"]
    result["figures"] = [
        figure(
            "agent-side append rate (await out.text, memory log), CPU time: median / best",
            f"{a['median_cpu_tokens_per_s']:,.0f} / {a['best_cpu_tokens_per_s']:,.0f}",
            AIM,
            a["median_cpu_tokens_per_s"] >= AIM,
            "tokens/s",
        ),
        figure(
            "agent-side append rate, wall clock: median / best (shared machine)",
            f"{a['tokens_per_s']:,.0f} / {a['max_tokens_per_s']:,.0f}",
            None,
            None,
            "tokens/s",
        ),
        figure(
            "producer alone, 512 tokens per append (CPU time, median)",
            round(batched["median_cpu_tokens_per_s"]),
            None,
            None,
            "tokens/s",
        ),
        figure(
            "producer alone, one append per token (a paced agent; CPU time, median)",
            round(one["median_cpu_tokens_per_s"]),
            None,
            None,
            "tokens/s",
        ),
    ]
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = ["agent (out.text)", "producer, 512/append", "producer, 1/append"]
    keys = ["agent", "producer_batched", "producer_one_per_flush"]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ys = range(len(keys))
    for off, label, med, lo, hi, color in (
        (-0.2, "CPU time", "median_cpu_tokens_per_s", None, "best_cpu_tokens_per_s", "tab:blue"),
        (0.2, "wall clock", "tokens_per_s", "min_tokens_per_s", "max_tokens_per_s", "tab:gray"),
    ):
        vals = [result[k][med] / 1e6 for k in keys]
        low = [result[k][lo] / 1e6 if lo else v for k, v in zip(keys, vals, strict=True)]
        high = [result[k][hi] / 1e6 for k in keys]
        err = [
            [v - a for v, a in zip(vals, low, strict=True)],
            [b - v for v, b in zip(vals, high, strict=True)],
        ]
        ax.barh([y + off for y in ys], vals, height=0.4, xerr=err, color=color, label=label)
    ax.set_yticks(list(ys), names)
    ax.axvline(AIM / 1e6, color="red", ls=":", lw=1, label="aim 1 M tokens/s")
    ax.set_xlabel("million 20-byte tokens/s into the memory log (median; bars: spread)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("Agent-side append rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _irefs(what: str, n: int) -> int:
    """Instructions executed by ``python -m benchmarks.append --<what> n`` (cachegrind)."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", "benchmarks.append", f"--{what}", str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    m = re.search(r"I\s+refs:\s+([\d,]+)", out)
    assert m is not None, out[-2000:]
    return int(m.group(1).replace(",", ""))


def instructions(lo: int = 50_000, hi: int = 150_000) -> dict[str, float]:
    """Instructions per token, agent and producer alone: (Ir(hi) - Ir(lo)) / (hi - lo)."""
    return {
        what: (_irefs(what, hi) - _irefs(what, lo)) / (hi - lo) for what in ("agent", "producer")
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--instructions", action="store_true", help="count under valgrind")
    ap.add_argument("--agent", type=int, metavar="N", help="one agent pass of N tokens")
    ap.add_argument("--producer", type=int, metavar="N", help="one producer pass (512/append)")
    args = ap.parse_args()
    if args.agent:
        asyncio.run(agent_rate(args.agent))
        sys.exit(0)
    if args.producer:
        asyncio.run(producer_rate(args.producer, 512))
        sys.exit(0)
    if args.instructions:
        print(json.dumps({k: round(v) for k, v in instructions().items()}))
        sys.exit(0)
    quick = args.quick
    r = run(quick)
    out = RESULTS / ("append.quick.json" if quick else "append.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    chart(r, out.with_suffix(".png"))
    print(json.dumps(r["figures"], indent=2))
