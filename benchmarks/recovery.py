"""Recovery latency: server-side aborts during a stream, cut → first missing event.

A real uvicorn server and the unbroken client on loopback, in one process. Two modes:
``live`` (the agent writes ~20k tokens/s and the client keeps up: the usual case) and
``behind`` (the agent writes as fast as it can and the client, on the same core,
reads a backlog behind a 1 MiB window, so a cut also waits for buffered frames to be
processed). Every ``--every`` events the server-side socket is aborted (RST, no close
frame). For each cut we time: detection (cut → client's ``disconnected``), reconnect
(→ ``connected``), resume (→ ``resumed``) and recovery: cut → the first event the
client did not hold when it noticed the drop.

    python -m benchmarks.recovery --cuts 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from unbroken import BackoffPolicy
from unbroken.client import Client, ConnectionEvent
from unbroken.server import Output, Request, Unbroken
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore
from unbroken.testing import RunningServer, serve

RESULTS = Path(__file__).parent / "results" / "recovery.json"


def abort_server_side(srv: RunningServer) -> int:
    n = 0
    for protocol in list(srv.server.server_state.connections):
        transport = getattr(protocol, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()
            n += 1
    return n


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(cuts: int, every: int, tokens: int, mode: str) -> dict[str, Any]:
    store = MemoryStore(Retention(max_stream_bytes=512 * 1024 * 1024, max_total_bytes=2**31))
    app = Unbroken(store=store, allow_anonymous=True)

    @app.agent("tokens")
    async def agent(req: Request, out: Output) -> None:
        for i in range(tokens):
            await out.text(f"token-{i:012d} ")  # 20 bytes
            if mode == "live" and i % 20 == 19:
                await asyncio.sleep(0.001)  # ~20k tokens/s: the client keeps up

    samples: list[dict[str, float]] = []
    state: dict[str, Any] = {"cut_at": None, "held": None, "marks": {}}

    def on_event(ev: ConnectionEvent) -> None:
        if state["cut_at"] is not None and ev.kind in ("disconnected", "connected", "resumed"):
            state["marks"].setdefault(ev.kind, ev.at)

    policy = BackoffPolicy(base=0.001, cap=0.01, max_attempts=None, deadline=None)
    async with serve(app) as srv, Client(srv.url, policy=policy, on_event=on_event) as client:
        st = await client.start("tokens")
        session = client._session
        req = st.req
        lost = session.connection_lost

        def connection_lost() -> None:
            cs = session.by_req.get(req)
            if state["cut_at"] is not None and state["held"] is None and cs is not None:
                state["held"] = cs.seq
            lost()

        session.connection_lost = connection_lost  # type: ignore[method-assign]
        handle = client._handle
        done = asyncio.Event()
        next_cut = [every]

        def on_frame(message: str | bytes) -> bool:
            result = handle(message)
            cs = session.by_req.get(req)
            seq = cs.seq if cs is not None else 0
            now = time.monotonic()
            if state["cut_at"] is not None and state["held"] is not None and seq > state["held"]:
                m = state["marks"]
                t0 = state["cut_at"]
                samples.append(
                    {
                        "detect_ms": (m.get("disconnected", now) - t0) * 1000,
                        "reconnect_ms": (m.get("connected", now) - t0) * 1000,
                        "resume_ms": (m.get("resumed", now) - t0) * 1000,
                        "recovery_ms": (now - t0) * 1000,
                    }
                )
                state.update(cut_at=None, held=None, marks={})
                progress.update(task, completed=len(samples))
                next_cut[0] = seq + every
            if len(samples) >= cuts:
                done.set()
            elif state["cut_at"] is None and seq >= next_cut[0] and client._ready.is_set():
                state["cut_at"] = time.monotonic()
                abort_server_side(srv)
            return result

        client._handle = on_frame  # type: ignore[method-assign]
        with Progress() as progress:
            task = progress.add_task("cuts", total=cuts)
            consumer = asyncio.ensure_future(_drain(st))
            await asyncio.wait(
                [asyncio.ensure_future(done.wait()), consumer],
                return_when=asyncio.FIRST_COMPLETED,
            )
            await st.cancel()
            consumer.cancel()
    rec = [s["recovery_ms"] for s in samples]
    out: dict[str, Any] = {
        "benchmark": "recovery_latency",
        "fault": "server-side abort (RST), in-process uvicorn + unbroken client, loopback",
        "mode": mode,
        "cuts": len(samples),
        "every_events": every,
    }
    for key in ("detect_ms", "reconnect_ms", "resume_ms", "recovery_ms"):
        vals = [s[key] for s in samples]
        out[key] = {
            "p50": pct(vals, 0.50),
            "p95": pct(vals, 0.95),
            "p99": pct(vals, 0.99),
            "max": max(vals) if vals else float("nan"),
            "mean": statistics.fmean(vals) if vals else float("nan"),
        }
    out["aim"] = {"recovery_p50_ms": 10, "recovery_p99_ms": 50}
    out["met"] = bool(rec) and out["recovery_ms"]["p50"] <= 10 and out["recovery_ms"]["p99"] <= 50
    return out


async def _drain(st: Any) -> None:
    async for _ in st:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--every", type=int, default=2000, help="events between cuts")
    parser.add_argument("--quick", action="store_true", help="20 cuts, for smoke runs")
    args = parser.parse_args()
    cuts = 20 if args.quick else args.cuts
    console = Console()
    results = []
    for mode, every in (("live", args.every), ("behind", args.every)):
        tokens = cuts * (every + 15000) * 2 + 10000
        result = asyncio.run(measure(cuts, every, tokens, mode))
        results.append(result)
        table = Table(title=f"{mode}: recovery after {result['cuts']} server-side aborts (ms)")
        for col in ("phase", "p50", "p95", "p99", "max"):
            table.add_column(col)
        for key in ("detect_ms", "reconnect_ms", "resume_ms", "recovery_ms"):
            r = result[key]
            table.add_row(key[:-3], *(f"{r[q]:.2f}" for q in ("p50", "p95", "p99", "max")))
        console.print(table)
        console.print(f"aim p50 ≤ 10 ms, p99 ≤ 50 ms: {'met' if result['met'] else 'MISSED'}")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
