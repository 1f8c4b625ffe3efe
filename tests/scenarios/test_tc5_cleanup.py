"""TC5's fault plan, cut short: when a run times out the runner cancels the plan while
the network is held down; the network must come back and no helper task (the hold, the
condition's player) may be left pending ("Task was destroyed but it is pending")."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from unbroken.chaos import FaultProxy
from unbroken.client import ConnectionEvent
from unbroken.scenarios.cases import tc5
from unbroken.scenarios.context import EventWatch, RunState
from unbroken.scenarios.spec import RunSpec


@pytest.mark.parametrize("variant", ["long", "silent"])
async def test_a_cancelled_plan_brings_the_network_back_and_leaves_no_task(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def play(run: RunState, total_events: int) -> None:
        """The condition's player: it breaks the link, then never finishes."""
        run.t_fault = time.monotonic()
        run.faulted.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(tc5, "timed_play", play)
    # the upstream is never reached: no client connects in this test
    async with FaultProxy(("127.0.0.1", 9)) as proxy:
        spec = RunSpec("TC5", "small", "mid", "clean", "rst", variant)
        run = RunState(spec, SimpleNamespace(proxy=proxy), faulty=True)  # type: ignore[arg-type]
        watch = EventWatch(0)
        run.watches.append(watch)
        driver = asyncio.get_running_loop().create_task(tc5.CASE.plan_faults(run, 10))
        await asyncio.wait_for(run.faulted.wait(), 5)
        watch(ConnectionEvent("disconnected", at=time.monotonic()))

        def held() -> bool:  # the network is down, or silent
            if variant == "silent":
                return proxy.get_toxic("tc5_silent_downstream") is not None
            return not proxy.enabled

        await asyncio.wait_for(proxy.wait_until(held), 5)
        # the run's budget is spent: the runner cancels the plan (the client still retries)
        driver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await driver
        assert proxy.enabled
        assert run.faults[-1][1] == "network back"
        assert run.released is not None
        if variant == "silent":
            assert not [t for t in proxy.toxics if t.name.startswith("tc5_silent")]
        others: set[Any] = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others, others
