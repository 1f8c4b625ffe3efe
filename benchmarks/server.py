"""Server benchmark: one stream end to end over loopback, catch-up, memory.

Every figure is measured over a real socket between two processes: the server
(``unbroken serve``-like: uvicorn, ``ws="websockets-sansio"``, the event loop
uvicorn picks) runs in a child process, the client in this one, so each has a
core of its own (this machine has 2).

* **Throughput**, 20-byte text tokens, tokens/s and MB/s delivered to one client:
  - *behind* (catch-up): the agent wrote the whole stream as fast as it could
    while nobody read; then the client resumes from seq 0 and drains it;
  - *behind, attached*: the client is attached while the agent writes as fast
    as it can (the producer is then the limit);
  - *live*: the agent yields to the event loop after every token, as an agent
    awaiting a model stream does; the client is attached.
  The client decodes and verifies every event (``ClientSession``: msgspec decode
  plus the BLAKE2b chain), which is what "delivered" means here; a raw variant
  that only receives frames shows what the transport alone does.
  The same tokens are sent by a bare ``websockets`` server, one message each,
  in the same two shapes (as fast as it can / yield after every token). The
  ratios are unbroken ÷ bare.
* **Catch-up of a 10 MB stream** after a late resume: seconds and frames.
* **Memory**, as the RSS of the server process (psutil, separate process):
  per idle connection (after ``hello``), per running stream (a run that wrote a
  token and waits, with its attachment), per MB of text held in the log.

Run: ``.venv/bin/python -m benchmarks.server`` (``--quick`` for a smoke run);
writes benchmarks/results/server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect

import unbroken
from unbroken.protocol.client_session import ClientSession, Cursor, StreamEvents, StreamStarted
from unbroken.protocol.digest import seed
from unbroken.protocol.events import Kind
from unbroken.protocol.frames import Cancel, Started, Welcome, encode, encode_events_frame

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "server.json"
TOKEN_BYTES = 20
TEN_MB = 10 * 1024 * 1024 // TOKEN_BYTES  # 524,288 tokens
AIMS = {
    "behind_tokens_per_s": 1_000_000,
    "live_ratio_vs_bare": 0.8,
    "rss_per_mb_of_text": 1.5,
    "rss_per_idle_connection_kb": 25.0,
}


def tok(i: int) -> str:
    return f" token{i:014d}"


# =================================================================== servers
def build_app() -> Any:
    from benchmarks.common import bench_app
    from unbroken.server import Output, Request
    from unbroken.store.base import Retention
    from unbroken.store.memory import MemoryStore

    store = MemoryStore(Retention(max_total_bytes=8 << 30, max_stream_bytes=256 << 20, ttl=3600))
    app = bench_app(
        store,
        request_rate=1e9,  # the load generator's connections ask as fast as they can
        request_burst=1_000_000_000,
        health_detail=True,
    )
    gate = asyncio.Event()

    @app.agent("tokens")
    async def tokens(req: Request, out: Output) -> None:
        n, every = req.input["n"], req.input.get("yield_every", 0)
        text = out.text
        if every:
            for i in range(n):
                await text(tok(i))
                if i % every == 0:
                    await asyncio.sleep(0)
        else:
            for i in range(n):
                await text(tok(i))

    @app.agent("idle")
    async def idle(req: Request, out: Output) -> None:
        await out.text(tok(0))
        await gate.wait()

    return app


def run_unbroken_server() -> None:
    import socket

    import uvicorn

    app = build_app()
    # proto=TCP: asyncio sets TCP_NODELAY on accepted sockets only then
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    config = uvicorn.Config(
        app.asgi(),
        ws="websockets-sansio",
        ws_max_size=app.limits.max_frame,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        log_level="warning",
        lifespan="on",
    )
    print(f"READY {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def run_bare_server() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            req = json.loads(msg)
            n, every = req["n"], req.get("yield_every", 0)
            send = ws.send
            for i in range(n):
                await send(tok(i))
                if every and i % every == 0:
                    await asyncio.sleep(0)
            await send("END")

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"READY {port}", flush=True)
            await asyncio.Future()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def child(role: str) -> AsyncIterator[tuple[int, psutil.Process]]:
    """A server process; yields its port and a psutil handle for RSS."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.server",
        "--role",
        role,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"READY "), line
        yield int(line.split()[1]), psutil.Process(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 15)
        if proc.returncode is None:
            proc.kill()


# =================================================================== client
async def ws_connect(port: int) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=["unbroken.v1"],  # type: ignore[list-item]
        max_size=None,
        ping_interval=None,
        compression=None,
        open_timeout=30,
    )


class Client:
    """A protocol v1 client over a plain websockets connection (ClientSession)."""

    def __init__(self, ws: ClientConnection, cs: ClientSession) -> None:
        self.ws, self.cs = ws, cs

    @classmethod
    async def open(cls, port: int, cs: ClientSession | None = None) -> Client:
        c = cls(await ws_connect(port), cs or ClientSession())
        await c.ws.send(encode(c.cs.connect()).decode())
        c.cs.receive(await c.ws.recv())
        for f in c.cs.after_welcome():
            await c.ws.send(encode(f).decode())
        return c

    async def start(self, req: str, agent: str, inp: Any) -> str:
        f = self.cs.start(req, agent, inp)
        assert f is not None
        await self.ws.send(encode(f).decode())
        while True:
            out = self.cs.receive(await self.ws.recv())
            if isinstance(out, StreamStarted) and out.req == req:
                return out.stream

    async def drain(self, verify: bool = True) -> tuple[int, int, int]:
        """Receive until an end event: (events, frames, wire bytes)."""
        events = frames = nbytes = 0
        recv, receive, ws = self.ws.recv, self.cs.receive, self.ws
        while True:
            data = await recv()
            frames += 1
            nbytes += len(data)
            if verify:
                out = receive(data)
                for ack in self.cs.take_acks():
                    await ws.send(encode(ack).decode())
                if isinstance(out, StreamEvents):
                    events += len(out.events)
                    if out.events[-1].kind is Kind.END:
                        return events, frames, nbytes
            else:
                # raw: no decoding; spot the end item, ack by the frame's first seq
                if isinstance(data, str) and data.startswith('{"t":"events"'):
                    if '"k":"end"' in data[-200:]:
                        return events, frames, nbytes
                    await self.ack_before(data)

    async def ack_before(self, data: str) -> None:
        """Ack every event before this frame (cheap: only its header is read)."""
        head = data[:120]
        sid = head.split('"stream":"', 1)[1].split('"', 1)[0]
        first = int(head.split('"seq":', 1)[1].split(",", 1)[0])
        if first > 1:
            await self.ws.send(f'{{"t":"ack","stream":"{sid}","seq":{first - 1}}}')


async def wait_runs_done(port: int, limit: float = 120) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with asyncio.timeout(limit):
            while (await http.get("/healthz")).json()["runs"]:  # noqa: ASYNC110 - polls a server
                await asyncio.sleep(0.02)


async def wait_connections(port: int, n: int, limit: float = 60) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with asyncio.timeout(limit):
            while (await http.get("/healthz")).json()["connections"] != n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)


# =================================================================== measurements
async def unbroken_catch_up(port: int, n: int, verify: bool) -> dict[str, float]:
    """The agent writes ``n`` tokens while nobody reads; then a late resume from 0."""
    a = await Client.open(port)
    sid = await a.start("fill", "tokens", {"n": n})
    epoch = a.cs.by_stream[sid].epoch
    await a.ws.close()
    await wait_runs_done(port)
    cs = ClientSession()
    b = await Client.open(port, cs)
    frame = cs.adopt("late", Cursor(sid, 0, seed(sid, epoch).hex(), epoch))
    assert frame is not None
    t0 = time.perf_counter()
    await b.ws.send(encode(frame).decode())
    b.cs.receive(await b.ws.recv())  # resumed
    events, frames, nbytes = await b.drain(verify)
    dt = time.perf_counter() - t0
    await b.ws.close()
    return {
        "seconds": dt,
        "tokens_per_s": n / dt,
        "events": events,
        "frames": frames,
        "wire_mb_per_s": nbytes / dt / 1e6,
        "payload_mb_per_s": n * TOKEN_BYTES / dt / 1e6,
        "wire_bytes": nbytes,
    }


async def unbroken_attached(port: int, n: int, every: int, verify: bool) -> dict[str, float]:
    c = await Client.open(port)
    t0 = time.perf_counter()
    await c.start(f"run-{time.monotonic_ns()}", "tokens", {"n": n, "yield_every": every})
    _, frames, nbytes = await c.drain(verify)
    dt = time.perf_counter() - t0
    await c.ws.close()
    return {
        "seconds": dt,
        "tokens_per_s": n / dt,
        "frames": frames,
        "tokens_per_frame": n / frames,
        "wire_mb_per_s": nbytes / dt / 1e6,
        "payload_mb_per_s": n * TOKEN_BYTES / dt / 1e6,
    }


async def bare(port: int, n: int, every: int) -> dict[str, float]:
    ws = await connect(
        f"ws://127.0.0.1:{port}", max_size=None, ping_interval=None, compression=None
    )
    t0 = time.perf_counter()
    await ws.send(json.dumps({"n": n, "yield_every": every}))
    count = nbytes = 0
    recv = ws.recv
    while True:
        msg = await recv()
        if msg == "END":
            break
        count += 1
        nbytes += len(msg)
    dt = time.perf_counter() - t0
    await ws.close()
    assert count == n
    return {
        "seconds": dt,
        "tokens_per_s": n / dt,
        "frames": n,
        "payload_mb_per_s": nbytes / dt / 1e6,
    }


async def bare_raw(port: int, n: int, every: int) -> dict[str, float]:
    """The bare server measured by a client that does no per-message work: after
    the handshake it only counts bytes (each token is a 22-byte frame)."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.protocol import State
    from websockets.uri import parse_uri

    proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"), max_size=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    proto.send_request(proto.connect())
    writer.write(b"".join(proto.data_to_send()))
    while proto.state is not State.OPEN:
        proto.receive_data(await reader.read(65536))
    proto.events_received()
    want = n * (2 + TOKEN_BYTES) + 2 + 3  # n token frames, then "END"
    t0 = time.perf_counter()
    proto.send_text(json.dumps({"n": n, "yield_every": every}).encode())
    writer.write(b"".join(proto.data_to_send()))
    got = 0
    while got < want:
        data = await reader.read(1 << 20)
        if not data:
            raise ConnectionError("bare server closed early")
        got += len(data)
    dt = time.perf_counter() - t0
    assert got == want, (got, want)
    proto.send_frame(Frame(Opcode.CLOSE, b"\x03\xe8"))
    writer.write(b"".join(proto.data_to_send()))
    writer.close()
    return {
        "seconds": dt,
        "tokens_per_s": n / dt,
        "frames": n,
        "payload_mb_per_s": n * TOKEN_BYTES / dt / 1e6,
    }


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate, and the spread."""
    rates = sorted(r["tokens_per_s"] for r in runs)
    med = statistics.median(rates)
    pick = min(runs, key=lambda r: abs(r["tokens_per_s"] - med))
    return {**pick, "min_tokens_per_s": rates[0], "max_tokens_per_s": rates[-1], "runs": len(runs)}


async def throughput(n: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with child("unbroken") as (port, _):
        await unbroken_attached(port, 2000, 1, True)  # warm up
        out["behind_catch_up"] = best(
            [await unbroken_catch_up(port, n, True) for _ in range(repeats)]
        )
        out["behind_catch_up_raw"] = best(
            [await unbroken_catch_up(port, n, False) for _ in range(repeats)]
        )
        out["behind_attached"] = best(
            [await unbroken_attached(port, n, 0, True) for _ in range(repeats)]
        )
        live_n = max(n // 4, 1000)
        out["live"] = best([await unbroken_attached(port, live_n, 1, True) for _ in range(repeats)])
        out["live_raw"] = best(
            [await unbroken_attached(port, live_n, 1, False) for _ in range(repeats)]
        )
    async with child("bare") as (port, _):
        await bare(port, 2000, 1)
        out["bare_burst"] = best([await bare(port, n, 0) for _ in range(repeats)])
        out["bare_live"] = best([await bare(port, max(n // 4, 1000), 1) for _ in range(repeats)])
        out["bare_burst_raw"] = best([await bare_raw(port, n, 0) for _ in range(repeats)])
        out["bare_live_raw"] = best(
            [await bare_raw(port, max(n // 4, 1000), 1) for _ in range(repeats)]
        )
    out["ratio_behind_vs_bare"] = (
        out["behind_catch_up"]["tokens_per_s"] / out["bare_burst"]["tokens_per_s"]
    )
    out["ratio_live_vs_bare"] = out["live"]["tokens_per_s"] / out["bare_live"]["tokens_per_s"]
    out["ratio_live_vs_bare_burst"] = (
        out["live"]["tokens_per_s"] / out["bare_burst"]["tokens_per_s"]
    )
    # both sides measured by clients that do no per-message work
    out["ratio_live_vs_bare_raw_clients"] = (
        out["live_raw"]["tokens_per_s"] / out["bare_live_raw"]["tokens_per_s"]
    )
    out["ratio_behind_vs_bare_raw_clients"] = (
        out["behind_catch_up_raw"]["tokens_per_s"] / out["bare_burst_raw"]["tokens_per_s"]
    )
    return out


async def catch_up_10mb(repeats: int) -> dict[str, Any]:
    async with child("unbroken") as (port, _):
        runs = [await unbroken_catch_up(port, TEN_MB, True) for _ in range(repeats)]
    r = best(runs)
    return {
        "tokens": TEN_MB,
        "text_mb": TEN_MB * TOKEN_BYTES / 2**20,
        "seconds": r["seconds"],
        "frames": r["frames"],
        "wire_bytes": r["wire_bytes"],
        "tokens_per_s": r["tokens_per_s"],
    }


async def client_verify_only(n: int) -> dict[str, float]:
    """The verifying client alone, no socket: ``ClientSession.receive`` over the
    frames a late resume of ``n`` tokens gets (what bounds "behind" end to end)."""
    from unbroken.server.agent import Output
    from unbroken.server.producer import Producer
    from unbroken.store.memory import MemoryStore

    store = MemoryStore()
    c = await store.create("o", "r", 0.0)
    producer = Producer(store, c.stream, c.epoch, c.producer)
    out = Output(producer)
    for i in range(n):
        await out.text(tok(i))
    await out.close_open_parts()
    await producer.finish("completed", "", 0.0)
    frames, after = [], 0
    while (batch := await store.read(c.stream, after, 256 * 1024)) is not None:
        frames.append(encode_events_frame(c.stream, batch.first, batch.items, batch.digest))
        after = batch.first + batch.count - 1
    rates = []
    for _ in range(3):
        cs = ClientSession()
        cs.connect()
        cs.receive(encode(Welcome(session="s", heartbeat_ms=1000, epoch=c.epoch)))
        cs.start("r", "tokens", None)
        cs.receive(encode(Started(req="r", stream=c.stream, epoch=c.epoch)))
        t0 = time.process_time()
        for f in frames:
            cs.receive(f)
        rates.append(n / (time.process_time() - t0))
    return {"tokens_per_s": statistics.median(rates), "frames": len(frames)}


def rss(p: psutil.Process) -> int:
    return int(p.memory_info().rss)


async def memory(conns: int, streams: int, log_mb: int) -> dict[str, Any]:
    out: dict[str, Any] = {"method": "RSS of a separate server process (psutil), deltas"}
    # idle connections (after hello)
    async with child("unbroken") as (port, proc):
        warm = await Client.open(port)
        await warm.start("warm", "tokens", {"n": 1000})
        await warm.drain()
        await warm.ws.close()
        await wait_connections(port, 0)
        before = rss(proc)
        clients = []
        for i in range(0, conns, 100):
            clients += await asyncio.gather(
                *(Client.open(port) for _ in range(min(100, conns - i)))
            )
        await wait_connections(port, conns)
        after = rss(proc)
        out["idle_connections"] = conns
        out["rss_per_idle_connection_kb"] = (after - before) / conns / 1024
        await asyncio.gather(*(c.ws.close() for c in clients))
    # running streams: a run that wrote one token and waits, attached to a connection
    async with child("unbroken") as (port, proc):
        per_conn = 100
        cs = [await Client.open(port) for _ in range(max(1, streams // per_conn))]
        warm_sid = await cs[0].start("warm", "tokens", {"n": 10})
        await cs[0].drain()
        before = rss(proc)
        started = 0
        for i, c in enumerate(cs):
            for j in range(per_conn):
                await c.ws.send(encode(c.cs.start(f"i{i}-{j}", "idle", None)).decode())  # type: ignore[arg-type]
            got = 0
            while got < per_conn:
                o = c.cs.receive(await c.ws.recv())
                got += isinstance(o, StreamStarted)
            started += per_conn
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(60):
                while (await http.get("/healthz")).json()["runs"] < started:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        after = rss(proc)
        out["running_streams"] = started
        out["rss_per_running_stream_kb"] = (after - before) / started / 1024
        del warm_sid
        for c in cs:
            for sid in list(c.cs.by_stream):
                await c.ws.send(encode(Cancel(sid)).decode())
            await c.ws.close()
    # the log: text written with nobody attached, then held
    async with child("unbroken") as (port, proc):
        warm = await Client.open(port)
        await warm.start("warm", "tokens", {"n": 1000})
        await warm.drain()
        before = rss(proc)
        per_stream = TEN_MB
        n_streams = max(1, log_mb // 10)
        for i in range(n_streams):
            await warm.ws.send(
                encode(warm.cs.start(f"fill{i}", "tokens", {"n": per_stream})).decode()  # type: ignore[arg-type]
            )
        await wait_runs_done(port, 600)
        after = rss(proc)
        text_mb = n_streams * per_stream * TOKEN_BYTES / 2**20
        out["log_text_mb"] = text_mb
        out["rss_per_mb_of_text"] = (after - before) / 2**20 / text_mb
        await warm.ws.close()
    return out


# =================================================================== report
def report(res: dict[str, Any], console: Console) -> None:
    t = res["throughput"]
    table = Table(title="one stream over loopback, 20-byte tokens (client verifies every event)")
    for col in ("shape", "tokens/s", "payload MB/s", "wire MB/s", "tokens/frame", "frames"):
        table.add_column(col, justify="right" if col != "shape" else "left")

    def row(name: str, r: dict[str, float]) -> None:
        frames = r.get("frames", 0)
        tpf = r.get("tokens_per_frame") or (
            r["tokens_per_s"] * r["seconds"] / frames if frames else 0
        )
        table.add_row(
            name,
            f"{r['tokens_per_s']:,.0f}",
            f"{r['payload_mb_per_s']:.1f}",
            f"{r['wire_mb_per_s']:.1f}" if "wire_mb_per_s" in r else "-",
            f"{tpf:,.1f}",
            f"{frames:,}",
        )

    row("unbroken, behind: late resume", t["behind_catch_up"])
    row("unbroken, behind: late resume, raw client", t["behind_catch_up_raw"])
    row("unbroken, behind: attached, agent flat out", t["behind_attached"])
    row("unbroken, live: agent yields per token", t["live"])
    row("unbroken, live, raw client", t["live_raw"])
    row("bare websockets, flat out", t["bare_burst"])
    row("bare websockets, yields per token", t["bare_live"])
    row("bare websockets, flat out, raw client", t["bare_burst_raw"])
    row("bare websockets, yields per token, raw client", t["bare_live_raw"])
    console.print(table)
    console.print(
        f"ratio behind ÷ bare burst: {t['ratio_behind_vs_bare']:.2f}   "
        f"ratio live ÷ bare (same shape): {t['ratio_live_vs_bare']:.2f}   "
        f"live ÷ bare burst: {t['ratio_live_vs_bare_burst']:.2f}"
    )
    console.print(
        "with clients that do no per-message work on both sides: "
        f"behind {t['ratio_behind_vs_bare_raw_clients']:.2f}, "
        f"live {t['ratio_live_vs_bare_raw_clients']:.2f}"
    )
    v = res["client_verify_only"]
    console.print(
        f"the verifying client alone (no socket): {v['tokens_per_s']:,.0f} tokens/s; "
        f"load average before/after: {res['load_average_before'][0]:.2f} / "
        f"{res['load_average_after'][0]:.2f}"
    )
    c = res["catch_up_10mb"]
    console.print(
        f"catch-up of {c['text_mb']:.0f} MB ({c['tokens']:,} tokens): {c['seconds']:.3f} s "
        f"in {c['frames']} frames"
    )
    m = res["memory"]
    console.print(
        f"RSS: {m['rss_per_idle_connection_kb']:.1f} KB per idle connection, "
        f"{m['rss_per_running_stream_kb']:.1f} KB per running stream, "
        f"{m['rss_per_mb_of_text']:.2f} MB per MB of text in the log ({m['method']})"
    )
    for name, (value, aim, ok) in res["aims"].items():
        console.print(f"  aim {name}: {value:,.2f} vs {aim:,} → {'met' if ok else 'MISSED'}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n = 100_000 if args.quick else args.tokens
    repeats = 1 if args.quick else args.repeats
    res: dict[str, Any] = {
        "unbroken": unbroken.__version__,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "loop": "uvloop" if _has_uvloop() else "asyncio",
        "tokens": n,
        "token_bytes": TOKEN_BYTES,
        "repeats": repeats,
    }
    res["load_average_before"] = os.getloadavg()
    res["throughput"] = await throughput(n, repeats)
    res["client_verify_only"] = await client_verify_only(n)
    res["catch_up_10mb"] = await catch_up_10mb(repeats)
    res["memory"] = await memory(
        conns=200 if args.quick else 1000,
        streams=200 if args.quick else 1000,
        log_mb=10 if args.quick else 50,
    )
    res["load_average_after"] = os.getloadavg()
    t, m = res["throughput"], res["memory"]
    res["aims"] = {
        # what the server delivers when the client is behind (a client that only receives)
        "behind_tokens_per_s_delivered": (
            t["behind_catch_up_raw"]["tokens_per_s"],
            AIMS["behind_tokens_per_s"],
            t["behind_catch_up_raw"]["tokens_per_s"] >= AIMS["behind_tokens_per_s"],
        ),
        # end to end into a Python client that decodes and verifies every event: bounded
        # by that client (see client_verify_only), not by the server
        "behind_tokens_per_s_verified": (
            t["behind_catch_up"]["tokens_per_s"],
            AIMS["behind_tokens_per_s"],
            t["behind_catch_up"]["tokens_per_s"] >= AIMS["behind_tokens_per_s"],
        ),
        "live_ratio_vs_bare": (
            t["ratio_live_vs_bare"],
            AIMS["live_ratio_vs_bare"],
            t["ratio_live_vs_bare"] >= AIMS["live_ratio_vs_bare"],
        ),
        "rss_per_mb_of_text": (
            m["rss_per_mb_of_text"],
            AIMS["rss_per_mb_of_text"],
            m["rss_per_mb_of_text"] <= AIMS["rss_per_mb_of_text"],
        ),
        "rss_per_idle_connection_kb": (
            m["rss_per_idle_connection_kb"],
            AIMS["rss_per_idle_connection_kb"],
            m["rss_per_idle_connection_kb"] <= AIMS["rss_per_idle_connection_kb"],
        ),
    }
    return res


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["unbroken", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--tokens", type=int, default=TEN_MB, help="tokens per throughput run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON results")
    args = ap.parse_args()
    if args.role == "unbroken":
        run_unbroken_server()
        return
    if args.role == "bare":
        run_bare_server()
        return
    console = Console(width=120)
    res = asyncio.run(main(args))
    report(res, console)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
        console.print(f"results written to {RESULTS}")


if __name__ == "__main__":
    cli()
