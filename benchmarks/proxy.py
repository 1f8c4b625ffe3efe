"""Proxy cost: throughput and added latency of FaultProxy with no toxic vs a direct connection.

Three processes, as in real use: a plain blocking-socket server (echo or byte source), the
proxy (``FaultProxy`` in its own asyncio process), and a blocking-socket client here.

* Throughput: the server streams ``--megabytes`` MB downstream as fast as it can; the client
  reads it all. MB/s, best of ``--runs``; direct vs through the proxy (no toxic: the fast
  path) and through the proxy with a ``noop`` toxic (the toxic-chain path).
* Latency: ``--round-trips`` round trips of a 64-byte message through an echo server;
  p50/p99 in µs, direct vs proxy.

A baseline, the smallest correct asyncio relay (``run_bare_relay``, ~40 lines), is measured
the same way: it tells what part of the cost is Python's event loop and process wake-ups on
this machine rather than the proxy's own work.

Run: ``.venv/bin/python -m benchmarks.proxy`` (writes benchmarks/results/proxy.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import unbroken

RESULTS = Path(__file__).resolve().parent / "results" / "proxy.json"
MESSAGE = b"m" * 64
BLOCK = 256 * 1024


# ---------------------------------------------------------------------- servers (subprocess)
def _serve_echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _serve_source(conn: socket.socket) -> None:
    with conn:
        header = b""
        while not header.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                return
            header += chunk
        remaining = int(header.split()[1])
        block = os.urandom(BLOCK)
        while remaining > 0:
            piece = block[: min(BLOCK, remaining)]
            conn.sendall(piece)
            remaining -= len(piece)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass


def run_server(kind: str, ports: Queue[int]) -> None:
    """A threaded blocking server: ``echo`` or ``source`` ("GO <n>" -> n bytes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    ports.put(listener.getsockname()[1])
    handler = _serve_echo if kind == "echo" else _serve_source
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def run_proxy(upstream_port: int, noop: bool, ports: Queue[int]) -> None:
    """A FaultProxy in its own process, optionally with a ``noop`` toxic downstream."""
    from unbroken.chaos import FaultProxy, Noop

    async def main() -> None:
        async with FaultProxy(upstream=("127.0.0.1", upstream_port)) as proxy:
            if noop:
                proxy.add_toxic(Noop(), stream="downstream")
                proxy.add_toxic(Noop(), stream="upstream")
            ports.put(proxy.port)
            await asyncio.Event().wait()

    asyncio.run(main())


class _BareSide(asyncio.Protocol):
    """Half of the baseline relay: forwards bytes to ``peer``, with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _BareSide | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def pause_writing(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


def run_bare_relay(upstream_port: int, ports: Queue[int]) -> None:
    """Baseline: the smallest correct asyncio relay (no toxics, no accounting, no log)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def accept() -> _BareSide:
            client = _BareSide()

            async def connect() -> None:
                assert client.transport is not None
                client.transport.pause_reading()
                upstream = _BareSide()
                upstream.peer, client.peer = client, upstream
                await loop.create_connection(lambda: upstream, "127.0.0.1", upstream_port)
                client.transport.resume_reading()

            loop.call_soon(lambda: loop.create_task(connect()))
            return client

        server = await loop.create_server(accept, "127.0.0.1", 0)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------------- client (this process)
def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def measure_throughput(port: int, total: int) -> float:
    """MB/s (1 MB = 10^6 bytes) to receive ``total`` bytes streamed by the source server."""
    with _connect(port) as sock:
        start = time.perf_counter()
        sock.sendall(f"GO {total}\n".encode())
        got = 0
        buf = bytearray(1 << 20)
        while got < total:
            n = sock.recv_into(buf)
            if n == 0:
                raise RuntimeError(f"stream ended after {got} of {total} bytes")
            got += n
        elapsed = time.perf_counter() - start
    return total / elapsed / 1e6


def measure_latency(port: int, round_trips: int, warmup: int = 300) -> list[float]:
    """Round-trip times in µs of a 64-byte message through the echo server."""
    times: list[float] = []
    with _connect(port) as sock:
        for i in range(warmup + round_trips):
            start = time.perf_counter()
            sock.sendall(MESSAGE)
            got = 0
            while got < len(MESSAGE):
                got += len(sock.recv(65536))
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e6)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _latency_summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(_percentile(times, 50), 1),
        "p99_us": round(_percentile(times, 99), 1),
        "mean_us": round(statistics.fmean(times), 1),
    }


def _start(ctx: Any, target: Any, *args: Any) -> tuple[Any, int]:
    ports: Queue[int] = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, ports), daemon=True)
    process.start()
    return process, ports.get(timeout=30)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200, help="bytes streamed per run, MB")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (best is kept)")
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    processes = []
    try:
        source, source_port = _start(ctx, run_server, "source")
        echo, echo_port = _start(ctx, run_server, "echo")
        proxy_source, proxy_source_port = _start(ctx, run_proxy, source_port, False)
        proxy_echo, proxy_echo_port = _start(ctx, run_proxy, echo_port, False)
        noop_source, noop_source_port = _start(ctx, run_proxy, source_port, True)
        noop_echo, noop_echo_port = _start(ctx, run_proxy, echo_port, True)
        bare_source, bare_source_port = _start(ctx, run_bare_relay, source_port)
        bare_echo, bare_echo_port = _start(ctx, run_bare_relay, echo_port)
        processes = [source, echo, proxy_source, proxy_echo, noop_source, noop_echo]
        processes += [bare_source, bare_echo]
        sources = {
            "direct": source_port,
            "proxy": proxy_source_port,
            "proxy_noop": noop_source_port,
            "bare_relay": bare_source_port,
        }
        echoes = {
            "direct": echo_port,
            "proxy": proxy_echo_port,
            "proxy_noop": noop_echo_port,
            "bare_relay": bare_echo_port,
        }

        total = args.megabytes * 1_000_000
        throughput: dict[str, list[float]] = {name: [] for name in sources}
        latency: dict[str, list[float]] = {name: [] for name in echoes}
        for _ in range(args.runs):  # interleaved, so drift hits every variant alike
            for name, port in sources.items():
                throughput[name].append(measure_throughput(port, total))
            for name, port in echoes.items():
                latency[name] += measure_latency(port, args.round_trips // args.runs)
    finally:
        for process in processes:
            process.terminate()
            process.join(5)

    best = {k: max(v) for k, v in throughput.items()}
    lat = {k: _latency_summary(v) for k, v in latency.items()}
    result: dict[str, Any] = {
        "benchmark": "proxy",
        "unbroken": unbroken.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "setup": {
            "megabytes_per_run": args.megabytes,
            "runs": args.runs,
            "round_trips": args.round_trips,
            "message_bytes": len(MESSAGE),
            "processes": "server, proxy and client each in its own process",
        },
        "throughput_mb_s": {
            "direct": round(best["direct"], 1),
            "proxy": round(best["proxy"], 1),
            "proxy_noop_toxic": round(best["proxy_noop"], 1),
            "bare_asyncio_relay": round(best["bare_relay"], 1),
            "all_runs": {k: [round(x, 1) for x in v] for k, v in throughput.items()},
        },
        "throughput_ratio_proxy_vs_direct": round(best["proxy"] / best["direct"], 3),
        "throughput_ratio_noop_vs_direct": round(best["proxy_noop"] / best["direct"], 3),
        "latency_round_trip": {
            "direct": lat["direct"],
            "proxy": lat["proxy"],
            "proxy_noop_toxic": lat["proxy_noop"],
            "bare_asyncio_relay": lat["bare_relay"],
        },
        "latency_added_us": {
            "p50": round(lat["proxy"]["p50_us"] - lat["direct"]["p50_us"], 1),
            "p99": round(lat["proxy"]["p99_us"] - lat["direct"]["p99_us"], 1),
        },
        "latency_added_us_bare_asyncio_relay": {
            "p50": round(lat["bare_relay"]["p50_us"] - lat["direct"]["p50_us"], 1),
            "p99": round(lat["bare_relay"]["p99_us"] - lat["direct"]["p99_us"], 1),
        },
        "latency_ratio_p50_proxy_vs_direct": round(
            lat["proxy"]["p50_us"] / lat["direct"]["p50_us"], 2
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "setup"}, indent=2))
    return result


if __name__ == "__main__":
    main()
