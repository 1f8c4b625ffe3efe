"""Concurrency ramp: N streams at 20 tokens/s each, per-token latency, server CPU and RSS.

The server runs in its own process: ``unbroken serve benchmarks.paced:app`` or the
bare baseline ``python -m benchmarks.bare`` (a plain ``websockets`` server that sends
the same paced tokens, one message each). Load clients run in separate processes,
each driving many streams over raw ``websockets`` connections (the full ``Client``
would cost the load generator more than the server: the clients share the machine's
2 cores with the server). unbroken's load client speaks protocol v1 with
``ClientSession`` for hello/start and decodes ``events`` frames with msgspec; it does
not verify digests (the server is under test, not the client).

Per-token latency = receive time − the production time embedded in the token (one
machine, one CLOCK_MONOTONIC). A step passes when p99 < 100 ms and ≥ 95 % of the
tokens due in the measured window arrived. Shapes: ``unbroken`` (one connection
per stream, as browsers do), ``bare`` (the same), ``unbroken_mux`` (many streams
multiplexed on a few connections: a backend client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import subprocess
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil

from benchmarks.common import (
    RESULTS,
    cpu_seconds,
    finish,
    meta,
    module_server,
    progress,
    rss_mb,
    unbroken_server,
)

RATE = 20.0
AIM_P99_MS = 100.0
CLIENT_PROCS = 2


class _Frame(msgspec.Struct):
    items: list[Any] = []


async def _client(
    kind: str,
    port: int,
    streams: int,
    conns: int,
    n_tokens: int,
    window: tuple[float, float],
    spread: float,
    go: Any,
    go_at: Any,
    ready: Any,
) -> dict[str, Any]:
    from websockets.asyncio.client import ClientConnection, connect

    from unbroken.protocol.client_session import ClientSession
    from unbroken.protocol.frames import encode

    lat, sched = array("d"), array("d")
    state = {"received": 0, "errors": 0}
    expected = streams * n_tokens
    done = asyncio.Event()
    w0, w1 = window
    path = "/ws" if kind != "bare" else "/"
    sem = asyncio.Semaphore(64)

    async def open_one() -> tuple[ClientConnection, ClientSession | None]:
        async with sem:
            ws = await connect(
                f"ws://127.0.0.1:{port}{path}",
                subprotocols=["unbroken.v1"] if kind != "bare" else None,  # type: ignore[list-item]
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=60,
            )
            if kind == "bare":
                return ws, None
            cs = ClientSession(caps=("batch",))  # as the Python client: frames share messages
            await ws.send(encode(cs.connect()).decode())
            cs.receive(await ws.recv())
            for f in cs.after_welcome():
                await ws.send(encode(f).decode())
            return ws, cs

    def record(now: float, tok: str) -> None:
        state["received"] += 1
        p = float(tok[:14])
        if w0 <= p < w1:
            lat.append(now - p)
            sched.append(now - p + int(tok[14:19]) / 1000)
        if state["received"] >= expected:
            done.set()

    async def read(ws: ClientConnection) -> None:
        decode = msgspec.json.Decoder(_Frame).decode
        mono = time.monotonic
        with contextlib.suppress(Exception):
            async for msg in ws:
                now = mono()
                if kind == "bare":
                    if msg != "END":
                        record(now, str(msg))
                elif isinstance(msg, str) and msg.startswith('{"t":"events"'):
                    # with the batch cap one message may hold several frames, one per line
                    for line in msg.split("\n"):
                        if not line.startswith('{"t":"events"'):
                            continue
                        for item in decode(line).items:
                            if type(item) is dict:
                                if item.get("k") != "text":
                                    continue
                                item = item["d"]
                            # the producer may coalesce several tokens into one chunk
                            for k in range(0, len(item) - 19, 20):
                                record(now, item[k : k + 20])

    tag = os.urandom(6).hex()
    pairs = await asyncio.gather(*(open_one() for _ in range(conns)), return_exceptions=True)
    links = [p for p in pairs if not isinstance(p, BaseException)]
    state["errors"] += len(pairs) - len(links)
    readers = [asyncio.ensure_future(read(ws)) for ws, _ in links]
    ready.put(len(links))
    await asyncio.to_thread(go.wait, 120)
    start = go_at.value
    groups = 50
    per_group = math.ceil(streams / groups)
    for g in range(groups):
        delay = start + g * spread / groups - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for i in range(g * per_group, min(streams, (g + 1) * per_group)):
            if not links:
                break
            ws, cs = links[i % len(links)]
            inp = {"n": n_tokens, "rate": RATE}
            try:
                if cs is None:
                    await ws.send(json.dumps(inp))
                else:
                    # req ids are per principal: unique across load processes
                    f = cs.start(f"{tag}-{i}", "paced", inp)
                    assert f is not None
                    await ws.send(encode(f).decode())
            except Exception:
                state["errors"] += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), max(1.0, w1 + 5 - time.monotonic()))
    for r in readers:
        r.cancel()
    for ws, _ in links:
        ws.transport.abort()
    return {
        "lat": lat.tobytes(),
        "sched": sched.tobytes(),
        "received": state["received"],
        "errors": state["errors"],
    }


def _client_main(args: tuple[Any, ...], out: Any, cpus: set[int] | None = None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    out.put(asyncio.run(_client(*args)))


def pin_plan() -> tuple[set[int], set[int]] | None:
    """(server CPUs, load-client CPUs): the server gets a core of its own, so that
    what is measured is its capacity, not how the scheduler shares the cores with
    the load generator. ``None`` on a single-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def measure(
    kind: str,
    port: int,
    server: Any,
    streams: int,
    conns: int,
    duration: float,
    pin: bool = True,
    profile: Path | None = None,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    spread, warm = (1.0, 1.5) if duration > 2 else (0.5, 0.5)
    n_tokens = math.ceil(RATE * (spread + warm + duration)) + 2
    go, go_at, ready, out = ctx.Event(), ctx.Value("d", 0.0), ctx.Queue(), ctx.Queue()
    procs = []
    setup = time.monotonic()
    # the window is only known at go time: clients read it from go_at (set before go)
    for k in range(CLIENT_PROCS):
        share = streams // CLIENT_PROCS + (1 if k < streams % CLIENT_PROCS else 0)
        cshare = max(1, conns // CLIENT_PROCS)
        procs.append((share, cshare))
    # window relative to go: pass as offsets, resolved in the parent once go_at is known
    go_time = None
    workers = []
    # start processes with a placeholder window; it is sent as absolute times via go_at
    # (clients compute it the same way)
    for share, cshare in procs:
        workers.append((share, cshare))
    # simple approach: decide go time far enough ahead for connecting
    est = 1.5 + streams / 1500
    go_time = time.monotonic() + est
    w0 = go_time + spread + warm
    w1 = w0 + duration
    ps = []
    plan = pin_plan() if pin else None
    if plan:
        server.cpu_affinity(sorted(plan[0]))
    for share, cshare in workers:
        args = (kind, port, share, cshare, n_tokens, (w0, w1), spread, go, go_at, ready)
        p = ctx.Process(target=_client_main, args=(args, out, plan[1] if plan else None))
        p.daemon = True
        p.start()
        ps.append(p)
    connected = sum(ready.get(timeout=120) for _ in ps)
    late = time.monotonic() > go_time
    go_at.value = max(go_time, time.monotonic())
    go.set()
    shift = go_at.value - go_time  # > 0 only when connecting took longer than estimated
    w0 += shift
    w1 += shift
    time.sleep(max(0.0, w0 - time.monotonic()))
    clients = [psutil.Process(p.pid) for p in ps]
    cpu0, t0 = cpu_seconds(server), time.monotonic()
    ccpu0 = sum(cpu_seconds(c) for c in clients)
    psutil.cpu_percent()
    with py_spy(server.pid, duration, profile):
        time.sleep(max(0.0, w1 - time.monotonic()))
        cpu1, t1 = cpu_seconds(server), time.monotonic()
    ccpu1 = sum(cpu_seconds(c) for c in clients)
    machine = psutil.cpu_percent() * (os.cpu_count() or 1)
    rss = rss_mb(server)
    res = [out.get(timeout=60 + duration) for _ in ps]
    for p in ps:
        p.join(10)
        if p.is_alive():
            p.kill()
    lat, sched = array("d"), array("d")
    for r in res:
        lat.frombytes(r["lat"])
        sched.frombytes(r["sched"])
    ls, ss = sorted(lat), sorted(sched)
    n = len(ls)

    def q(s: list[float], x: float) -> float:
        return round(s[min(len(s) - 1, int(x * len(s)))] * 1000, 2) if s else float("nan")

    due = streams * RATE * duration
    # a late connect shifts the window too: its tokens are then produced late as well
    delivered = n / due if due else 0.0
    p99 = q(ls, 0.99)
    return {
        "kind": kind,
        "streams": streams,
        "connections": connected,
        "window_s": duration,
        "tokens_in_window": n,
        "delivered_fraction": round(delivered, 3),
        "p50_ms": q(ls, 0.5),
        "p95_ms": q(ls, 0.95),
        "p99_ms": p99,
        "max_ms": q(ls, 1.0),
        "p99_vs_schedule_ms": q(ss, 0.99),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "server_rss_mb": rss,
        "server_cpu_us_per_token": round(1e6 * (cpu1 - cpu0) / n, 1) if n else None,
        "clients_cpu_pct": round(100 * (ccpu1 - ccpu0) / (t1 - t0), 1),
        "machine_cpu_pct_of_200": round(machine, 1),
        "client_errors": sum(r["errors"] for r in res),
        "connect_s": round(time.monotonic() - setup - duration, 1),
        "connect_late": late,
        "ok": bool(n) and p99 < AIM_P99_MS and delivered >= 0.95,
    }


@contextlib.contextmanager
def server_for(kind: str) -> Iterator[tuple[int, psutil.Process]]:
    """The server of a shape: both on uvloop (``unbroken serve`` picks it by default)."""
    if kind == "bare":
        with module_server("benchmarks.bare", "--loop", "uvloop") as served:
            yield served
    else:
        # admission is not under test: a start burst on a loaded machine must not be
        # refused for loop lag (the load clients do not retry)
        with unbroken_server("benchmarks.paced:app", "--max-loop-lag", "30") as served:
            yield served


@contextlib.contextmanager
def py_spy(pid: int, seconds: float, out: Path | None) -> Iterator[None]:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (collapsed stacks;
    a measuring aid, not a dependency: nothing when ``out`` is None)."""
    if out is None:
        yield
        return
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    cmd += ["--format", "raw", "--output", str(out), "--rate", "200", "--nonblocking"]
    cmd += ["--function"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(30 + seconds)


def top_frames(collapsed: Path, n: int = 25) -> list[tuple[str, float, float]]:
    """``(function, self %, total %)`` of a py-spy collapsed profile, by self time
    (the idle loop's ``select`` included: the shares are of all samples)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        samples += k
        frames = stack.split(";")
        leaf = frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")
        own[leaf] = own.get(leaf, 0) + k
        for f in {fr.split(" (")[0] + " " + fr.rsplit("/", 1)[-1].rstrip(")") for fr in frames}:
            total[f] = total.get(f, 0) + k
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:n]
    return [(f, round(100 * c / samples, 1), round(100 * total[f] / samples, 1)) for f, c in rows]


def run_at(n: int, duration: float, profile: Path | None) -> dict[str, Any]:
    """Unbroken and the bare server at one N, back to back (server CPU per token
    where neither is saturated), with a py-spy profile of unbroken's server."""
    result = meta()
    rows = []
    for kind in ("unbroken", "bare"):
        with server_for(kind) as (port, proc):
            out = profile if kind == "unbroken" else None
            row = measure(kind, port, proc, n, n, duration, profile=out)
        row["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(row), flush=True)
        rows.append(row)
    u, b = rows
    result.update(benchmark="concurrency_at", streams=n, steps=rows)
    if u.get("server_cpu_us_per_token") and b.get("server_cpu_us_per_token"):
        result["cpu_per_token_vs_bare"] = round(
            u["server_cpu_us_per_token"] / b["server_cpu_us_per_token"], 2
        )
        result["rss_vs_bare"] = round(u["server_rss_mb"] / b["server_rss_mb"], 2)
    if profile is not None and profile.exists():
        result["profile_top"] = top_frames(profile)
    return result


def run(quick: bool = False) -> dict[str, Any]:
    result = meta()
    if quick:
        steps = [200]
        mux_steps = [300]
        duration = 1.0
    else:
        steps = [250, 500, 750, 1000, 1500, 2000, 3000, 5000, 8000]
        mux_steps = [1000, 2000, 3000, 5000, 10000, 20000]
        duration = 8.0
    plan = [(n, k) for n in steps for k in ("unbroken", "bare")]
    plan += [(n, "unbroken_mux") for n in mux_steps]
    rows: list[dict[str, Any]] = []
    failed: set[str] = set()
    for i, (n, kind) in enumerate(plan):
        progress(i, len(plan))
        if kind in failed:
            continue
        conns = n if kind != "unbroken_mux" else 8
        try:
            with server_for(kind) as (port, proc):
                row = measure(kind, port, proc, n, conns, duration)
        except Exception as exc:  # a step that cannot run ends that shape's ramp
            row = {"kind": kind, "streams": n, "ok": False, "error": repr(exc)}
        row["load_average"] = [round(x, 2) for x in os.getloadavg()]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not row["ok"]:
            failed.add(kind)
    progress(len(plan), len(plan))

    def largest(kind: str) -> int:
        ok = [r["streams"] for r in rows if r["kind"] == kind and r["ok"]]
        return max(ok) if ok else 0

    n_u, n_b, n_m = largest("unbroken"), largest("bare"), largest("unbroken_mux")
    result.update(
        benchmark="concurrency",
        rate_tokens_per_s=RATE,
        token_bytes=20,
        client_processes=CLIENT_PROCS,
        load_client="raw websockets + ClientSession (hello/start), msgspec decode, no digest check",
        steps=rows,
        largest_n_p99_under_100ms={"unbroken": n_u, "bare": n_b, "unbroken_mux": n_m},
        ratio_vs_bare=round(n_u / n_b, 2) if n_b else None,
        aims={
            "ratio_vs_bare": 2.0,
            "unbroken_streams": 5000,
            "unbroken_mux_streams": 20000,
        },
        met={
            "ratio_vs_bare": bool(n_b) and n_u >= 2 * n_b,
            "unbroken_streams": n_u >= 5000,
            "unbroken_mux_streams": n_m >= 20000,
        },
    )
    last = {r["kind"]: r for r in rows if "p99_ms" in r}
    result["figures"] = [
        {
            "name": "concurrency: largest N with p99 < 100 ms, unbroken",
            "value": n_u,
            "aim": 5000,
            "met": n_u >= 5000,
            "unit": "streams",
        },
        {
            "name": "concurrency: largest N with p99 < 100 ms, bare websockets",
            "value": n_b,
            "aim": None,
            "met": None,
            "unit": "streams",
        },
        {
            "name": "concurrency: unbroken N ÷ bare N",
            "value": result["ratio_vs_bare"],
            "aim": 2.0,
            "met": result["met"]["ratio_vs_bare"],
            "unit": "×",
        },
        {
            "name": "concurrency: largest N multiplexed on 8 connections",
            "value": n_m,
            "aim": 20000,
            "met": n_m >= 20000,
            "unit": "streams",
        },
    ]
    result["last_step"] = last
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"unbroken": "o-", "bare": "s--", "unbroken_mux": "^-."}
    colors = {"unbroken": "tab:blue", "bare": "tab:orange", "unbroken_mux": "tab:green"}
    for kind, style in styles.items():
        c = colors[kind]
        rows = [r for r in result["steps"] if r["kind"] == kind and "p99_ms" in r]
        if not rows:
            continue
        xs = [r["streams"] for r in rows]
        ax.plot(xs, [r["p99_ms"] for r in rows], style, color=c, label=f"{kind} p99")
        ax.plot(xs, [r["p50_ms"] for r in rows], style, color=c, alpha=0.35, label=f"{kind} p50")
        ax2.plot(xs, [r["server_cpu_pct"] for r in rows], style, color=c, label=f"{kind} server")
        ax2.plot(
            xs,
            [r.get("machine_cpu_pct_of_200", float("nan")) / 2 for r in rows],
            style,
            color=c,
            alpha=0.3,
            label=f"{kind}: whole machine (of 2 cores)",
        )
    ax.axhline(AIM_P99_MS, color="red", lw=0.8, ls=":", label="100 ms")
    ax.set(xlabel="concurrent streams (20 tokens/s each)", ylabel="per-token latency, ms")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Per-token latency")
    ax2.set(xlabel="concurrent streams", ylabel="CPU, %", ylim=(0, 105))
    ax2.set_xscale("log")
    ax2.legend(fontsize=7)
    ax2.set_title("Server CPU (% of one core) and machine CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--at", type=int, help="only N streams: unbroken vs bare, back to back")
    ap.add_argument("--duration", type=float, default=8.0, help="with --at: the window, s")
    ap.add_argument("--profile", type=Path, help="with --at: py-spy collapsed stacks here")
    a = ap.parse_args()
    if a.at:
        r = run_at(a.at, a.duration, a.profile)
        out = RESULTS / f"concurrency_at_{a.at}.json"
        out.write_text(json.dumps(r, indent=2) + "\n")
        for f, own, tot in r.get("profile_top", []):
            print(f"{own:5.1f} {tot:5.1f}  {f}")
        raise SystemExit(0)
    r = run(a.quick)
    out = RESULTS / ("concurrency.quick.json" if a.quick else "concurrency.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    chart(r, out.with_suffix(".png"))
