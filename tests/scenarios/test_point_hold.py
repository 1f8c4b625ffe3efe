"""The agent waits before its last event until the fault is on the wire, so a fast
answer (or a loaded client loop, late to count what arrived) cannot outrun the cut.

The race is made deterministic: the fault is delivered late on purpose, only once every
answer has fully arrived or every agent waits before its last event. Without the hold
the fault then lands after the answer (the flake this fixes: "the fault hit after the
answer had fully arrived"); with it the cut lands before the end and the run recovers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from unbroken.scenarios import faults
from unbroken.scenarios import run as run_module
from unbroken.scenarios.catalog import full_matrix, quick_matrix
from unbroken.scenarios.context import RunState
from unbroken.scenarios.harness import reap
from unbroken.scenarios.runner import run_one

AFTER = "the fault hit after the answer had fully arrived"


def _spec(run_id: str) -> Any:
    return next(s for s in [*quick_matrix(), *full_matrix()] if s.id == run_id)


def _late_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliver the fault only once the answers are all in or every agent is held."""
    real = faults.cut_at_point

    async def late(run: RunState, total_events: int) -> float | None:
        if run.faulty:
            arrived = asyncio.ensure_future(asyncio.gather(*(r.done() for r in run.recs)))
            holds = list(run.h.book.holds.values())
            held = asyncio.ensure_future(
                asyncio.gather(*(asyncio.wrap_future(h.reached) for h in holds))
            )
            waits: set[asyncio.Future[Any]] = {arrived} | ({held} if holds else set())
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                await reap(w)
        return await real(run, total_events)

    monkeypatch.setattr(faults, "cut_at_point", late)


@pytest.mark.parametrize("held", [True, False], ids=["held", "not-held"])
async def test_late_fault_still_cuts_before_the_end(
    held: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _late_fault(monkeypatch)
    if not held:  # the code before the fix: nothing waits at the point
        monkeypatch.setattr(run_module, "point_holds", lambda run, answers: [])
    result = await run_one(_spec("TC1-small-final-outage-rst-r0"), artefacts=tmp_path)
    if held:
        assert result.passed, (result.failed_checks(), result.error, result.notes)
        assert AFTER not in result.notes
        assert result.recovered is True and result.metrics.drops >= 1
        assert result.metrics.recovery_s is not None
    else:
        # the race, reproduced: the answer outran the late fault
        assert AFTER in result.notes
        assert result.metrics.recovery_s is None


@pytest.mark.full
async def test_late_fault_many_streams(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TC9: 100 streams over 20 connections, one network event, each agent held."""
    _late_fault(monkeypatch)
    result = await run_one(_spec("TC9-small-mid-outage-rst-r0"), artefacts=tmp_path)
    assert result.passed, (result.failed_checks(), result.error, result.notes)
    assert AFTER not in result.notes
    assert result.recovered is True
