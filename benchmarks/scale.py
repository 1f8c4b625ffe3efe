"""Scale: one process vs workers + Redis, and three nodes behind HAProxy.

Two parts, in one run (``python -m benchmarks.scale [--quick]``, or through
``python -m benchmarks scale``):

1. **Workers** (``workers`` rows): the concurrency benchmark's paced load
   (:mod:`benchmarks.concurrency`: N streams at 20 tokens/s, one connection per
   stream, 2 raw load-client processes, per-token latency from the production
   time stamped in each token) against, at the same N:
   ``1 process + MemoryStore``, ``1 process + Redis`` and ``2 workers + Redis``
   (``unbroken serve --workers 2``). Reported: p50/p99 token latency, the
   delivered share, the server's CPU (all its processes) in µs per token, the
   redis-server's CPU, RSS. Nothing is pinned: two workers need both cores.
2. **Load balancer** (``lb``): 3 ``unbroken serve`` nodes (Redis) behind Debian's
   HAProxy (round robin, ``/healthz`` checks, redispatch). N paced streams, each
   started on node 2 or 3 directly and followed by a full :class:`unbroken.Client`
   (digests verified) through HAProxy; after a few seconds node 1 is killed
   (SIGKILL). Reported: streams served exact, token latency p50/p99 through the
   LB before the kill, and for the readers that were on node 1 the resume latency
   (the connection's loss → ``resumed`` from another node) and the gap the reader
   saw (last token before the cut → first token after), p50/p99.

The machine has 2 cores shared by the servers, Redis, HAProxy and the load
clients: two workers cannot get a core each, so the workers rows say what a
second process costs and buys here, not what it buys on a bigger box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    PYTHON,
    RESULTS,
    ROOT,
    bench_app,
    figure,
    finish,
    free_port,
    meta,
    progress,
    pyplot,
    summary,
    wait_http,
)

RATE = 20.0
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
REDIS = shutil.which("redis-server")


# ---------------------------------------------------------------- the served app
def _build_redis_app() -> Any:
    """The paced agent of :mod:`benchmarks.paced` on a RedisStore
    (``UNBROKEN_BENCH_REDIS``), served as ``benchmarks.scale:redis_app``."""
    from benchmarks.paced import paced_tokens
    from unbroken.server import Output, Request
    from unbroken.store.base import Retention
    from unbroken.store.redis import RedisStore

    store = RedisStore(
        os.environ["UNBROKEN_BENCH_REDIS"],
        retention=Retention(ttl=60.0),
        lease=float(os.environ.get("UNBROKEN_BENCH_LEASE", "5")),  # the default
        prefix="bench",
    )
    app = bench_app(store)

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        await paced_tokens(int(req.input["n"]), float(req.input["rate"]), out.text)

    return app


def __getattr__(name: str) -> Any:
    # built on first use only: the benchmark's own process imports this module too
    if name == "redis_app":
        app = _build_redis_app()
        globals()["redis_app"] = app
        return app
    raise AttributeError(name)


# ---------------------------------------------------------------- processes
class Group:
    """A process and its children, read as one by :func:`benchmarks.concurrency.measure`
    (CPU times and RSS summed over the workers; no pinning)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.pid = pid  # (measure's py-spy profile, when asked for: the root's)

    def _all(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_times(self) -> Any:
        user = system = 0.0
        for p in self._all():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                user += t.user
                system += t.system
        return argparse.Namespace(user=user, system=system)

    def memory_info(self) -> Any:
        rss = 0
        for p in self._all():
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        return argparse.Namespace(rss=rss)

    def cpu_affinity(self, cpus: list[int]) -> None:  # not pinned: see the docstring
        return None


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, psutil.Process]]:
    """A private redis-server (no persistence) on a free port."""
    assert REDIS is not None, "redis-server not installed"
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", d]
        args += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [REDIS, *args],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", psutil.Process(proc.pid)
        finally:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def serve(
    target: str, env: dict[str, str], *extra: str, port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``unbroken serve TARGET`` (warning logs) on a free port; killed at the end
    (with its workers)."""
    port = port or free_port()
    cmd = [str(Path(PYTHON).parent / "unbroken"), "serve", target, "--port", str(port)]
    cmd += ["--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        wait_http(port)
        yield port, proc
    finally:
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGKILL)
            for k in kids:
                with contextlib.suppress(psutil.Error):
                    k.kill()
        proc.wait(10)


# ---------------------------------------------------------------- part 1: workers
def run_workers(quick: bool) -> list[dict[str, Any]]:
    from benchmarks.concurrency import measure

    # Redis-backed paced streams cost ~2 Redis round trips per token on a node (an
    # append and a read): the loads are where 1 process + Redis is below and at its knee
    loads = [100] if quick else [100, 300]
    duration = 1.0 if quick else 8.0
    rows: list[dict[str, Any]] = []
    with redis_server() as (url, rproc):
        env = {"UNBROKEN_BENCH_REDIS": url}
        shapes = [
            ("1 process + MemoryStore", "benchmarks.paced:app", 1),
            ("1 process + Redis", "benchmarks.scale:redis_app", 1),
            ("2 workers + Redis", "benchmarks.scale:redis_app", 2),
        ]
        for n in loads:
            for shape, target, workers in shapes:
                with serve(target, env, "--workers", str(workers)) as (port, proc):
                    r0 = rproc.cpu_times()
                    t0 = time.monotonic()
                    try:
                        row = measure("unbroken", port, Group(proc.pid), n, n, duration, pin=False)
                    except Exception as exc:
                        row = {"ok": False, "error": repr(exc)}
                    r1 = rproc.cpu_times()
                    took = time.monotonic() - t0
                row.update(shape=shape, workers=workers, streams=n)
                row["redis_cpu_pct"] = round(
                    100 * (r1.user + r1.system - r0.user - r0.system) / took, 1
                )
                row["load_average"] = [round(x, 2) for x in os.getloadavg()]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


# ---------------------------------------------------------------- part 2: the LB
HAPROXY_CFG = """\
global
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout client-fin 5s
    # a refused connection (a dead or draining node) is retried on the next node
    option redispatch 1
    retries 3

frontend unbroken
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""


@contextlib.contextmanager
def haproxy(backends: list[int]) -> Iterator[int]:
    assert HAPROXY is not None
    port = free_port()
    servers = "\n".join(f"    server n{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, 1))
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, servers=servers))
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
        try:
            wait_http(port)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


async def _lb_load(
    nodes: list[int], lb: int, n: int, tokens: int, kill_after: float, victim: Any
) -> dict[str, Any]:
    from unbroken import BackoffPolicy, Client
    from unbroken.client import Stream
    from unbroken.client.response import TextDelta

    policy = BackoffPolicy(base=0.05, cap=0.5, max_attempts=200, deadline=60)
    lb_url = f"ws://127.0.0.1:{lb}/ws"
    lat: list[float] = []  # token latency through the LB before the kill, s
    last_token: dict[int, float] = {}
    gap: list[float] = []
    resume: list[float] = []
    killed_at = [0.0]

    async def one(i: int) -> str:
        start_url = f"ws://127.0.0.1:{nodes[1 + i % 2]}/ws"  # runs on nodes 2 and 3
        async with Client(start_url, policy=policy) as starter:
            st0 = await starter.start("paced", {"n": tokens, "rate": RATE})
            async for _ in st0:
                if st0.cursor is not None and st0.cursor.seq >= 1:
                    break
            cursor = st0.cursor
        assert cursor is not None
        lost_at = [0.0]

        def on_event(ev: Any) -> None:
            if ev.kind == "disconnected" and killed_at[0]:
                lost_at[0] = ev.at
            elif ev.kind == "resumed" and lost_at[0]:
                resume.append(ev.at - lost_at[0])

        client = Client(lb_url, policy=policy)
        client.on_event = on_event
        async with client:
            st: Stream = await client.resume(cursor)
            followed = time.monotonic()  # tokens made before it waited for the handoff
            cut_seen = False
            async for ev in st:
                now = time.monotonic()
                if not isinstance(ev, TextDelta) or len(ev.text) < 20:
                    continue
                text = ev.text
                if lost_at[0] and not cut_seen:
                    cut_seen = True
                    gap.append(now - last_token.get(i, now))
                last_token[i] = now
                if not killed_at[0]:
                    for k in range(0, len(text) - 19, 20):
                        made = float(text[k : k + 14])
                        if made > followed:
                            lat.append(now - made)
            answer = await st.wait()
        ok = answer.status == "completed" and len(answer.text) == 20 * tokens
        return "exact" if ok else f"{answer.status}:{len(answer.text) // 20}"

    async def kill() -> None:
        await asyncio.sleep(kill_after)
        killed_at[0] = time.monotonic()
        victim()

    killer = asyncio.ensure_future(kill())
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    await killer
    outcomes: dict[str, int] = {}
    errors: list[str] = []
    for r in results:
        key = r if isinstance(r, str) else type(r).__name__
        outcomes[key] = outcomes.get(key, 0) + 1
        if isinstance(r, BaseException) and len(errors) < 3:
            errors.append(repr(r))
    return {
        "streams": n,
        "tokens_per_stream": tokens,
        "served_exact": outcomes.get("exact", 0),
        "outcomes": outcomes,
        "errors": errors,
        "token_latency_ms_before_kill": summary([x * 1000 for x in lat]),
        "resumed_after_kill": len(resume),
        "resume_latency_ms": summary([x * 1000 for x in resume]),
        "reader_gap_ms": summary([x * 1000 for x in gap]),
    }


def run_lb(quick: bool) -> dict[str, Any]:
    if HAPROXY is None:
        return {"skipped": "haproxy not installed (apt-get install -y haproxy)"}
    n = 60 if quick else 150
    tokens = int(RATE * (6 if quick else 12))
    with redis_server() as (url, _), contextlib.ExitStack() as stack:
        env = {"UNBROKEN_BENCH_REDIS": url}
        served = [stack.enter_context(serve("benchmarks.scale:redis_app", env)) for _ in range(3)]
        ports = [p for p, _ in served]
        lb = stack.enter_context(haproxy(ports))
        victim = served[0][1]
        t0 = time.monotonic()
        row = asyncio.run(
            _lb_load(ports, lb, n, tokens, 3.0 if quick else 5.0, lambda: victim.kill())
        )
        row["seconds"] = round(time.monotonic() - t0, 1)
    row["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------- the benchmark
def run(quick: bool = False) -> dict[str, Any]:
    result = meta()
    progress(0, 2)
    workers = run_workers(quick)
    progress(1, 2)
    lb = run_lb(quick)
    progress(2, 2)
    by = {(r["shape"], r["streams"]): r for r in workers}
    loads = sorted({r["streams"] for r in workers})
    top = loads[-1]
    one = by.get(("1 process + Redis", top), {})
    two = by.get(("2 workers + Redis", top), {})
    result.update(
        benchmark="scale",
        rate_tokens_per_s=RATE,
        workers=workers,
        lb=lb,
        cores=os.cpu_count(),
        note="2 cores shared by the servers, redis-server, HAProxy and the load clients",
    )
    figures = []
    for n in loads:
        for shape in ("1 process + MemoryStore", "1 process + Redis", "2 workers + Redis"):
            r = by.get((shape, n), {})
            figures.append(
                figure(f"scale: p99 at {n} streams, {shape}", r.get("p99_ms"), None, None, "ms")
            )
    if one.get("p99_ms") and two.get("p99_ms"):
        figures.append(
            figure(
                f"scale: p99 2 workers ÷ 1 process (Redis, {top} streams)",
                round(two["p99_ms"] / one["p99_ms"], 2),
                None,
                None,
                "×",
            )
        )
    if "streams" in lb:
        figures += [
            figure(
                "scale: LB streams served exact",
                f"{lb['served_exact']}/{lb['streams']}",
                None,
                None,
            ),
            figure(
                "scale: LB resume latency p50 after a node kill",
                lb["resume_latency_ms"].get("p50"),
                None,
                None,
                "ms",
            ),
            figure(
                "scale: LB resume latency p99 after a node kill",
                lb["resume_latency_ms"].get("p99"),
                None,
                None,
                "ms",
            ),
        ]
    result["figures"] = figures
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    shapes = ("1 process + MemoryStore", "1 process + Redis", "2 workers + Redis")
    loads = sorted({r["streams"] for r in result["workers"]})
    width = 0.8 / len(shapes)
    for k, shape in enumerate(shapes):
        vals = [
            next(
                (
                    r.get("p99_ms") or 0
                    for r in result["workers"]
                    if r["shape"] == shape and r["streams"] == n
                ),
                0,
            )
            for n in loads
        ]
        ax1.bar([i + k * width for i in range(len(loads))], vals, width, label=shape)
    ax1.set_xticks([i + width for i in range(len(loads))], [f"{n} streams" for n in loads])
    ax1.set_ylabel("token latency p99, ms")
    ax1.axhline(100, color="grey", lw=0.8, ls="--")
    ax1.set_title("paced streams (20 tokens/s), 2 cores")
    ax1.legend(fontsize=8)
    lb = result.get("lb", {})
    if "resume_latency_ms" in lb:
        names = ["resume p50", "resume p99", "gap p50", "gap p99"]
        vals = [
            lb["resume_latency_ms"].get("p50", 0),
            lb["resume_latency_ms"].get("p99", 0),
            lb["reader_gap_ms"].get("p50", 0),
            lb["reader_gap_ms"].get("p99", 0),
        ]
        ax2.bar(names, vals, color="tab:orange")
        ax2.set_ylabel("ms")
        ax2.set_title(
            f"3 nodes behind HAProxy, node killed: {lb['served_exact']}/{lb['streams']} exact"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=["all", "workers", "lb"], default="all")
    a = ap.parse_args()
    if a.part == "workers":
        print(json.dumps(run_workers(a.quick), indent=2))
        return
    if a.part == "lb":
        print(json.dumps(run_lb(a.quick), indent=2))
        return
    res = run(a.quick)
    stem = "scale.quick" if a.quick else "scale"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    chart(res, RESULTS / f"{stem}.png")
    print(json.dumps(res["figures"], indent=2))


if __name__ == "__main__":
    sys.exit(main())
