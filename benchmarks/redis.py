"""RedisStore figures: append throughput, 10 MB replay, cross-node resume latency,
Redis memory per MB of answer, end to end vs MemoryStore.

Run: ``.venv/bin/python -m benchmarks.redis`` (starts a private redis-server;
writes ``benchmarks/results/redis.json``). ``--paced`` runs only the paced append
shape; ``--paced --cluster`` runs it on a private 3-master Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks.common import RESULTS, ROOT, figure, meta, pyplot, summary
from unbroken.protocol.events import Kind
from unbroken.server import Output, Request, Unbroken
from unbroken.server.producer import Producer
from unbroken.store.base import AppendBatch, Created, Retention, StreamLog
from unbroken.store.memory import MemoryStore
from unbroken.store.redis import RedisStore
from unbroken.testing import serve

TOKEN = "tok{:06d} abcdefghi"  # 20 bytes
BIG = Retention(max_stream_bytes=1 << 30, max_total_bytes=8 << 30, ttl=3600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(tmp: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server not found: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while b"Ready to accept connections" not in proc.stdout.readline():
        if time.monotonic() > deadline:
            sys.exit("redis-server did not start")
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0"


async def produce(store: StreamLog, n: int, req: str, batch: int = 512) -> str:
    """Append ``n`` 20-byte tokens as an agent does (an append per ``batch``)."""
    c = await store.create("bench", req, time.time())
    p = Producer(store, c.stream, c.epoch, c.producer)
    for i in range(n):
        p.add_chunk(Kind.TEXT, "text", TOKEN.format(i % 1000000))
        if p.pending >= batch:
            await p.flush()
    await p.finish("completed", "", time.time())
    return c.stream


class _Capture:
    """A stand-in log that keeps the batches a producer appends."""

    def __init__(self) -> None:
        self.batches: list[AppendBatch] = []

    async def append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        self.batches.append(batch)
        return batch.first + batch.count - 1


async def prebuilt(n: int, per: int) -> list[AppendBatch]:
    """The batches a producer appends for ``n`` tokens, ``per`` tokens each."""
    cap = _Capture()
    p = Producer(cap, "s", "e", "t")  # type: ignore[arg-type]
    for i in range(n):
        p.add_chunk(Kind.TEXT, "text", TOKEN.format(i % 1000000))
        if p.pending >= per:
            await p.flush()
    await p.flush()
    p.abandon()
    return cap.batches


async def store_append(
    url: str, n: int, streams: int, per: int, cluster: bool = False
) -> dict[str, Any]:
    """Store-level appends of prebuilt batches: ``n`` tokens over ``streams`` streams
    (concurrently), ``per`` tokens per append."""
    store = RedisStore(url, retention=BIG, prefix=f"bs{streams}-{per}", cluster=cluster)
    batches = await prebuilt(n // streams, per)
    created = [await store.create("bench", f"r{i}", 0.0) for i in range(streams)]

    async def feed(c: Created) -> None:
        for b in batches:
            await store.append(c.stream, c.producer, b)

    trips0 = store.redis_counts.round_trips
    t = time.perf_counter()
    await asyncio.gather(*(feed(c) for c in created))
    dt = time.perf_counter() - t
    trips = store.redis_counts.round_trips - trips0
    await store.close()
    total = streams * sum(b.count for b in batches)
    return {
        "streams": streams,
        "tokens_per_append": per,
        "tokens": total,
        "seconds": round(dt, 3),
        "tokens_per_s": round(total / dt),
        "round_trips": trips,
        "round_trips_per_append": round(trips / (total / per), 4),
    }


def start_cluster(tmp: str, masters: int = 3) -> tuple[list[subprocess.Popen[bytes]], str]:
    """A private Redis Cluster of ``masters`` masters, no replicas; a seed URL."""
    procs, ports = [], []
    for i in range(masters):
        d = Path(tmp) / f"m{i}"
        d.mkdir()
        conf = str(d / "nodes.conf")
        bus = str(free_port())
        proc, url = start_redis(
            str(d), "--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-port", bus
        )
        procs.append(proc)
        ports.append(url.split(":")[2].split("/")[0])
    cli = shutil.which("redis-cli")
    assert cli is not None
    subprocess.run(
        [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            subprocess.run(
                [cli, "--cluster", "check", f"127.0.0.1:{ports[0]}"],
                check=True,
                capture_output=True,
            )
            info = subprocess.run(
                [cli, "-p", ports[0], "cluster", "info"], check=True, capture_output=True, text=True
            ).stdout
            if "cluster_state:ok" in info:
                break
        except subprocess.CalledProcessError:
            pass
        if time.monotonic() > deadline:
            sys.exit("redis cluster did not form")
        time.sleep(0.1)
    return procs, f"redis://127.0.0.1:{ports[0]}"


async def paced_only(quick: bool = False, cluster: bool = False) -> list[dict[str, Any]]:
    """Only the paced shape (1,000 streams, one token per append: many paced agents
    on one node), twice: ``python -m benchmarks.redis --paced [--cluster]``."""
    tmp = tempfile.mkdtemp(prefix="unbroken-redis-bench-")
    if cluster:
        procs, url = start_cluster(tmp)
    else:
        proc, url = start_redis(tmp)
        procs = [proc]
    try:
        n = 20_000 if quick else 100_000
        rows = [await store_append(url, n, 1000, 1, cluster=cluster) for _ in range(2)]
        for r in rows:
            print("store append", "cluster" if cluster else "single", r, flush=True)
        return rows
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


async def append_and_tail(url: str, n: int, per: int) -> dict[str, Any]:
    """Node A appends prebuilt batches; node B (another store) tails and reads every event."""
    a = RedisStore(url, retention=BIG, prefix="bt")
    b = RedisStore(url, retention=BIG, prefix="bt")
    batches = await prebuilt(n, per)
    c = await a.create("bench", "tail", 0.0)
    total = sum(x.count for x in batches)
    wake = asyncio.Event()
    b.subscribe(c.stream, lambda _s, _h: wake.set())

    async def reader() -> None:
        seq = 0
        while seq < total:
            got = await b.read(c.stream, seq, 256 * 1024)
            if got is None:
                await wake.wait()
                wake.clear()
                continue
            seq += got.count

    t = time.perf_counter()
    task = asyncio.create_task(reader())
    for x in batches:
        await a.append(c.stream, c.producer, x)
    appended = time.perf_counter() - t
    await asyncio.wait_for(task, 60)
    dt = time.perf_counter() - t
    await a.close()
    await b.close()
    return {
        "tokens": total,
        "tokens_per_append": per,
        "append_seconds": round(appended, 3),
        "tail_seconds": round(dt, 3),
        "tokens_per_s_through": round(total / dt),
    }


async def producer_append(store: StreamLog, n: int) -> dict[str, Any]:
    """Through the producer (digest + encode per token, as an agent pays), one stream."""
    t = time.perf_counter()
    await produce(store, n, "one")
    dt = time.perf_counter() - t
    await store.close()
    return {"tokens": n, "seconds": round(dt, 3), "tokens_per_s": round(n / dt)}


async def replay_and_memory(url: str) -> dict[str, Any]:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    before = int((await r.info("memory"))["used_memory"])
    store = RedisStore(url, retention=BIG, prefix="br")
    n = 10 * 1024 * 1024 // 20
    stream = await produce(store, n, "big")
    after = int((await r.info("memory"))["used_memory"])
    m = await store.meta(stream)
    assert m is not None
    times = []
    for _ in range(3):
        t = time.perf_counter()
        seq, got = 0, 0
        while True:
            b = await store.read(stream, seq, 1 << 20)
            if b is None:
                break
            seq += b.count
            got += len(b.items)
        times.append(time.perf_counter() - t)
        assert seq == m.head
    await store.close()
    await r.aclose()
    answer_mb = m.nbytes / 1e6
    return {
        "events": m.head,
        "stored_bytes": m.nbytes,
        "replay_seconds_best": round(min(times), 3),
        "replay_seconds": [round(x, 3) for x in times],
        "redis_used_memory_delta": after - before,
        "redis_bytes_per_mb_of_answer": round((after - before) / answer_mb),
    }


def e2e_app(store: StreamLog) -> Unbroken:
    app = Unbroken(store=store, allow_anonymous=True)

    @app.agent("tokens")
    async def tokens(req: Request, out: Output) -> None:
        for i in range(int(req.input)):
            await out.text(TOKEN.format(i % 1000000))

    return app


async def end_to_end(url: str, n: int, rounds: int = 4) -> dict[str, Any]:
    """Start -> verified answer over a real socket, MemoryStore and RedisStore
    alternated round by round (this machine is shared: interleaving evens out load);
    best of the rounds for each."""
    from unbroken.client import Client

    apps = {
        "memory": e2e_app(MemoryStore(BIG)),
        "redis": e2e_app(RedisStore(url, retention=BIG, prefix="be")),
    }
    rates: dict[str, list[float]] = {k: [] for k in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            async with serve(app) as srv, Client(srv.url) as client:
                t = time.perf_counter()
                st = await client.start("tokens", n)
                answer = await st.wait()
                dt = time.perf_counter() - t
                assert answer.complete
                rates[name].append(n / dt)
    for app in apps.values():
        await app.store.close()
    mem, red = max(rates["memory"]), max(rates["redis"])
    return {
        "tokens": n,
        "memory_tokens_per_s": [round(x) for x in rates["memory"]],
        "redis_tokens_per_s": [round(x) for x in rates["redis"]],
        "memory_best": round(mem),
        "redis_best": round(red),
        "ratio": round(red / mem, 3),
    }


class Node:
    def __init__(self, url: str) -> None:
        self.port = free_port()
        env = dict(
            os.environ, UNBROKEN_REDIS_URL=url, UNBROKEN_REDIS_PREFIX="bn", PYTHONPATH=str(ROOT)
        )
        exe = str(Path(sys.executable).with_name("unbroken"))
        self.proc = subprocess.Popen(
            [exe, "serve", "examples.redis_app:app", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


async def resume_latency(url: str, rounds: int) -> dict[str, Any]:
    """Resume on node B a stream produced on node A: time to ``resumed`` and to the first event."""
    from unbroken.client import Client

    a, b = Node(url), Node(url)
    try:
        async with Client(f"ws://127.0.0.1:{a.port}/ws") as ca:
            st = await ca.start("count", {"n": 200})
            async for _ in st:
                break
            cursor = st.cursor
            await st.wait()
        assert cursor is not None
        resumed, first = [], []
        async with Client(f"ws://127.0.0.1:{b.port}/ws") as cb:
            for _ in range(rounds):
                t = time.perf_counter()
                s2 = await cb.resume(cursor)
                resumed.append((time.perf_counter() - t) * 1000)
                async for _ in s2:
                    first.append((time.perf_counter() - t) * 1000)
                    break
                await s2.wait()
                await asyncio.sleep(0.005)  # the client forgets an ended stream a tick later
        return {"resumed_ms": summary(resumed, 3), "first_event_ms": summary(first, 3)}
    finally:
        a.stop()
        b.stop()


async def main(quick: bool = False) -> dict[str, Any]:
    k = 10 if quick else 1  # quick: a smoke run, a tenth of the sizes
    tmp = tempfile.mkdtemp(prefix="unbroken-redis-bench-")
    proc, url = start_redis(tmp)
    try:
        res: dict[str, Any] = {"meta": meta(), "benchmark": "redis", "quick": quick}
        res["store_append"] = [
            await store_append(url, 500_000 // k, 1, 512),
            await store_append(url, 500_000 // k, 1, 64),
            await store_append(url, 1_000_000 // k, 1000, 512),
            await store_append(url, 500_000 // k, 1000, 64),
            # many paced agents: one token per append, 1,000 streams at once
            await store_append(url, 100_000 // k, 1000, 1),
        ]
        for r in res["store_append"]:
            print("store append", r, flush=True)
        res["append_and_tail"] = await append_and_tail(url, 500_000 // k, 512)
        print("append + tail", res["append_and_tail"], flush=True)
        res["producer_append"] = {
            "redis": await producer_append(
                RedisStore(url, retention=BIG, prefix="bp"), 500_000 // k
            ),
            "memory": await producer_append(MemoryStore(BIG), 500_000 // k),
        }
        print("producer append", res["producer_append"], flush=True)
        res["replay_10mb"] = await replay_and_memory(url)
        print("replay", res["replay_10mb"], flush=True)
        res["resume_across_nodes"] = await resume_latency(url, 200 // k)
        print("resume", res["resume_across_nodes"], flush=True)
        res["end_to_end"] = await end_to_end(url, 300_000 // k)
        print("end to end", res["end_to_end"], flush=True)
        res["aims"] = {
            "append_tokens_per_s_per_node": 500_000,
            "replay_10mb_seconds": 1.0,
            "end_to_end_ratio": 0.7,
        }
        best = max(r["tokens_per_s"] for r in res["store_append"])
        small = min(r["tokens_per_s"] for r in res["store_append"] if r["tokens_per_append"] > 1)
        paced = res["store_append"][-1]
        replay = res["replay_10mb"]["replay_seconds_best"]
        ratio = res["end_to_end"]["ratio"]
        resumed_p50 = res["resume_across_nodes"]["resumed_ms"]["p50"]
        res["figures"] = [
            figure("Redis append, best shape", best, 500_000, best >= 500_000, "tokens/s"),
            figure(
                "Redis append, 64 tokens per append (worst shape)",
                small,
                500_000,
                small >= 500_000,
                "tokens/s",
            ),
            figure(
                "Redis append, 1,000 paced streams (1 token per append)",
                paced["tokens_per_s"],
                None,
                None,
                "tokens/s",
            ),
            figure(
                "Redis round trips per append, 1,000 paced streams",
                paced["round_trips_per_append"],
                None,
                None,
                "round trips",
            ),
            figure("Redis 10 MB replay", replay, 1.0, replay <= 1.0, "s"),
            figure("end to end on Redis ÷ on memory", ratio, 0.7, ratio >= 0.7, "×"),
            figure("resume on another node: resumed p50", resumed_p50, None, None, "ms"),
        ]
        return res
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    """For ``python -m benchmarks``: needs ``redis-server`` on PATH."""
    return asyncio.run(main(quick))


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    rows = result["store_append"]
    names = [f"{r['streams']} stream(s), {r['tokens_per_append']}/append" for r in rows]
    rates = [r["tokens_per_s"] / 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.barh(names, rates, color="tab:red")
    ax.axvline(500, color="black", ls=":", lw=1, label="aim 500 k tokens/s per node")
    ax.set_xlabel("thousand 20-byte tokens per second appended to Redis (fenced, Lua)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("RedisStore append throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if "--paced" in sys.argv:
        asyncio.run(paced_only("--quick" in sys.argv, "--cluster" in sys.argv))
        sys.exit(0)
    result = asyncio.run(main())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "redis.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, RESULTS / "redis.png")
