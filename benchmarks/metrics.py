"""The cost of metrics on the hot path: tokens/s delivered with metrics on vs off.

Three servers run side by side, each in a child process (uvicorn, websockets-sansio,
the app of :mod:`benchmarks.server`):

- **on**: metrics registered, served at ``/metrics`` and scraped every ``SCRAPE_EVERY``
  seconds by a scraper process of its own (15 times as often as Prometheus' usual 15 s);
- **off**: ``observe.disable_metrics()``: nothing registered or served; the hot paths
  still bump their plain integers (:class:`unbroken.observe.counts.Counts`, a ``+=`` per
  frame sent or received), which is all that is left of metrics there;
- **before**: the commit before ``unbroken/observe`` existed (extracted with ``git
  archive``): no hooks at all. on ÷ before is the whole cost.

Each round, in rotating order, ``STREAMS`` clients (one connection each, raw: frames
received and acked, not decoded; see ``benchmarks.server.Client``) start an agent that
writes ``n`` 20-byte tokens and yields to the event loop after each one, as an agent
awaiting a model does; tokens/s = all tokens ÷ the time until every end arrived, and
tokens per CPU second of the server process (steadier than wall time on a shared
machine). Figures are medians over rounds of the per-round ratios (aim ≥ 0.97). Also
measured in-process (best of 7): the hooks' cost per frame, and one scrape's render.

Run: ``.venv/bin/python -m benchmarks.metrics [--quick]`` (also ``python -m benchmarks
metrics``). Writes ``benchmarks/results/metrics[.quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.common import (
    RESULTS,
    ROOT,
    cpu_seconds,
    figure,
    finish,
    meta,
    progress,
    pyplot,
)

AIM = 0.97
STREAMS = 8
SCRAPE_EVERY = 1.0


#: The server of each arm, run with ``python -c`` in the tree under test (the baseline's
#: tree has no observe package: it is the code before metrics existed).
SERVER = """
import socket, sys
import uvicorn
from benchmarks.server import build_app

role = sys.argv[1]
app = build_app()
if role == "on":
    app.metrics_path = "/metrics"
elif role == "off":
    app.observe.disable_metrics()
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(4096)
config = uvicorn.Config(
    app.asgi(), ws="websockets-sansio", ws_max_size=app.limits.max_frame,
    ws_per_message_deflate=False, ws_ping_interval=None, log_level="warning", lifespan="on",
)
print(f"READY {sock.getsockname()[1]}", flush=True)
uvicorn.Server(config).run(sockets=[sock])
"""


def baseline_tree(dest: Path) -> str:
    """Extract the commit before ``unbroken/observe`` was added into ``dest``; its id."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "unbroken/observe/__init__.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()[-1]  # fmt: skip
    base = f"{added}^"
    archive = subprocess.run(
        ["git", "archive", base, "unbroken", "benchmarks"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", base], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return rev.stdout.strip()


@contextlib.asynccontextmanager
async def child(role: str, tree: Path = ROOT) -> AsyncIterator[tuple[int, psutil.Process]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, role,
        stdout=asyncio.subprocess.PIPE, cwd=tree, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"READY "), line
        yield int(line.split()[1]), psutil.Process(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 15)
        if proc.returncode is None:
            proc.kill()


#: The scraper: its own process (its CPU is not the load clients'), running through every
#: arm's rounds alike; only the "on" server answers it with metrics.
SCRAPER = """
import sys, time, urllib.request
url, every = sys.argv[1], float(sys.argv[2])
n = 0
while True:
    with urllib.request.urlopen(url) as r:
        assert r.status == 200 and b"unbroken_events_out_total" in r.read()
    n += 1
    print(n, flush=True)
    time.sleep(every)
"""


@contextlib.asynccontextmanager
async def scraper(port: int) -> AsyncIterator[list[int]]:
    """Scrape ``/metrics`` every ``SCRAPE_EVERY`` s; yields [scrapes so far]."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(SCRAPE_EVERY),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    count = [0]

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            count[0] = int(line)

    reader = asyncio.ensure_future(read())
    try:
        yield count
    finally:
        proc.terminate()
        await proc.wait()
        await reader


async def one_round(port: int, proc: psutil.Process, n: int) -> dict[str, float]:
    """``STREAMS`` streams of ``n`` tokens at once; tokens/s delivered to all of them,
    and tokens per CPU second of the server process (steadier on a loaded machine)."""
    from benchmarks.server import Client

    clients = [await Client.open(port) for _ in range(STREAMS)]

    async def one(c: Client, i: int) -> None:
        await c.start(f"r{time.monotonic_ns()}-{i}", "tokens", {"n": n, "yield_every": 1})
        await c.drain(verify=False)

    t0, c0 = time.perf_counter(), cpu_seconds(proc)
    await asyncio.gather(*(one(c, i) for i, c in enumerate(clients)))
    dt, cpu = time.perf_counter() - t0, cpu_seconds(proc) - c0
    for c in clients:
        await c.ws.close()
    return {
        "seconds": dt,
        "tokens_per_s": STREAMS * n / dt,
        "server_cpu_s": cpu,
        "tokens_per_cpu_s": STREAMS * n / cpu,
    }


ARMS = ("on", "off", "base")


async def measure(n: int, rounds: int, base_tree: Path) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    async with (
        child("on") as on,
        child("off") as off,
        child("base", base_tree) as base,
        httpx.AsyncClient() as http,
        scraper(on[0]) as scrapes,
    ):
        servers = {"on": on, "off": off, "base": base}
        for arm in ("off", "base"):  # they serve no /metrics
            r = await http.get(f"http://127.0.0.1:{servers[arm][0]}/metrics")
            assert r.status_code == 404, (arm, r.status_code)
        for arm in ARMS:  # warm-up
            await one_round(*servers[arm], n // 4)
        for i in range(rounds):
            order = ARMS[i % 3 :] + ARMS[: i % 3]  # each arm first, second and last in turn
            for arm in order:
                runs[arm].append(await one_round(*servers[arm], n))
            progress(i + 1, rounds)
        assert scrapes[0] > 0, "the scraper never got /metrics"
        runs["scrapes"] = [{"n": float(scrapes[0])}]
    return runs


def micro(reps: int = 7) -> dict[str, float]:
    """In-process, best of ``reps`` (steady on a loaded machine): the hot-path hooks of one
    frame sent and one received (two ``+=`` on plain counters and one for the events),
    and one scrape's render of a busy app's metrics."""
    import timeit

    from prometheus_client import generate_latest

    from unbroken.observe import Counts
    from unbroken.server import Unbroken

    counts, data = Counts(), b"x" * 160
    n = 200_000
    loop = "for _ in r: pass"
    hooks = "for _ in r: c.bytes_out += len(d); c.events_out += 3; c.bytes_in += 40"
    env = {"r": range(n), "c": counts, "d": data}
    empty = min(timeit.repeat(loop, globals=env, number=1, repeat=reps))
    full = min(timeit.repeat(hooks, globals=env, number=1, repeat=reps))
    app = Unbroken(allow_anonymous=True)
    counts = app.observe.counts
    counts.connections, counts.bytes_out, counts.events_out = 10_000, 1 << 40, 1 << 30
    for i in range(12):
        counts.recovery(0.001 * 3**i)
        counts.refusals[f"r{i % 6}"] = i
        counts.disconnects[str(4000 + i)] = i
    registry = app.observe.registry
    assert registry is not None
    size = len(generate_latest(registry))
    render = min(timeit.repeat(lambda: generate_latest(registry), number=200, repeat=reps)) / 200
    return {
        "hooks_ns_per_frame": round((full - empty) / n * 1e9, 1),
        "render_us": round(render * 1e6, 1),
        "exposition_bytes": size,
    }


def _ratios(runs: dict[str, list[dict[str, float]]], a: str, b: str, key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)]


def run(quick: bool = False) -> dict[str, Any]:
    result = meta()
    n = 15_000 if quick else 40_000
    rounds = 9 if quick else 12
    hot = micro()
    with tempfile.TemporaryDirectory(prefix="unbroken-base-") as tmp:
        base_rev = baseline_tree(Path(tmp))
        runs = asyncio.run(measure(n, rounds, Path(tmp)))
    ratios = {
        f"{a}_{b}_{unit}": _ratios(runs, a, b, key)
        for a, b in (("on", "off"), ("on", "base"))
        for unit, key in (("wall", "tokens_per_s"), ("cpu", "tokens_per_cpu_s"))
    }
    med = {k: statistics.median(v) for k, v in ratios.items()}
    rate = {arm: statistics.median(r["tokens_per_s"] for r in runs[arm]) for arm in ARMS}
    result.update(
        benchmark="metrics",
        streams=STREAMS,
        tokens_per_stream=n,
        token_bytes=20,
        rounds=rounds,
        scrape_every_s=SCRAPE_EVERY,
        baseline_commit=base_rev,
        shape="live: the agent yields after every token; raw client (frames acked, not decoded)",
        runs=runs,
        ratios={k: [round(x, 4) for x in v] for k, v in ratios.items()},
        medians={k: round(v, 4) for k, v in med.items()},
        tokens_per_s={k: round(v) for k, v in rate.items()},
        micro=hot,
        # the cost the micro figures predict at the "on" rate: hooks on every frame (about
        # one per token in this shape) and SCRAPE_EVERY's renders, as a share of one core
        predicted_overhead=round(
            hot["hooks_ns_per_frame"] * 1e-9 * rate["on"] + hot["render_us"] * 1e-6 / SCRAPE_EVERY,
            4,
        ),
        aim=AIM,
        met=med["on_off_wall"] >= AIM,
    )
    result["figures"] = [
        figure(
            f"tokens/s delivered, metrics on (scraped every {SCRAPE_EVERY:g} s) ÷ off",
            round(med["on_off_wall"], 3),
            AIM,
            med["on_off_wall"] >= AIM,
            "×",
        ),
        figure(
            f"tokens/s delivered, metrics on ÷ before metrics ({base_rev})",
            round(med["on_base_wall"], 3),
            AIM,
            med["on_base_wall"] >= AIM,
            "×",
        ),
        figure(
            "tokens per server CPU second, on ÷ off / on ÷ before metrics",
            f"{med['on_off_cpu']:.3f} / {med['on_base_cpu']:.3f}",
            AIM,
            min(med["on_off_cpu"], med["on_base_cpu"]) >= AIM,
            "×",
        ),
        figure("tokens/s delivered, metrics on", round(rate["on"]), None, None, "tokens/s"),
        figure(
            "hot-path hooks per frame (in-process, best of 7)",
            hot["hooks_ns_per_frame"],
            None,
            None,
            "ns",
        ),
        figure("one /metrics render (in-process, best of 7)", hot["render_us"], None, None, "µs"),
    ]
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.0, 3.4))
    labels = {
        "on": f"metrics on, scraped every {result['scrape_every_s']:g} s",
        "off": "metrics off",
        "base": f"before metrics ({result['baseline_commit']})",
    }
    for arm, mark in zip(ARMS, "os^", strict=True):
        ys = [r["tokens_per_s"] / 1e3 for r in result["runs"][arm]]
        ax1.plot(range(1, len(ys) + 1), ys, f"{mark}-", label=labels[arm])
    ax1.set_xlabel("round")
    ax1.set_ylabel("thousand tokens/s delivered")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7)
    ax1.set_title(f"{result['streams']} live streams, one server process each")
    names = [
        "on ÷ off\ntokens/s",
        "on ÷ before\ntokens/s",
        "on ÷ off\nper CPU s",
        "on ÷ before\nper CPU s",
    ]
    keys = ["on_off_wall", "on_base_wall", "on_off_cpu", "on_base_cpu"]
    for i, k in enumerate(keys):
        ys = result["ratios"][k]
        ax2.scatter([i] * len(ys), ys, s=12, color="tab:gray", alpha=0.6)
        ax2.hlines(result["medians"][k], i - 0.3, i + 0.3, color="tab:blue", lw=2)
    ax2.axhline(AIM, color="red", ls=":", lw=1, label=f"aim {AIM}")
    ax2.axhline(1.0, color="black", lw=0.5)
    ax2.set_xticks(range(len(keys)), names, fontsize=7)
    ax2.set_ylabel("ratio (dots: rounds, bar: median)")
    ax2.legend(fontsize=8)
    ax2.set_title("Cost of metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    r = run(args.quick)
    out = RESULTS / ("metrics.quick.json" if args.quick else "metrics.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    chart(r, out.with_suffix(".png"))
    print(json.dumps(r["figures"], indent=2))
