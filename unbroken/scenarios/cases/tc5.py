"""TC5: timeout and retry mechanisms. After the condition drops the client, new
connections are refused (``long``: past the client's budget of 6 attempts; ``short``:
0.5 s) or accepted and silent (``silent``: past the client's 2.5 s deadline). The client
must give up with a typed, helpful error after exactly its budget (then a new client
resumes from the saved cursor), or ride a short outage out; its delays are the
protocol's backoff's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from typing import Any

from ...chaos.toxics import DIRECTIONS, Timeout
from ...client import ConnectionEvent
from ...errors import ReconnectExhausted
from ...protocol.backoff import Backoff, BackoffPolicy
from ..context import RunState
from ..faults import timed_play
from ..run_result import Check, RunResult
from ..spec import SEED_CONDITIONS, RunSpec
from .base import FAULT_MODES, FAULT_ORDER, FULL_CONDITIONS, Case

log = logging.getLogger(__name__)

#: 'silent': the deadline, and how late past it giving up may be reported (the loop's own
#: timer lateness on a busy machine; an attempt that runs its whole handshake timeout
#: past the deadline overshoots by up to that timeout, 1 s here).
SILENT_DEADLINE = 2.5
#: 'short': how long the outage lasts, by tier (s).
SHORT_OUTAGE = {"quick": 0.4, "full": 0.5}
DEADLINE_SLACK = 0.25


class TC5(Case):
    id = "TC5"
    foreign_app = None
    baseline_as = "TC1"
    plan_grace = 30.0
    quick_sample = (("small", "mid", "clean", "rst", "silent"),)

    def quick_rows(self) -> list[RunSpec]:
        """'long' under each of the seed's conditions; 'short' under two."""
        return [
            *(
                self.spec(("small", "mid", cond, FAULT_ORDER[i % 3], "long"))
                for i, cond in enumerate(SEED_CONDITIONS)
            ),
            *(
                self.spec(("small", "early", cond, FAULT_ORDER[(i + 1) % 3], "short"))
                for i, cond in enumerate(("clean", "outage"))
            ),
        ]

    def full_rows(self) -> list[RunSpec]:
        """Every condition x fault, 'long', 'short' and 'silent' (no kernel-level runs:
        its budgets are the proxy's refusals)."""
        return [
            self.spec(("medium", "mid", cond, fault, variant), "full")
            for cond in FULL_CONDITIONS
            for fault in FAULT_MODES
            for variant in ("long", "short", "silent")
        ]

    def policy(self, spec: RunSpec) -> BackoffPolicy:
        if spec.variant == "long":
            return BackoffPolicy(base=0.05, cap=0.4, max_attempts=6, deadline=10.0)
        if spec.variant == "silent":
            return BackoffPolicy(base=0.05, cap=0.4, max_attempts=None, deadline=SILENT_DEADLINE)
        return BackoffPolicy(base=0.05, cap=0.4, max_attempts=None, deadline=5.0)

    def gives_up(self, spec: RunSpec) -> bool:
        return spec.variant in ("long", "silent")

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        spec = run.spec
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        watch = run.watches[0]
        player = loop.create_task(timed_play(run, total_events))
        holder: asyncio.Task[None] | None = None
        try:
            await run.faulted.wait()
            assert run.t_fault is not None
            await watch.wait("disconnected", run.t_fault - 0.001)
            hold = hold_silent if spec.variant == "silent" else hold_down
            holder = loop.create_task(hold(run, release))
            if self.gives_up(spec):
                await watch.wait("exhausted", run.t_fault)
            else:
                await asyncio.sleep(SHORT_OUTAGE[spec.profile])  # the outage's length
            release.set()
            await holder
            with contextlib.suppress(Exception):
                await player
        finally:
            # every exit (the run timed out and cancelled this plan, or a wait failed):
            # the network comes back and no helper task outlives the plan
            release.set()
            if holder is not None and not holder.done():
                await _settle(holder)
            await _cancel(player)

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        return _checks(self, run)

    def timeout_ok(self, run: RunState, checks: list[Check]) -> bool:
        return all(c.ok for c in checks)


async def hold_silent(run: RunState, release: asyncio.Event) -> None:
    """'silent': every connection is accepted and hears nothing (a blackhole: each
    attempt runs into its handshake timeout) until ``release``; then the connections
    that lost bytes meanwhile are reset."""
    p = run.h.proxy
    run.faults.append((time.monotonic(), "network silent: connections accepted, nothing passes"))
    before = {(c.id, d): c.link(d).dropped for c in p.connections for d in DIRECTIONS}
    installed = [
        p.add_toxic(Timeout(timeout=0.0), stream=d, name=f"tc5_silent_{d}") for d in DIRECTIONS
    ]
    try:
        await release.wait()
    finally:
        for toxic in installed:
            if p.get_toxic(toxic.name) is toxic:
                p.remove_toxic(toxic.name)
        run.released = time.monotonic()
        run.faults.append((run.released, "network back"))
    hung = [
        c
        for c in p.connections
        if c.is_live and any(c.link(d).dropped > before.get((c.id, d), 0) for d in DIRECTIONS)
    ]
    await asyncio.gather(*(c.cut("rst", "tc5_silent_end") for c in hung))


async def hold_down(run: RunState, release: asyncio.Event) -> None:
    """Refuse every connection (the proxy's port closed) until ``release``."""
    p = run.h.proxy
    run.faults.append((time.monotonic(), "network down: connections refused"))
    loop = asyncio.get_running_loop()
    released = loop.create_task(release.wait())
    reenabled: asyncio.Task[None] | None = None
    try:
        while not release.is_set():
            if p.enabled:
                await p.disable("rst", reason="tc5_down")
            reenabled = loop.create_task(p.wait_until(lambda: p.enabled))
            await asyncio.wait({reenabled, released}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(reenabled)
    finally:
        try:
            await p.enable()
            run.released = time.monotonic()
            run.faults.append((run.released, "network back"))
        finally:
            await _cancel(released, *([reenabled] if reenabled is not None else []))


async def _settle(holder: asyncio.Task[None]) -> None:
    """Let a hold that was released finish (it brings the network back), however this
    plan ends; cancelled itself meanwhile, the hold is cancelled and awaited too."""
    try:
        await asyncio.shield(holder)
    except asyncio.CancelledError:
        await _cancel(holder)
        raise
    except Exception:
        log.debug("TC5's hold failed", exc_info=True)


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has finished (whatever its outcome)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _checks(case: TC5, run: RunState) -> list[Check]:
    """The backoff schedule; then the budget, the error and the resume from the cursor
    ('long', 'silent'), or the same client riding a short outage out."""
    spec = run.spec
    policy = case.policy(spec)
    out: list[Check] = []
    watch = run.watches[0]
    client = run.clients[0]
    # the delays used, episode by episode, against the protocol's Backoff with that seed
    rng = random.Random(1000 * spec.repeat)
    used = [e for e in watch.events if e.kind in ("reconnecting", "exhausted")]
    expected: list[float] = []
    got: list[float] = []
    backoff: Backoff | None = None
    for ev in used:
        if ev.kind == "exhausted":
            continue
        if ev.attempt == 1 or backoff is None:
            backoff = Backoff(policy, 0.0, rng)
        want = backoff.next_delay(0.0)
        expected.append(round(want if want is not None else -1.0, 9))
        got.append(round(ev.delay, 9))
    last_schedule = list(client.backoff.schedule) if client.backoff is not None else []
    tail = [e.delay for e in used if e.kind == "reconnecting"][-len(last_schedule) :]
    out.append(
        Check(
            "TC5 backoff delays equal protocol.backoff.Backoff's with the same seed and policy",
            got == expected
            and bool(got)
            and [round(x, 9) for x in last_schedule] == [round(x, 9) for x in tail],
            f"delays {', '.join(f'{d * 1000:.0f} ms' for d in got[-8:])}",
        )
    )
    if case.gives_up(spec):
        errors = [r.error for r in run.recs]
        ex = errors[0] if errors else None
        ok = isinstance(ex, ReconnectExhausted)
        detail = f"{type(ex).__name__}: {ex}" if ex is not None else "no error"
        out.append(Check("TC5 ReconnectExhausted after the budget", ok, detail[:300]))
        deadline = policy.deadline if policy.deadline is not None else math.inf
        seen = _episode_seconds(watch.events)
        elapsed = ex.elapsed if isinstance(ex, ReconnectExhausted) else math.nan
        attempts = ex.attempts if isinstance(ex, ReconnectExhausted) else 0
        times = (
            f"elapsed {elapsed:.2f} s (the client's), "
            f"{'—' if seen is None else f'{seen:.2f} s'} (seen: disconnected → exhausted) "
            f"of {deadline:g} s"
        )
        if spec.variant == "long":
            out.append(
                Check(
                    "TC5 max attempts respected, within the deadline",
                    ok
                    and attempts == policy.max_attempts
                    and elapsed <= deadline
                    and seen is not None
                    and seen <= deadline + DEADLINE_SLACK,
                    f"attempts {attempts} of {policy.max_attempts}, {times}",
                )
            )
        else:
            out.append(
                Check(
                    "TC5 gave up at the deadline, never past it, although every attempt "
                    "hung (silent drops)",
                    ok
                    and attempts >= 2
                    and elapsed <= deadline + DEADLINE_SLACK
                    and seen is not None
                    and seen <= deadline + DEADLINE_SLACK,
                    f"{times} (+{DEADLINE_SLACK:g} s allowed for the loop's lateness); "
                    f"{attempts} attempts",
                )
            )
        text = str(ex) if ex is not None else ""
        out.append(
            Check(
                "TC5 the error says what happened and what to do",
                "gave up reconnecting" in text and "cursor" in text,
                text[:200],
            )
        )
        resumed = run.resumed_recs
        ok = bool(resumed) and all(
            r.answer is not None and r.answer.status == "completed" for r in resumed
        )
        out.append(
            Check(
                "TC5 a new client resumed from the saved cursor and completed",
                ok,
                f"{len(resumed)} resumed; from seq "
                + ", ".join(str(r.answer.from_seq) for r in resumed if r.answer),
            )
        )
    else:
        exhausted = any(e.kind == "exhausted" for e in watch.events)
        recovered = all(r.answer is not None and r.error is None for r in run.recs)
        out.append(
            Check(
                "TC5 a shorter outage is ridden out by the same client",
                recovered and not exhausted,
                f"exhausted: {exhausted}; recovered: {recovered}",
            )
        )
    return out


def _episode_seconds(events: list[ConnectionEvent]) -> float | None:
    """Seconds from the ``disconnected`` that began the last reconnect episode (the one
    before its attempt 1) to ``exhausted``, as the client's events saw them."""
    exhausted = next((e for e in events if e.kind == "exhausted"), None)
    if exhausted is None:
        return None
    start: ConnectionEvent | None = None
    last_drop: ConnectionEvent | None = None
    for e in events:
        if e.at > exhausted.at:
            break
        if e.kind == "disconnected":
            last_drop = e
        elif e.kind == "reconnecting" and e.attempt == 1:
            start = last_drop
    if start is None:
        start = last_drop
    return None if start is None else exhausted.at - start.at


CASE = TC5()
