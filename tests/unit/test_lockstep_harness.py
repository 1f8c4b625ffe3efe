"""benchmarks.lockstep finishes however late its agents' tasks first run.

A run is registered (``hub.runs``) before its task's first step; on a loaded machine
that step came after the harness's first round had begun, and the harness stalled
(every agent waiting on a gate no round would set). Here every agent's first step is
held back well past the harness's 10 ms poll."""

from __future__ import annotations

import asyncio
import logging

import pytest

from benchmarks import lockstep
from unbroken.server.hub import Hub


async def test_lockstep_finishes_with_agents_started_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Hub._run

    async def late_run(self: Hub, *args: object) -> None:
        # held back past the harness's 10 ms poll: what a loaded machine's scheduling
        # did, made certain (the lateness under test, not a wait for something)
        await asyncio.sleep(0.05)
        await run(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Hub, "_run", late_run)
    logger = logging.getLogger("unbroken")  # measure quiets it: restored for other tests
    level = logger.level
    try:
        result = await asyncio.wait_for(lockstep.measure(20, 3, 1, 1000.0), 10)
    finally:
        logger.setLevel(level)
    assert result["streams"] == 20
    assert result["rounds"] == 3
