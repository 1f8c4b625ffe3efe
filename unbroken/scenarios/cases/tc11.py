"""TC11: browser tab suspension and wake during a stream. The answer streams to the JS
client in a real chromium page (Debian's, started here with a debugging port and
attached over CDP with ``no_defaults``), through the run's fault proxy; mid-answer the
browser itself fails, one way per variant:

- ``freeze``: a real Page Lifecycle freeze (CDP ``Page.setWebLifecycleState`` frozen,
  then active): the page must see ``freeze`` and ``resume``; chromium kills the socket
  on resume and the client resumes from its cursor;
- ``stop``: every renderer process SIGSTOPped, then SIGCONTed (a stalled tab);
- ``offline``: the browser offline (``context.set_offline``; frames held both ways, the
  socket not closed), then online: the client finds the silence, reconnects at once
  when back online;
- ``reload``: the tab reloaded: the new page picks the same stream up from the cursor
  it kept in ``sessionStorage``, without a second agent run.

The generic checks judge the page's stream (its parts against the generated answer, the
end digest it verified against the server log's, the agent run once, every resume from
the right seq on the wire); the case adds what the variant must show. Without chromium,
Playwright or the built bundle (``./dev setup``) its runs are skipped with the reason.
The fault-free baseline is the Python client's run of the same answer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode

from ...client import ConnectionEvent
from ...server import Output, Request
from .. import browser
from ..context import HEARTBEAT, EventWatch, ForeignStream, RunState
from ..run_result import Check, RunResult
from ..spec import FaultMode, RunSpec
from .base import Case, Row

#: The browser faults (the runs' variants), each with the way its connection dies.
VARIANTS: Final[dict[str, FaultMode]] = {
    "freeze": "fin",
    "stop": "fin",
    "offline": "blackhole",
    "reload": "fin",
}
#: How long a freeze, a stop, an offline spell lasts (s), per tier.
HOLD: Final[dict[str, dict[str, float]]] = {
    "quick": {"freeze": 1.5, "stop": 1.5, "offline": 2.5},
    "full": {"freeze": 3.0, "stop": 3.0, "offline": 5.0},
}
#: How long the page may take to finish after the fault (s).
FINISH: Final = 40.0


def variant_of(spec: RunSpec) -> str:
    """The browser fault of ``spec`` (a run that names none: the freeze, the seed's)."""
    return spec.variant or "freeze"


def _row(size: str, timing: str, variant: str) -> Row:
    return (size, timing, "clean", VARIANTS[variant], variant)


class TC11(Case):
    id = "TC11"
    shape = "multipart"
    default_size = "large"

    def quick_rows(self) -> list[RunSpec]:
        return [self.spec(_row("large", "mid", v)) for v in ("freeze", "offline", "reload")]

    def full_rows(self) -> list[RunSpec]:
        rows = [
            self.spec(_row(size, timing, v), "full")
            for v in VARIANTS
            for size, timing in (("medium", "early"), ("large", "mid"), ("large", "late"))
        ]
        rows += [self.spec(_row("xlarge", "mid", v), "full") for v in ("freeze", "stop")]
        return rows

    def pace(self, spec: RunSpec) -> float:
        # long enough that a fault timed by the page's progress lands mid-answer
        return 3.0 if spec.profile == "quick" else 4.0

    def skip_reason(self, spec: RunSpec) -> str | None:
        return browser.missing()

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        if not run.faulty:
            await python_clients(run)  # the baseline: the same answer, Python's client
            return
        await asyncio.wait_for(_drive_page(self, run), 90.0 + 4 * self.pace(run.spec))

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        if not run.foreign:
            return [Check("TC11 the page streamed the answer", False, "no page stream")]
        report = run.foreign[0].report
        log: dict[str, Any] = report.get("log", {})
        variant = variant_of(run.spec)
        out = [
            Check(
                f"TC11 the {variant} hit mid-answer (the page not done, events still to come)",
                report.get("mid", False),
                f"{report.get('received_at_fault', 0)} of {report.get('total', 0)} events "
                "received when it hit",
            )
        ]
        conn = log.get("conn", [])
        life = [e[0] for e in log.get("lifecycle", [])]
        if variant == "freeze":
            seen = (
                "freeze" in life
                and "resume" in life
                and life.index("freeze") < life.index("resume")
            )
            out.append(
                Check(
                    "TC11 the page saw freeze, then resume (a real Page Lifecycle freeze)",
                    seen,
                    f"lifecycle events: {', '.join(life) or 'none'}",
                )
            )
            resumed = _after(conn, "connected", _when(log, "resume"))
            out.append(
                Check(
                    "TC11 the stream resumed when the tab became active: reconnected after "
                    "resume, the rest of the answer received",
                    resumed is not None and bool(log.get("afterResume")),
                    f"reconnected {_ms(resumed, _when(log, 'resume'))} after resume; first "
                    f"event {_first(log.get('afterResume'))} after it",
                )
            )
        elif variant == "stop":
            before = int(report.get("received_at_fault", 0))
            out.append(
                Check(
                    "TC11 the renderer was stopped, then continued, and received the rest",
                    report.get("stopped", 0) > 0 and int(log.get("received", 0)) > before,
                    f"{report.get('stopped', 0)} renderer processes stopped; events: {before} "
                    f"at the stop, {log.get('received', 0)} at the end",
                )
            )
        elif variant == "offline":
            online = _when(log, "online")
            ok = "offline" in life and online is not None
            back = _after(conn, "connected", online)
            lost = [e for e in conn if e["kind"] == "disconnected"]
            fast = not lost or (back is not None and online is not None and back - online < 500)
            out.append(
                Check(
                    "TC11 the page went offline and online; back online, the client "
                    "reconnected at once (< 0.5 s, not after its backoff)",
                    ok and fast,
                    f"lifecycle: {', '.join(life)}; {len(lost)} drops; reconnected "
                    f"{_ms(back, online)} after online",
                )
            )
        elif variant == "reload":
            out.append(
                Check(
                    "TC11 the reloaded tab picked the same stream up from its saved cursor",
                    bool(log.get("reloaded"))
                    and log.get("streamId") == report.get("stream_before")
                    and int(log.get("fromSeq", 0)) > 0,
                    f"reloaded {log.get('reloaded')}; stream {log.get('streamId')} (before: "
                    f"{report.get('stream_before')}); resumed from seq {log.get('fromSeq')}",
                )
            )
        return out

    def timeout_ok(self, run: RunState, checks: list[Check]) -> bool | None:
        if run.spec.fault != "blackhole" or not run.foreign:
            return None
        log = run.foreign[0].report.get("log", {})
        found = log.get("detections") or []
        if not found:
            return None  # nothing was silent long enough to be found
        # found by the page's silence detector: within three heartbeats plus the RTO
        return bool(found[0] / 1000 <= 3 * HEARTBEAT + 2.0 + 0.35)


def _when(log: dict[str, Any], kind: str) -> float | None:
    """Page time (ms) of the first lifecycle event ``kind``."""
    return next((float(e[2]) for e in log.get("lifecycle", []) if e[0] == kind), None)


def _after(conn: list[dict[str, Any]], kind: str, t: float | None) -> float | None:
    if t is None:
        return None
    return next((float(e["at"]) for e in conn if e["kind"] == kind and e["at"] > t), None)


def _ms(t: float | None, since: float | None) -> str:
    return "never" if t is None or since is None else f"{t - since:.0f} ms"


def _first(values: Any) -> str:
    return f"{values[0]:.0f} ms" if values else "never"


async def _offset(page: Any) -> float:
    """Monotonic seconds minus the page's ``performance.now()`` seconds (its clock): the
    sample with the shortest round trip of five, read at its middle."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        m0 = time.monotonic()
        now = float(await page.evaluate("performance.now()"))
        m1 = time.monotonic()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, (m0 + m1) / 2 - now / 1000)
    assert best is not None
    return best[1]


def _events(conn: list[dict[str, Any]], offset: float) -> list[ConnectionEvent]:
    return [
        ConnectionEvent(
            str(e["kind"]),
            float(e["at"]) / 1000 + offset,
            cause=str(e.get("cause") or ""),
            code=e.get("code"),
            attempt=int(e.get("attempt") or 0),
            from_seq=int(e.get("fromSeq") or 0),
        )
        for e in conn
    ]


async def _drive_page(case: TC11, run: RunState) -> None:
    """Stream the answer to the JS client in a real page, fault the browser mid-answer,
    wait for the page; report the stream (``run.foreign``) and its connection events."""
    spec, h = run.spec, run.h
    (expected,) = case.answers(spec)
    key = h.book.add(expected, case.pace(spec), "page", tick=case.tick)
    agent_name = f"page-{key}"
    replay, _ = h.app.agents["answer"]

    async def page_agent(req: Request, out: Output) -> None:
        # the page asks for its own agent; it replays the book's answer like the others
        await replay(dataclasses.replace(req, input={"answer": key}), out)

    h.app.agent(agent_name)(page_agent)
    total = len(expected.events) + 1
    at = max(1, int(total * spec.timing_info.fraction(spec.repeat)))
    variant = variant_of(spec)
    hold = HOLD[spec.profile].get(variant, 0.0)
    watch = EventWatch(0)
    run.watches.append(watch)
    report: dict[str, Any] = {"total": total}
    async with browser.page_server() as site, browser.start_own_chromium() as own:
        page = own.page
        query = urlencode({"ws": h.url, "agent": agent_name, "size": 0})
        run.t_start = time.monotonic()
        await page.goto(f"{site}?{query}")
        await page.wait_for_function(
            f"window.log && window.log.received >= {at}", polling=10, timeout=60_000
        )
        run.t_started = run.t_start
        state = await page.evaluate("[window.log.received, window.log.done, window.log.streamId]")
        report["received_at_fault"] = int(state[0])
        report["mid"] = state[1] is False and int(state[0]) < total
        report["stream_before"] = state[2]
        before: list[ConnectionEvent] = []
        if variant == "freeze":
            run.mark(f"the tab frozen for {hold:g} s (Page Lifecycle, CDP)")
            await browser.lifecycle(own.context, page, "frozen")
            await asyncio.sleep(hold)  # the tab stays frozen this long (the fault)
            run.held_until = time.monotonic()
            await browser.lifecycle(own.context, page, "active")
        elif variant == "stop":
            pids = await browser.renderer_pids(own.browser)
            report["stopped"] = len(pids)
            run.mark(f"{len(pids)} renderer processes stopped for {hold:g} s (SIGSTOP)")
            with browser.stopped(pids):
                await asyncio.sleep(hold)  # the renderer stays stopped this long (the fault)
                run.held_until = time.monotonic()
        elif variant == "offline":
            run.mark(f"the browser offline for {hold:g} s (set_offline)")
            await own.context.set_offline(True)
            await asyncio.sleep(hold)  # the outage itself (the fault)
            run.held_until = time.monotonic()
            await own.context.set_offline(False)
        elif variant == "reload":
            offset = await _offset(page)
            before = _events(await page.evaluate("window.log.conn"), offset)
            t = run.mark("the tab reloaded")
            before.append(ConnectionEvent("disconnected", t, cause="the tab was reloaded"))
            await page.reload()
        else:
            raise ValueError(f"unknown browser fault {variant!r}")
        await page.wait_for_function(browser.DONE, polling=20, timeout=FINISH * 1000)
        offset = await _offset(page)
        log: dict[str, Any] = await page.evaluate("window.log")
    for ev in before + _events(log["conn"], offset):
        watch(ev)
    # the tab let go when the page itself says so (its clock, as its connection events')
    back = _when(log, {"freeze": "resume", "offline": "online"}.get(variant, ""))
    if back is not None:
        run.held_until = back / 1000 + offset
    # the page's log without the parts' bodies (they are the stream's parts)
    report["log"] = {k: v for k, v in log.items() if k != "parts"}
    error = f"{log['errorName']}: {log['error']}" if log.get("error") is not None else None
    run.foreign.append(
        ForeignStream(
            key=key,
            expected=expected,
            stream_id=str(log.get("streamId") or report["stream_before"]),
            parts={str(k): str(v) for k, v in log.get("parts", {}).items()},
            digest=str(log.get("digest") or ""),
            status=str(log.get("status") or ""),
            complete=bool(log.get("complete")),
            error=error,
            started_at=run.t_start,
            ended_at=None if error else (log["loaded"] + log["elapsed"]) / 1000 + offset,
            report=report,
        )
    )


CASE = TC11()
