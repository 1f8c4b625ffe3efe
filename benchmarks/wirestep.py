"""The real servers' per-token path in lockstep over real sockets: unbroken and bare.

``benchmarks.lockstep`` runs unbroken's hub and connections against a transport that
takes every send at once: no WebSocket layer, no socket, and no bare server to compare
with. This one serves real WebSocket connections on loopback, as the concurrency
benchmark does, from either server:

- ``--server unbroken``: ``unbroken serve``'s stack in-process (uvicorn with unbroken's
  WebSocket layer and connection guard, uvloop, a memory store, metrics on), one
  stream per connection, protocol v1 with the ``batch`` cap (as the load client);
- ``--server bare``: a plain ``websockets`` server (uvloop), one message per token
  (``benchmarks.bare``'s shape).

Both serve the same agents: each stream waits on its round's gate, then writes one
20-byte token (``stamp``); a child process (not measured: valgrind does not follow it)
holds the client connections, counts the tokens and writes one line to its stdout per
round's worth of them; the server opens the next round's gate on that line. So every
token is its own wake-up, append (unbroken), frame and socket write in both servers,
whatever the speed of the machine or of valgrind. Time-driven work is kept out
(unbroken's heartbeat 1,000 s, no WebSocket pings in either).

``python -m benchmarks.instructions --wire`` counts instructions of this under
cachegrind for both servers (the difference of two round counts, per token) and
prints their ratio. Run alone it prints CPU µs per token (``time.process_time``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.bare import stamp

WARMUP = 5
#: more arguments of the client process (``--pin``)
_CLIENT_ARGS: list[str] = []


class _Rounds:
    """The gates of the agents, one per round, and the count of agents at the first."""

    def __init__(self, streams: int, rounds: int) -> None:
        loop = asyncio.get_running_loop()
        self.streams = streams
        self.gates = [loop.create_future() for _ in range(WARMUP + rounds)]
        self.waiting = 0
        self.all_waiting = loop.create_future()

    def arrived(self) -> None:
        self.waiting += 1
        if self.waiting == self.streams:
            self.all_waiting.set_result(None)


class _Probe:
    """What the measured rounds cost beyond the CPU total (``--detail``, ``--perf``,
    ``--strace``): user and system time, context switches, collections, and optionally
    ``perf stat`` hardware counters or ``strace -c`` syscall counts of this process."""

    def __init__(
        self, detail: bool, perf: str | None, strace: bool, record: str | None = None
    ) -> None:
        self.detail = detail or perf is not None or strace or record is not None
        self.perf = perf
        self.strace = strace
        self.record = record
        self.out: dict[str, object] = {}
        self._tools: list[tuple[str, subprocess.Popen[bytes], str]] = []

    def attach(self) -> None:
        """Start the tracers on this process (before the rounds: they take a moment)."""
        pid = str(os.getpid())
        if self.perf is not None:
            f = tempfile.mktemp(prefix="wirestep-perf-")
            cmd = ["perf", "stat", "-x", ",", "-e", self.perf, "-p", pid, "-o", f]
            self._tools.append(("perf", subprocess.Popen(cmd), f))
        if self.record is not None:
            cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-p", pid]
            cmd += ["-o", self.record]
            self._tools.append(("record", subprocess.Popen(cmd), ""))
        if self.strace:
            f = tempfile.mktemp(prefix="wirestep-strace-")
            cmd = ["strace", "-c", "-f", "-p", pid, "-o", f]
            self._tools.append(("strace", subprocess.Popen(cmd, stderr=subprocess.DEVNULL), f))
        if self._tools:
            time.sleep(1.0)  # not synchronisation of a test: the tracers attach

    def start(self, client: int = 0) -> None:
        self._client = client
        self._client_ctx = _ctx_switches(client)
        self._client_cpu = _cpu_seconds(client)
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._gc = [s["collections"] for s in gc.get_stats()]
        self._threads = threading.active_count()

    def stop(self, tokens: int) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        gcs = [s["collections"] for s in gc.get_stats()]
        if not self.detail:
            return
        per = 1e6 / tokens
        o = self.out
        o["user_us_per_token"] = round((ru.ru_utime - self._ru.ru_utime) * per, 2)
        o["sys_us_per_token"] = round((ru.ru_stime - self._ru.ru_stime) * per, 2)
        o["vol_ctx_per_token"] = round((ru.ru_nvcsw - self._ru.ru_nvcsw) / tokens, 4)
        o["invol_ctx_per_token"] = round((ru.ru_nivcsw - self._ru.ru_nivcsw) / tokens, 4)
        client_ctx = _ctx_switches(self._client)
        o["client_vol_ctx_per_token"] = round((client_ctx - self._client_ctx) / tokens, 4)
        client_cpu = _cpu_seconds(self._client) - self._client_cpu
        o["client_cpu_us_per_token"] = round(client_cpu * per, 2)
        o["minflt_per_token"] = round((ru.ru_minflt - self._ru.ru_minflt) / tokens, 4)
        o["gc_collections"] = [b - a for a, b in zip(self._gc, gcs, strict=True)]
        o["threads"] = self._threads
        o["maxrss_kb"] = ru.ru_maxrss
        for name, proc, path in self._tools:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            if not path:
                continue
            with open(path) as f:
                text = f.read()
            os.unlink(path)
            o[name] = _parse_perf(text, tokens) if name == "perf" else _parse_strace(text, tokens)


def _ctx_switches(pid: int) -> int:
    """Voluntary context switches of process ``pid`` (the client: each is a sleep the
    server's next write must wake it from); 0 without a pid or ``/proc``."""
    if not pid:
        return 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (the client: its work
    overlaps the server's on this machine's two cores); 0 without a pid or ``/proc``."""
    if not pid:
        return 0.0
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _parse_perf(text: str, tokens: int) -> dict[str, float]:
    """``perf stat -x ,`` lines: each counter per token."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) < 3 or line.startswith("#"):
            continue
        with contextlib.suppress(ValueError):
            counts[f[2]] = round(float(f[0]) / tokens, 3)
    return counts


def _parse_strace(text: str, tokens: int) -> dict[str, float]:
    """``strace -c`` table: calls of each syscall per token."""
    calls: dict[str, float] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            with contextlib.suppress(ValueError):
                calls[f[-1]] = round(int(f[3]) / tokens, 4)
    return calls


async def _drive(port: int, kind: str, streams: int, rounds: _Rounds, probe: _Probe) -> float:
    """Start the client process, run every round; CPU seconds per measured round."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.wirestep",
        "--client",
        "--server",
        kind,
        "--port",
        str(port),
        "--streams",
        str(streams),
        *_CLIENT_ARGS,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line != b"ready\n":
        raise RuntimeError(f"client: {line!r}")
    await rounds.all_waiting
    # the connections' objects, made in an order the client's timing decides, out of
    # the collector's way: a full collection over them, falling in one of the two
    # counted invocations and not the other, moved the count by thousands a token
    gc.collect()
    gc.freeze()
    probe.attach()
    c0 = 0.0
    for i, gate in enumerate(rounds.gates):
        if i == WARMUP:
            probe.start(proc.pid)
            c0 = time.process_time()
        gate.set_result(None)
        if await proc.stdout.readline() != b"round\n":
            raise RuntimeError("the client stopped before the last round")
    cpu = time.process_time() - c0
    probe.stop(streams * (len(rounds.gates) - WARMUP))
    proc.kill()
    await proc.wait()
    return cpu


async def _bare(streams: int, n: int, probe: _Probe) -> float:
    from websockets.asyncio.server import ServerConnection, serve

    rounds = _Rounds(streams, n)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        rounds.arrived()
        for gate in rounds.gates:
            await gate
            await ws.send(stamp(0.0))
        await ws.wait_closed()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        max_size=None,
        ping_interval=None,
        backlog=4096,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        return await _drive(port, "bare", streams, rounds, probe)


async def _unbroken(streams: int, n: int, probe: _Probe) -> float:
    import dataclasses
    import logging

    import uvicorn

    from benchmarks.common import bench_app
    from unbroken.server import Output, Request
    from unbroken.server.serving import listen_socket, uvicorn_config
    from unbroken.store.base import Retention
    from unbroken.store.memory import MemoryStore

    rounds = _Rounds(streams, n)
    store = MemoryStore(Retention(max_total_bytes=4 << 30, max_stream_bytes=64 << 20, ttl=30.0))
    app = bench_app(
        store,
        heartbeat=1000.0,  # the heartbeat's sweep runs on wall time: keep it out
        sweep_every=1000.0,
    )
    # the load monitor, the stall watchdog and retention's sweep run on wall time
    # (per second, not per token; under valgrind a run lasts minutes): kept out
    app.hub.set_admission(
        dataclasses.replace(app.hub.admission, max_loop_lag=None, stall_timeout=None)
    )

    @app.agent("lockstep")
    async def lockstep(req: Request, out: Output) -> None:
        rounds.arrived()
        for gate in rounds.gates:
            await gate
            await out.text(stamp(0.0))

    sock = listen_socket("127.0.0.1", 0)
    config, _ = uvicorn_config(
        app, ws_ping_interval=None, lifespan="on", log_level="warning", loop="uvloop"
    )
    logging.getLogger("unbroken").setLevel(logging.ERROR)
    sock.listen(config.backlog)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
        await asyncio.sleep(0.01)
    cpu = await _drive(sock.getsockname()[1], "unbroken", streams, rounds, probe)
    # not stopped: the process ends at once (the teardown is not the token path); the
    # loop's end cancels the lifespan, which is not an error worth a traceback
    del task
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    return cpu


async def _client(kind: str, port: int, streams: int) -> None:
    """Open the connections, start a stream on each, then print a line per round."""
    from websockets.asyncio.client import ClientConnection, connect

    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
    path = "/" if kind == "bare" else "/ws"
    sem = asyncio.Semaphore(64)
    count = [0]

    async def open_one(i: int) -> ClientConnection:
        async with sem:
            ws = await connect(
                f"ws://127.0.0.1:{port}{path}",
                subprotocols=None if kind == "bare" else ["unbroken.v1"],  # type: ignore[list-item]
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=600,
            )
            if kind == "bare":
                await ws.send("{}")
                return ws
            from unbroken.protocol.client_session import ClientSession
            from unbroken.protocol.frames import encode

            cs = ClientSession(caps=("batch",))
            await ws.send(encode(cs.connect()).decode())
            cs.receive(await ws.recv())
            for f in cs.after_welcome():
                await ws.send(encode(f).decode())
            start = cs.start(f"r{i}", "lockstep", {})
            assert start is not None
            await ws.send(encode(start).decode())
            return ws

    def token() -> None:
        count[0] += 1
        if count[0] == streams:
            count[0] = 0
            out.write(b"round\n")

    async def read(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for msg in ws:
                if kind == "bare":
                    token()
                    continue
                assert isinstance(msg, str)
                for line in msg.split("\n"):
                    if line.startswith('{"t":"events"'):
                        for item in json.loads(line)["items"]:
                            d = item if isinstance(item, str) else item.get("d", "")
                            for _ in range(len(d) // 20):
                                token()

    links = await asyncio.gather(*(open_one(i) for i in range(streams)))
    readers = [asyncio.ensure_future(read(ws)) for ws in links]
    out.write(b"ready\n")
    await asyncio.gather(*readers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["unbroken", "bare"], required=True)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20, help="tokens per stream (measured)")
    ap.add_argument(
        "--detail",
        action="store_true",
        help="also user/system time, context switches, page faults, collections per token",
    )
    ap.add_argument(
        "--perf",
        metavar="EVENTS",
        help="perf stat -e EVENTS of the server over the rounds (per token)",
    )
    ap.add_argument("--strace", action="store_true", help="strace -c syscalls per token")
    ap.add_argument(
        "--perf-record",
        metavar="FILE",
        help="perf record (cpu-clock samples) of the server over the rounds into FILE",
    )
    ap.add_argument(
        "--pin",
        metavar="S,C",
        help="run the server on CPU S and the client process on CPU C (sched_setaffinity)",
    )
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    import uvloop

    if a.pin:
        server_cpu, client_cpu = (int(c) for c in a.pin.split(","))
        os.sched_setaffinity(0, {client_cpu if a.client else server_cpu})
        _CLIENT_ARGS[:] = ["--pin", a.pin]
    if a.client:
        uvloop.run(_client(a.server, a.port, a.streams))
        return
    run = _bare if a.server == "bare" else _unbroken
    probe = _Probe(a.detail, a.perf, a.strace, a.perf_record)
    cpu = uvloop.run(run(a.streams, a.rounds, probe))
    tokens = a.streams * a.rounds
    print(
        json.dumps(
            {
                "server": a.server,
                "streams": a.streams,
                "rounds": a.rounds,
                "cpu_us_per_token": round(1e6 * cpu / tokens, 2),
                **probe.out,
            }
        )
    )
    sys.stdout.flush()
    os._exit(0)  # the teardown of every connection is not the per-token path


if __name__ == "__main__":
    main()
