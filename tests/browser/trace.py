"""Where a recovery's time goes, step by step, across the page and this process.

    .venv/bin/python -m tests.browser.trace [--cuts 30] [--pace 0.02] [--out FILE]

Runs ``measure.py``'s cuts (``--only-recovery``) with marks in this process, on the
wall clock: the fault proxy's accept and upstream connect, uvicorn's connection,
request and accept, the server's hello, resume and answer; the page's own times
(its second socket, ``open``, the first message, the first ``events`` message, the
first missing event rendered) are joined to them through ``performance.timeOrigin``.
Prints, per step, the median / 90th percentile / mean of each step's time over the
cuts, then the event-loop callbacks over 1 ms seen during recoveries (what the
one Python process was busy with meanwhile: the server, the proxy, the agent and
Playwright share its loop). A diagnostic: it wraps internals (monkeypatching), so
its own cost is in its figures; ``measure.py`` gives the figures to report.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets import websockets_sansio_impl as uv

from unbroken.chaos import connection as proxy_conn
from unbroken.chaos import proxy as proxy_mod
from unbroken.server import connection as server_conn

from . import measure

MARKS: list[tuple[str, float]] = []
SLOW: list[tuple[float, float, str]] = []
PAGES: list[dict[str, Any]] = []


def _ms() -> float:
    return time.time() * 1000


def _mark_call(cls: type, name: str, label: str) -> None:
    orig: Callable[..., Any] = getattr(cls, name)

    def wrapped(self: Any, *a: Any, **k: Any) -> Any:
        MARKS.append((label, _ms()))
        return orig(self, *a, **k)

    setattr(cls, name, wrapped)


def _mark_await(cls: type, name: str, label: str, end: str | None = None) -> None:
    orig: Callable[..., Any] = getattr(cls, name)

    async def wrapped(self: Any, *a: Any, **k: Any) -> Any:
        MARKS.append((label, _ms()))
        try:
            return await orig(self, *a, **k)
        finally:
            if end is not None:
                MARKS.append((end, _ms()))

    setattr(cls, name, wrapped)


def _mark_data(cls: type, label: str) -> None:
    orig: Callable[..., Any] = cls.data_received  # type: ignore[attr-defined]

    def wrapped(self: Any, data: bytes) -> None:
        MARKS.append((label, _ms()))
        orig(self, data)

    cls.data_received = wrapped  # type: ignore[attr-defined]


def install() -> None:
    """Wrap the steps of a new connection and every event-loop callback."""
    _mark_call(proxy_mod.FaultProxy, "_new_client_side", "proxy_accept")
    _mark_await(proxy_conn.ProxiedConnection, "connect_upstream", "proxy_connect", "proxy_up")
    _mark_data(proxy_conn._Side, "proxy_data")
    _mark_call(uv.WebSocketsSansIOProtocol, "connection_made", "uv_connection")
    _mark_call(uv.WebSocketsSansIOProtocol, "handle_connect", "uv_request")
    _mark_data(uv.WebSocketsSansIOProtocol, "uv_data")
    send = uv.WebSocketsSansIOProtocol.send

    async def uv_send(self: Any, message: Any) -> None:
        if message["type"] == "websocket.accept":
            MARKS.append(("uv_accept", _ms()))
        await send(self, message)

    uv.WebSocketsSansIOProtocol.send = uv_send  # type: ignore[method-assign]
    _mark_await(server_conn.Connection, "_hello", "hello", "welcome_sent")
    _mark_call(server_conn.Connection, "_resume_later", "resume")
    _mark_call(server_conn.Connection, "_answer_resume", "resume_answered")

    run = asyncio.events.Handle._run

    def timed(self: asyncio.Handle) -> None:
        t0 = time.perf_counter()
        run(self)
        took = (time.perf_counter() - t0) * 1000
        if took > 1:
            SLOW.append((_ms() - took, took, _describe(self)))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    async def run_page(browser: Any, url: str) -> dict[str, Any]:
        ctx = await browser.new_context()
        try:
            await ctx.add_init_script(measure.WS_PROBE)
            page = await ctx.new_page()
            await page.goto(url)
            await page.wait_for_function(measure.DONE, timeout=60_000, polling=20)
            log: dict[str, Any] = await page.evaluate(
                "({error: log.error, recoveries: log.recoveries, detections: log.detections,"
                " received: log.received, conn: log.conn, ws: window.__ws,"
                " origin: performance.timeOrigin})"
            )
            PAGES.append(log)
            return log
        finally:
            await ctx.close()

    measure.run_page = run_page  # type: ignore[assignment]


def _describe(handle: asyncio.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return "task " + str(getattr(coro, "__qualname__", coro))
    protocol = getattr(owner, "_protocol", None)
    if protocol is not None:
        return f"{getattr(callback, '__name__', callback)} {type(protocol).__qualname__}"
    return re.sub(r" at 0x[0-9a-f]+", "", repr(callback))[:90]


#: the steps in order: this process's marks and the page's (``page_…``)
STEPS = [
    "page_socket",
    "proxy_accept",
    "proxy_connect",
    "proxy_up",
    "uv_connection",
    "uv_request",
    "uv_accept",
    "page_open",
    "proxy_data_after_open",
    "uv_data_after_open",
    "hello",
    "welcome_sent",
    "resume",
    "resume_answered",
    "page_first_message",
    "page_first_events",
    "page_rendered",
]


def timelines() -> list[dict[str, float]]:
    """Each recovery's steps, in ms after the page's ``disconnected``."""
    rows = []
    for log in PAGES:
        origin = log["origin"]
        lost = origin + next(c["at"] for c in log["conn"] if c["kind"] == "disconnected")
        done = lost + log["recoveries"][0]
        ws = log["ws"]
        second = ws["opened"][1][0]
        msgs = [m for m in ws["messages"] if m[0] == second]
        first_events = next(m for m in msgs if '"t":"events"' in m[4])
        row = {
            "page_socket": origin + ws["opened"][1][1],
            "page_open": origin + ws["open"].get(str(second), msgs[0][1]),
            "page_first_message": origin + msgs[0][1],
            "page_first_events": origin + first_events[1],
            "page_rendered": done,
        }
        for name, at in MARKS:
            if lost - 5 <= at <= done and name not in row:
                row[name] = at
        for name in ("proxy_data", "uv_data"):  # the hello's bytes, after the upgrade
            after = [at for n, at in MARKS if n == name and row["page_open"] - 1 <= at <= done]
            if after:
                row[f"{name}_after_open"] = after[0]
        row = {k: round(v - lost, 2) for k, v in row.items()}
        row["slow"] = [  # type: ignore[assignment]
            (round(at - lost, 1), round(took, 1), what)
            for at, took, what in SLOW
            if lost - 20 <= at <= done
        ]
        rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    steps = {}
    prev = None
    for step in STEPS:
        if prev is not None:
            xs = sorted(r[step] - r[prev] for r in rows if step in r and prev in r)
            if xs:
                steps[f"{prev} -> {step}"] = {
                    "p50_ms": round(statistics.median(xs), 2),
                    "p90_ms": round(xs[int(0.9 * len(xs))], 2),
                    "mean_ms": round(statistics.mean(xs), 2),
                }
        prev = step
    busy: collections.Counter[str] = collections.Counter()
    for r in rows:
        for _at, took, what in r["slow"]:
            busy[what] += took
    return {
        "steps": steps,
        "loop_busy_per_recovery_ms": {
            k: round(v / max(1, len(rows)), 1) for k, v in busy.most_common(12)
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=30)
    ap.add_argument("--pace", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--out", help="also write every recovery's timeline (JSON) here")
    a = ap.parse_args()
    install()
    figures = asyncio.run(measure.main(a.cuts, 0, a.seed, True, a.pace))
    rows = timelines()
    out = {
        "load_average": [figures["load_average_at_start"], [round(x, 2) for x in os.getloadavg()]],
        "recovery": figures["recovery_after_cut"]["all"],
        **report(rows),
    }
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({**out, "recoveries": rows}, f, indent=0)


if __name__ == "__main__":
    main()
