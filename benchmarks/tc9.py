"""Server CPU cost of recovery in TC9's shape: 1,000 streams on 100 connections, all cut.

The chaos matrix's TC9 (1,000 small streams over 100 connections, one network event)
measured its recovery overhead with the server in a thread of the harness's process,
against the best of two fault-free runs: +4 to +88 % from run to run. Here the same
work runs twice per repeat, interleaved: clean, and with every connection cut (rst)
once mid-answer (100 reconnections, 1,000 resumes). The server is ``unbroken serve
benchmarks.paced:app`` in its own process and what is compared is its **process CPU
time** (user + system, psutil) for the whole run, which a loaded machine stretches far
less than wall time. Every answer must end complete and verified (the clients check
the digest chain).

Figures: the overhead from the medians (cut ÷ clean − 1) and from the minimums (the
least disturbed run of each kind), over ``--repeats`` pairs.

Run: ``.venv/bin/python -m benchmarks.tc9 [--quick] [--repeats N]`` (also ``python -m
benchmarks tc9``). Writes ``benchmarks/results/tc9.json`` and ``tc9.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    RESULTS,
    cpu_seconds,
    figure,
    finish,
    meta,
    progress,
    pyplot,
    unbroken_server,
)
from unbroken import BackoffPolicy
from unbroken.chaos import FaultProxy
from unbroken.client import Client

AIM_PCT = 10.0


def _policy() -> BackoffPolicy:
    return BackoffPolicy(base=0.05, cap=1.0, max_attempts=None, deadline=None)


async def _workload(
    port: int,
    server: psutil.Process,
    clients: int,
    per_client: int,
    tokens: int,
    rate: float,
    cut: bool,
) -> dict[str, Any]:
    async with FaultProxy(upstream=("127.0.0.1", port)) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        async with contextlib.AsyncExitStack() as stack:
            cs = [
                await stack.enter_async_context(Client(url, policy=_policy()))
                for _ in range(clients)
            ]
            cpu0 = cpu_seconds(server)
            t0 = time.monotonic()
            sts = await asyncio.gather(
                *(
                    c.start("paced", {"n": tokens, "rate": rate})
                    for c in cs
                    for _ in range(per_client)
                )
            )
            waits = asyncio.gather(*(st.wait() for st in sts), return_exceptions=True)
            if cut:  # mid-answer: about half the tokens are out
                await asyncio.sleep(tokens / rate / 2)
                running = sum(1 for st in sts if not st.done)
                await proxy.cut_all("rst")
            answers = await asyncio.wait_for(waits, 120)
            took = time.monotonic() - t0
            cpu = cpu_seconds(server) - cpu0
            events = [ev.kind for c in cs for ev in c.history if ev.at >= t0]
            resumed, connects = events.count("resumed"), events.count("connected")
    complete = sum(1 for a in answers if not isinstance(a, BaseException) and a.complete)
    return {
        "cut": cut,
        "server_cpu_s": round(cpu, 3),
        "seconds": round(took, 2),
        "streams": len(sts),
        "complete": complete,
        "running_at_cut": running if cut else 0,
        "resumes": resumed,
        "reconnects": connects,
        "connections_seen": len(proxy.history),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    clients, per_client = (20, 5) if quick else (100, 10)
    tokens, rate = (40, 20.0) if quick else (50, 5.0)
    reps = repeats or (1 if quick else 5)
    res = meta()
    runs: list[dict[str, Any]] = []
    with unbroken_server("benchmarks.paced:app") as (port, server):
        # a warm-up pair (imports, first-use caches), not counted
        for cut in (False, True):
            asyncio.run(_workload(port, server, clients, per_client, tokens // 4, rate, cut))
        for _ in range(reps):
            for cut in (False, True):  # interleaved: drift hits both alike
                progress(len(runs), 2 * reps)
                runs.append(
                    asyncio.run(_workload(port, server, clients, per_client, tokens, rate, cut))
                )
    # a pair counts when its cut found at least 90 % of the answers running (a loop
    # late by seconds can cut after they ended: nothing was resumed, nothing measured)
    pairs_ok = [
        (k, c)
        for k, c in zip(runs[0::2], runs[1::2], strict=True)
        if c["running_at_cut"] >= 0.9 * c["streams"]
    ]
    if not pairs_ok:
        raise RuntimeError("no cut found the answers running: the clients' loop was too late")
    clean = [k["server_cpu_s"] for k, _ in pairs_ok]
    cuts = [c["server_cpu_s"] for _, c in pairs_ok]
    med = 100 * (statistics.median(cuts) / statistics.median(clean) - 1)
    low = 100 * (min(cuts) / min(clean) - 1)
    pairs = [100 * (c / k - 1) for k, c in zip(clean, cuts, strict=True)]
    res.update(
        benchmark="tc9",
        clients=clients,
        streams_per_client=per_client,
        tokens_per_stream=tokens,
        rate=rate,
        repeats=reps,
        pairs_counted=len(pairs_ok),
        runs=runs,
        server_cpu_s_clean={"median": statistics.median(clean), "min": min(clean)},
        server_cpu_s_cut={"median": statistics.median(cuts), "min": min(cuts)},
        overhead_pct_median=round(med, 2),
        overhead_pct_min=round(low, 2),
        overhead_pct_pairs=[round(x, 1) for x in pairs],
        overhead_pct_pairs_median=round(statistics.median(pairs), 2),
        extra_cpu_ms_per_resume=round(
            1000 * (statistics.median(cuts) - statistics.median(clean)) / (clients * per_client), 3
        ),
        all_complete=all(r["complete"] == r["streams"] for r in runs),
        aim_pct=AIM_PCT,
    )
    n = clients * per_client
    res["figures"] = [
        figure(
            f"TC9 shape: server CPU, {n:,} streams on {clients} connections all cut once "
            "÷ clean − 1 (median / min)",
            f"{med:+.1f} / {low:+.1f}",
            f"≤ +{AIM_PCT:g}",
            med <= AIM_PCT and res["all_complete"],
            "%",
        ),
    ]
    return finish(res)


def chart(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    runs = res["runs"]
    clean = [r["server_cpu_s"] for r in runs if not r["cut"]]
    cuts = [r["server_cpu_s"] for r in runs if r["cut"]]
    xs = range(1, len(clean) + 1)
    ax.plot(xs, clean, "o-", label="clean")
    ax.plot(xs, cuts, "s-", label="every connection cut once")
    ax.set(
        xlabel="repeat (interleaved)",
        ylabel="server process CPU s",
        title=f"TC9 shape: recovery overhead {res['overhead_pct_median']:+.1f} % (median)",
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args()
    r = run(a.quick, a.repeats)
    out = RESULTS / ("tc9.quick.json" if a.quick else "tc9.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    chart(r, out.with_suffix(".png"))
    print(json.dumps(r["figures"], indent=2))
