"""The server's own per-token cost, in one process, without sockets.

N paced streams (20 tokens/s, the :mod:`benchmarks.paced` agent), one per
connection, served by the real hub, producer, memory log, attachments and
connections; each connection's transport takes every send at once (no WebSocket
layer, no kernel). What is left is the path unbroken adds to a bare server's
``ws.send(token)``: the agent's write, the chain digest, the append, the reader's
wake-up, the frame, the connection's timers. Reported: the process's CPU in µs
per token over the window (``time.process_time``: the CPU this process got,
so a loaded machine slows it less than wall time), and, with ``--profile``, the
top functions of a cProfile of the window.

Run: ``python -m benchmarks.serverpath [--streams 1000] [--seconds 6] [--profile]``.
A measuring aid for the concurrency benchmark's per-token figure, which includes
the WebSocket layer (``python -m benchmarks.concurrency --at 1000``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import json
import logging
import pstats
import time
from typing import Any

from benchmarks.paced import build_app, stamp
from unbroken.protocol.frames import Hello, Start, encode
from unbroken.server import Output, Request
from unbroken.server.connection import ConnectInfo, Connection


class _Transport:
    """Takes every send at once; gives the connection its hello and start, then waits."""

    def __init__(self, frames: list[str], sink: list[int]) -> None:
        self._frames = frames
        self._sink = sink
        self._gone = asyncio.get_running_loop().create_future()
        self.disconnect_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._frames:
            return self._frames.pop(0)
        await self._gone
        return None

    async def send(self, data: bytes) -> None:
        self._sink[0] += 1
        self._sink[1] += len(data)

    async def close(self, code: int, reason: str = "") -> None:
        if not self._gone.done():
            self._gone.set_result(None)

    def leave(self) -> None:
        if not self._gone.done():
            self._gone.set_result(None)


def _frames(i: int) -> list[str]:
    """``hello`` (with the ``batch`` cap, as the Python client) and one ``start``."""
    hello = encode(Hello(caps=["batch"])).decode()
    start = encode(Start(req=f"r{i}", agent="lockstep", input={}))
    return [hello, start.decode()]


class _Rounds:
    """Lockstep: every agent writes one token per round; a round starts when the
    last one's tokens were all sent (each token its own append, wake-up and frame,
    whatever the machine's load)."""

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def next(self) -> None:
        fut, self.fut = self.fut, asyncio.get_running_loop().create_future()
        fut.set_result(None)


async def measure(streams: int, rounds: int, profile: bool) -> dict[str, Any]:
    logging.getLogger("unbroken").setLevel(logging.ERROR)
    app = build_app()
    # admission is not under test (as in the concurrency benchmark)
    app.hub.set_admission(dataclasses.replace(app.hub.admission, max_loop_lag=30.0))
    app.hub.ensure_started()
    gate = _Rounds()
    warm = 20
    total = warm + rounds + 1

    @app.agent("lockstep")
    async def lockstep(req: Request, out: Output) -> None:
        for _ in range(total):
            await gate.fut
            await out.text(stamp(0.0))

    sink = [0, 0]
    transports = []
    tasks = []
    conns: list[Connection] = []
    for i in range(streams):
        t = _Transport(_frames(i), sink)
        transports.append(t)
        conn = Connection(app.config, app.hub, app.store, t, ConnectInfo(client=f"c{i}"))
        conns.append(conn)
        tasks.append(asyncio.ensure_future(conn.run()))

    def sent() -> int:  # events sent on every live attachment (seq = events)
        return sum(att.flow.sent for c in conns for att in c.atts.values())

    async def settle(target: int) -> None:
        while sent() < target:  # noqa: ASYNC110 - a busy loop on purpose: each token its own tick
            await asyncio.sleep(0)

    while len(app.hub.runs) < streams:  # noqa: ASYNC110 - polled until every run started
        await asyncio.sleep(0.01)
    for _ in range(warm):
        base = sent()
        gate.next()
        await settle(base + streams)
    prof = cProfile.Profile() if profile else None
    e0, f0, c0, w0 = sent(), sink[0], time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    for _ in range(rounds):
        base = sent()
        gate.next()
        await settle(base + streams)
    if prof:
        prof.disable()
    f1, c1, w1 = sink[0], time.process_time(), time.perf_counter()
    tokens = sent() - e0
    gate.next()
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in app.hub.runs.values())), 60)
    for t in transports:
        t.leave()
    await asyncio.gather(*tasks, return_exceptions=True)
    await app.hub.shutdown(1.0)
    out: dict[str, Any] = {
        "streams": streams,
        "rounds": rounds,
        "tokens": tokens,
        "frames": f1 - f0,
        "cpu_s": round(c1 - c0, 3),
        "wall_s": round(w1 - w0, 3),
        "cpu_us_per_token": round(1e6 * (c1 - c0) / max(1, tokens), 2),
        "profiled": profile,
    }
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        out["profile"] = s.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100, help="tokens per stream measured")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    a = ap.parse_args()
    coro = measure(a.streams, a.rounds, a.profile)
    if a.loop == "uvloop":
        import uvloop

        r = uvloop.run(coro)
    else:
        r = asyncio.run(coro)
    text = r.pop("profile", "")
    print(json.dumps(r))
    if text:
        print(text)


if __name__ == "__main__":
    main()
