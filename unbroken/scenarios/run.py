"""Drives one :class:`~unbroken.scenarios.catalog.RunSpec`: a server on its own thread,
a fault proxy and clients on loopback (in network namespaces for a kernel condition);
the case's answers streamed at its pace, its fault plan played, the run assessed.

:func:`run_one` runs one spec (and, once per answer, the same run without a fault: the
baseline) and returns a :class:`~unbroken.scenarios.results.RunResult`. What differs
between scenarios is asked of the spec's :class:`~unbroken.scenarios.cases.Case`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..chaos import GeneratedAnswer
from ..errors import ReconnectExhausted
from ..protocol.backoff import BackoffPolicy
from .answers import answer
from .artefacts import write_artefacts
from .assess import assess
from .cases import case_for
from .cases.base import Case
from .catalog import KERNEL_CONDITIONS, SCENARIO_BY_ID, RunSpec
from .context import HEARTBEAT, Baseline, EventWatch, RunState
from .faults import heal, open_gate_when_held, point_holds, release_when_played, topology
from .harness import (
    CHAOS_POLICY,
    ChaosHarness,
    Hold,
    LogCapture,
    ResourceSampler,
    StreamRecorder,
    reap,
)
from .run_result import RunResult

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ what a spec streams
def answers_for(spec: RunSpec) -> list[GeneratedAnswer]:
    """The answers a run streams (one per stream)."""
    return case_for(spec.scenario).answers(spec)


def layout(spec: RunSpec) -> tuple[int, int]:
    """(clients, streams per client)."""
    return case_for(spec.scenario).layout(spec)


def pace(spec: RunSpec) -> float:
    """Seconds the agent takes to write each answer."""
    return case_for(spec.scenario).pace(spec)


def policy(spec: RunSpec) -> BackoffPolicy:
    """The clients' reconnect policy: the case's, else one that outlasts a long silent
    outage, else the chaos suite's."""
    own = case_for(spec.scenario).policy(spec)
    if own is not None:
        return own
    if spec.condition == "long_outage":
        # the client must outlast the outage: a deadline past its end
        deadline = spec.profile_info.long_outage + 30.0
        return BackoffPolicy(base=0.05, cap=0.5, max_attempts=None, deadline=deadline)
    return CHAOS_POLICY


# ------------------------------------------------------------------ baseline
_BASELINES: dict[tuple[str, int, int, str, int], Baseline] = {}
#: At most this many fault-free runs per baseline (None: each case's
#: :attr:`~.cases.Case.baseline_runs`), and none for a case that does not read its
#: baseline (:attr:`~.cases.Case.reads_baseline`). The project's own tests take 1. What
#: reads a baseline: a case's check that compares a run's total time with the
#: baseline's (``base.total_s``, so through ``result.passed`` every test of that case;
#: the cap leaves its best of two: :attr:`~.cases.Case.checks_baseline`), and fault
#: plans (faults.py: a throttle's rate, a gradual fault's ramp point and a byte cut's
#: offset come from the baseline's time and bytes). Those plans take one run: a fault
#: lands at its byte offset or at its count of events received, whichever comes first.
max_baseline_runs: int | None = None


def _baseline_key(spec: RunSpec) -> tuple[str, int, int, str, int]:
    family = case_for(spec.scenario).baseline_family(spec)
    return (family, spec.size_bytes, spec.repeat, spec.profile, layout(spec)[0])


# ------------------------------------------------------------------ one run
@dataclass(frozen=True, slots=True)
class AgentStreams:
    """What a run streams instead of its case's generated answers: your agents (chaos
    against your own service). Stream ``i`` of a run calls ``calls[i % len(calls)]``,
    whose fault-free run had ``events[i % len(calls)]`` events and took ``seconds``."""

    calls: Sequence[tuple[str, Any]]
    """(agent, input) per stream, in rotation."""
    events: Sequence[int]
    seconds: float
    token: str | None = None
    """The clients' token (an app that requires authentication)."""


async def _stream_all(run: RunState, streams: AgentStreams | None = None) -> None:
    """Open the clients, start every stream, play the fault plan (a faulty run), wait
    for the streams; then, when the case's client gives up, resume with a new one.
    ``streams``: your agents instead of the case's answers (the case's faults, not its
    answers)."""
    spec = run.spec
    h = run.h
    case = case_for(spec.scenario)
    run.at_cut = case.at_cut if streams is None else None
    n_clients, per_client = case.layout(spec)
    answers = case.answers(spec) if streams is None else []
    seconds = case.pace(spec) if streams is None else streams.seconds
    reconnect = policy(spec)
    extra: dict[str, Any] = {}
    if streams is not None and streams.token is not None:
        extra["token"] = streams.token
    async with contextlib.AsyncExitStack() as stack:
        for i in range(n_clients):
            watch = EventWatch(i)
            client = h.client(
                policy=reconnect,
                seed=1000 * spec.repeat + i,
                on_event=watch,
                open_timeout=case.open_timeout,
                **extra,
            )
            run.clients.append(client)
            run.watches.append(watch)
        await asyncio.gather(*(stack.enter_async_context(c) for c in run.clients))
        if n_clients == 1:
            # the 101 response and the welcome: what a connection carries before any stream
            run.welcome_bytes = (await h.proxy.wait_connection(1)).downstream.sent
        early = case.early_faults(run) if run.faulty else None
        # the default plan cuts at a fraction of the answer: each agent waits before its
        # last event until the fault is on the wire, so the answer cannot outrun the cut
        holds: list[Hold] = []
        if (
            run.faulty
            and streams is None
            and early is None
            and spec.timing_info.at is None
            and type(case).plan_faults is Case.plan_faults
        ):
            holds = point_holds(run, answers)
        loop = asyncio.get_running_loop()
        helpers = (
            [
                loop.create_task(open_gate_when_held(run, holds)),
                loop.create_task(release_when_played(run, holds)),
            ]
            if holds
            else []
        )

        def release_all(_: object = None) -> None:
            for hold in holds:
                hold.release()

        async def stop_helpers() -> None:
            release_all()
            for helper in helpers:
                await reap(helper)

        stack.push_async_callback(stop_helpers)

        run.t_start = time.monotonic()
        tick = case.tick

        async def start_client(ci: int) -> None:
            client = run.clients[ci]
            for k in range(per_client):
                if streams is not None:
                    agent, given = streams.calls[(ci * per_client + k) % len(streams.calls)]
                    rec = await h.stream(
                        client, agent, given, on_event=run.gate.on_event, key=f"s{ci}-{k}"
                    )
                    run.recs.append(rec)
                    run.owner[id(rec)] = ci
                    continue
                a = answers[ci * per_client + k]
                rec = await h.start(
                    client,
                    a,
                    seconds=seconds,
                    tick=tick,
                    on_event=run.gate.on_event,
                    key=f"s{ci}-{k}",
                    hold=holds[ci * per_client + k] if holds else None,
                )
                run.recs.append(rec)
                run.owner[id(rec)] = ci

        driver: asyncio.Task[None] | None = None
        if early is not None:
            driver = loop.create_task(early)
        await asyncio.gather(*(start_client(ci) for ci in range(n_clients)))
        run.t_started = time.monotonic()
        if run.faulty and driver is None:
            if streams is not None:
                n = n_clients * per_client
                total = sum(streams.events[i % len(streams.events)] for i in range(n))
            else:
                total = sum(len(a.events) + 1 for a in answers)
            driver = loop.create_task(case.plan_faults(run, total))
            driver.add_done_callback(release_all)  # a plan that never faults holds none
        budget = 90.0 + 4 * seconds + case.extra_budget
        done = asyncio.gather(*(rec.done() for rec in run.recs))
        try:
            await asyncio.wait_for(done, budget)
        except TimeoutError:
            run.notes.append(f"timed out after {budget:.0f} s waiting for the streams")
            raise
        finally:
            run.throttled_at_end = bool(run.throttle) and all(
                h.proxy.get_toxic(t.name) is t for t in run.throttle
            )
            run.lossy_at_end = bool(run.kernel) and all(f.active for f in run.kernel)
            if driver is not None and not driver.done():
                if case.plan_grace:
                    try:
                        await asyncio.wait_for(asyncio.shield(driver), case.plan_grace)
                    except TimeoutError:
                        driver.cancel()
                else:
                    driver.cancel()
                await reap(driver)
            elif driver is not None and driver.done() and not driver.cancelled():
                exc = driver.exception()
                if exc is not None:
                    run.notes.append(f"fault driver failed: {exc!r}")
            for cancel in run.cancel_at_end:
                cancel()
            await stop_helpers()
            if h.topology is not None and run.kernel:
                await asyncio.to_thread(heal, h.topology)
        await run.snapshot_done()
        if run.faulty and case.gives_up(spec):
            await _resume_with_new_client(run, **extra)


async def _resume_with_new_client(run: RunState, **client_options: Any) -> None:
    """A client that gave up: once the network is back, a new client picks each stream
    up from the cursor the first one saved."""
    h = run.h
    for rec in run.recs:
        if not isinstance(rec.error, ReconnectExhausted):
            continue
        run.exhausted.append(rec.error)
        cursor = rec.stream.cursor
        if cursor is None:
            run.notes.append("no cursor saved before the budget ran out")
            continue
        async with h.client(seed=7, **client_options) as client:
            st = await asyncio.wait_for(client.resume(cursor), 20)
            new = StreamRecorder(st, rec.expected, key=rec.key + "-resumed")
            await asyncio.wait_for(new.done(), 60)
        run.resumed_recs.append(new)


_warm = False


async def _warm_up() -> None:
    """One small fault-free run per process, so the first baseline does not pay for
    imports and first-use caches (it would make the CPU comparison unfair)."""
    global _warm
    if _warm:
        return
    async with ChaosHarness(heartbeat=HEARTBEAT) as h, h.client() as client:
        rec = await h.start(client, answer("json", 20_000, 0), seconds=0.1)
        await asyncio.wait_for(rec.done(), 30)
    _warm = True


def baseline_runs(case: Case) -> int:
    """Fault-free runs a baseline of ``case`` is the best of: its
    :attr:`~.cases.Case.baseline_runs`, capped by :data:`max_baseline_runs` unless a
    check reads a baseline figure (:attr:`~.cases.Case.checks_baseline`)."""
    runs = case.baseline_runs
    if max_baseline_runs is not None and not case.checks_baseline:
        runs = min(runs, max_baseline_runs)
    return max(1, runs)


async def _baseline(spec: RunSpec) -> Baseline | None:
    """The same run without a fault: the best of the case's ``baseline_runs`` (two by
    default: a fair, conservative yardstick for the delay and the CPU overhead of a
    fault). None: fault-free runs are economised (:data:`max_baseline_runs`) and the
    case reads no baseline."""
    if max_baseline_runs is not None and not case_for(spec.scenario).reads_baseline:
        return None
    key = _baseline_key(spec)
    if key in _BASELINES:
        return _BASELINES[key]
    await _warm_up()
    found: list[Baseline] = []
    runs = baseline_runs(case_for(spec.scenario))
    for _ in range(runs):
        async with ChaosHarness(heartbeat=HEARTBEAT, seed=spec.repeat) as h:
            run = RunState(spec, h, faulty=False)
            cpu0 = await h.server.cpu_time()
            await case_for(spec.scenario).drive(run, _stream_all)
            cpu1 = await h.server.cpu_time()
            ends = [r.ended_at for r in run.recs if r.ended_at is not None]
            ends += [f.ended_at for f in run.foreign if f.ended_at is not None]
            found.append(
                Baseline(
                    total_s=max(ends) - run.t_start,
                    wire_bytes=h.proxy.totals()["downstream"]["sent"],
                    cpu_s=cpu1 - cpu0,
                    conn_bytes=h.proxy.history[0].downstream.sent,
                )
            )
            bad: list[object] = [
                r for r in run.recs if r.answer is None or not h.verify_client(r).ok
            ]
            bad += [f for f in run.foreign if f.error is not None or f.status != "completed"]
            if bad:
                raise RuntimeError(f"baseline of {spec.id} was not exact: {len(bad)} streams")
    base = Baseline(
        total_s=min(b.total_s for b in found),
        wire_bytes=min(b.wire_bytes for b in found),
        cpu_s=min(b.cpu_s for b in found),
        conn_bytes=min(b.conn_bytes for b in found),
    )
    _BASELINES[key] = base
    return base


def memory_guard() -> int:
    """RSS above which a run is stopped: half the machine's memory, at most 8 GB."""
    import psutil

    return min(8 * 2**30, psutil.virtual_memory().total // 2)


def clear_baselines() -> None:
    """Forget cached baselines (e.g. between matrices)."""
    _BASELINES.clear()


async def run_one(
    spec: RunSpec,
    *,
    artefacts: Path | None = None,
    keep_artefacts: bool = False,
    isolate_logs: bool = False,
    clock_origin: float | None = None,
    sampler_sink: list[tuple[float, float, float]] | None = None,
    beside: Callable[[ChaosHarness], Awaitable[object]] | None = None,
) -> RunResult:
    """Run ``spec`` (after its baseline, cached) and return what it measured.

    ``artefacts``: directory for the debugging artefacts of a failed run (all runs with
    ``keep_artefacts``). ``sampler_sink`` receives (seconds since ``clock_origin``, RSS
    MB, log MB) samples for the memory timeline. ``beside``: a coroutine function run
    with the harness while the run streams (e.g. a client of your own on the same
    server), awaited before the run is assessed.
    """
    t_wall = time.monotonic()
    origin = clock_origin if clock_origin is not None else t_wall
    result = RunResult(spec, started_s=t_wall - origin)
    if not SCENARIO_BY_ID[spec.scenario].covered:
        result.status = "error"
        result.error = f"{spec.scenario} is not covered yet"
        return result
    if spec.condition in KERNEL_CONDITIONS:
        from ..chaos.kernel import kernel_skip_reason

        reason = kernel_skip_reason()
        if reason is not None:
            result.status = "skip"
            result.error = reason
            return result
    case = case_for(spec.scenario)
    reason = case.skip_reason(spec)
    if reason is not None:
        result.status = "skip"
        result.error = reason
        return result
    try:
        baseline = await _baseline(spec)
        with LogCapture(isolate=isolate_logs) as logs, contextlib.ExitStack() as net:
            topo = await topology(spec, net)
            async with ChaosHarness(heartbeat=HEARTBEAT, seed=spec.repeat, topology=topo) as h:
                logs.ensure_attached()  # uvicorn dropped its loggers' handlers on start
                run = RunState(spec, h, faulty=True, baseline=baseline)
                cpu0 = await h.server.cpu_time()
                extra = asyncio.ensure_future(beside(h)) if beside is not None else None
                streaming = asyncio.ensure_future(case.drive(run, _stream_all))
                sampler = ResourceSampler(
                    h.store, limit=memory_guard(), on_limit=lambda _s: streaming.cancel()
                )
                sampler.start()
                error: BaseException | None = None
                try:
                    await streaming
                except TimeoutError as exc:
                    error = exc
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if sampler.tripped is None or (task is not None and task.cancelling()):
                        raise
                    error = MemoryError(
                        f"memory guard: process RSS {sampler.tripped.rss / 2**30:.1f} GB > "
                        f"{memory_guard() / 2**30:.1f} GB; the run was stopped"
                    )
                cpu1 = await h.server.cpu_time()
                await sampler.stop()
                if sampler_sink is not None:
                    sampler_sink.extend(
                        (s.t - origin, s.rss / 2**20, s.log_bytes / 2**20) for s in sampler.samples
                    )
                if extra is not None:
                    try:
                        await asyncio.wait_for(extra, 30)
                    except Exception as exc:
                        run.notes.append(f"the coroutine beside the run failed: {exc!r}")
                await assess(run, case, result, baseline, cpu1 - cpu0, sampler, logs)
                if error is not None:
                    result.status = "fail"
                    result.error = f"{type(error).__name__}: {error}".strip(": ")
                result.notes.extend(run.notes)
                if artefacts is not None and (keep_artefacts or not result.passed):
                    result.artefacts = await write_artefacts(run, result, logs, artefacts)
    except Exception as exc:
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}"
        result.notes.append(traceback.format_exc(limit=6))
        log.exception("run %s failed", spec.id)
    result.wall_s = time.monotonic() - t_wall
    return result
