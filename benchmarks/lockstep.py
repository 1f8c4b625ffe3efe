"""The server's per-token path in lockstep, for an instruction count independent of load.

N connections (one stream each, the ``batch`` cap, as the Python client) are served by
the real hub, producer, memory log, attachments and connections; each connection's
transport takes every send at once. Every agent writes one token per round; a round
starts when the last one's tokens were all sent (a counter in the transport, no scan of
the connections). Printed: CPU µs per token (``time.process_time``; noisy on a shared
machine). For a figure the machine's load does not move, ``python -m
benchmarks.instructions`` counts instructions under valgrind at two round counts (after
a warm-up run) and takes the difference per token; ``--heartbeat 1000`` keeps the
heartbeat's sweep out of the count (it runs on wall time).
Results: ``benchmarks/results/serverpath_wave3.json``; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import struct
import time
from typing import Any

from benchmarks.common import bench_app
from benchmarks.paced import build_app, stamp
from unbroken.protocol.frames import Hello, Start, encode
from unbroken.server import Output, Request
from unbroken.server.connection import ConnectInfo, Connection

_SHORT = struct.Struct("!BB").pack


class _Transport:
    """Takes every send at once (as the WebSocket layer's direct send, when nothing
    needs waiting for); gives the connection its hello and start, then waits."""

    def __init__(self, frames: list[str], count: list[Any]) -> None:
        self._frames = frames
        self._count = count  # [sent, target, future set when sent reaches target]
        self._gone = asyncio.get_running_loop().create_future()
        self.disconnect_code: int | None = None
        self.written = b""

    async def receive(self) -> str | bytes | None:
        if self._frames:
            return self._frames.pop(0)
        await self._gone
        return None

    def send_nowait(self, data: bytes) -> bool:
        """As the WebSocket layer's direct send (``send_text_now``): the frame header
        packed and joined to the bytes, then counted, all without a coroutine."""
        self.written = _SHORT(0x81, len(data)) + data if len(data) < 126 else data
        c = self._count
        c[0] += 1
        if c[0] >= c[1] and c[2] is not None and not c[2].done():
            c[2].set_result(None)
        return True

    async def send(self, data: bytes) -> None:
        c = self._count
        c[0] += 1
        if c[0] >= c[1] and c[2] is not None and not c[2].done():
            c[2].set_result(None)

    async def close(self, code: int, reason: str = "") -> None:
        if not self._gone.done():
            self._gone.set_result(None)


async def measure(streams: int, rounds: int, reps: int, heartbeat: float) -> dict[str, Any]:
    logging.getLogger("unbroken").setLevel(logging.ERROR)
    base = build_app()
    app = bench_app(base.store, heartbeat=heartbeat, sweep_every=1000.0)
    # the load monitor, the stall watchdog and retention's sweep run on wall time
    # (per second, not per token; under valgrind a run lasts minutes): kept out
    app.hub.set_admission(
        dataclasses.replace(app.hub.admission, max_loop_lag=None, stall_timeout=None)
    )
    app.hub.ensure_started()
    loop = asyncio.get_running_loop()
    total = 30 + rounds * reps + 2
    # one gate per round, set in turn: an agent waits on its own round's gate, however
    # late its task first runs (a run is registered before its task's first step: a
    # shared gate swapped at each round was missed by agents not started yet, and the
    # first round then waited forever for their tokens)
    gates = [loop.create_future() for _ in range(total)]
    waiting = [0, loop.create_future()]  # agents at their first gate; set when all are

    @app.agent("lockstep")
    async def lockstep(req: Request, out: Output) -> None:
        waiting[0] += 1
        if waiting[0] == streams:
            waiting[1].set_result(None)
        for gate in gates:
            await gate
            await out.text(stamp(0.0))

    count: list[Any] = [0, 1 << 60, None]
    hello = encode(Hello(caps=["batch"])).decode()
    tasks = []
    for i in range(streams):
        start = encode(Start(req=f"r{i}", agent="lockstep", input={})).decode()
        conn = Connection(
            app.config, app.hub, app.store, _Transport([hello, start], count), ConnectInfo()
        )
        tasks.append(asyncio.ensure_future(conn.run()))
    await waiting[1]
    # every connection's two answers (to the hello and to the start) sent before the
    # first round: one sent later would count as a token
    while count[0] < 2 * streams:  # noqa: ASYNC110 - polled: the sends are counted only
        await asyncio.sleep(0.01)
    rounds_done = 0

    async def one_round() -> None:
        nonlocal rounds_done
        count[1], count[2] = count[0] + streams, loop.create_future()
        gates[rounds_done].set_result(None)
        rounds_done += 1
        await count[2]

    for _ in range(30):
        await one_round()
    per_token = []
    for _ in range(reps):
        c0 = time.process_time()
        for _ in range(rounds):
            await one_round()
        per_token.append(1e6 * (time.process_time() - c0) / (rounds * streams))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": streams,
        "rounds": rounds,
        "cpu_us_per_token_min": round(min(per_token), 2),
        "cpu_us_per_token": [round(x, 2) for x in per_token],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20, help="tokens per stream per repeat")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--heartbeat", type=float, default=0.4)
    a = ap.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(measure(a.streams, a.rounds, a.reps, a.heartbeat))))


if __name__ == "__main__":
    main()
