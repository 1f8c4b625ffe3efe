"""A cancel that arrives as the awaited thing finishes is never lost: on Python 3.11
``asyncio.wait_for`` returned the result instead (the caller's task went on as if not
cancelled; last session it left a Redis worker running after its shutdown). Each wait
here is cancelled a few loop steps after what it waits for completes, at every step
count: a task that took the cancel must end cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.waiting import until
from unbroken.client import Client
from unbroken.client.client import Stream
from unbroken.server.agent import Principal
from unbroken.server.hub import Hub
from unbroken.store.memory import MemoryStore

STEPS = range(6)


async def cancelled_as_it_ends(
    wait: Awaitable[object], finish: Callable[[], None], steps: int
) -> None:
    """Run ``wait``; once it is waiting, ``finish`` what it waits for and cancel it
    ``steps`` loop steps later. If it took the cancel (not done yet), it must end
    cancelled."""
    task = asyncio.ensure_future(wait)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    finish()
    for _ in range(steps):
        await asyncio.sleep(0)
    took = task.cancel()
    async with asyncio.timeout(5):
        await asyncio.wait({task})
    if took:
        assert task.cancelled(), f"the cancel was lost ({steps} steps): {task!r}"


@pytest.mark.parametrize("steps", STEPS)
async def test_a_start_answered_as_its_caller_is_cancelled_ends_cancelled(steps: int) -> None:
    client = Client("ws://127.0.0.1:9/ws", request_timeout=30)
    st = Stream(client, "r1", "agent")
    await cancelled_as_it_ends(
        client._answered(st, "start"), lambda: st._started.set_result(None), steps
    )


@pytest.mark.parametrize("steps", STEPS)
async def test_a_shutdown_whose_last_run_ends_as_it_is_cancelled_ends_cancelled(
    steps: int,
) -> None:
    release = asyncio.Event()

    async def stubborn(_req: object, _out: object) -> None:
        """Swallows the hub's cancel until released (then the run ends)."""
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    hub = Hub(MemoryStore(), {"stubborn": (stubborn, None)})
    await hub.start(Principal("p"), "r1", "stubborn", None)
    await asyncio.sleep(0)
    shutdown = hub.shutdown(grace=0.0)
    task = asyncio.ensure_future(shutdown)
    # until the drain waits for the stubborn run (it was cancelled and went on)
    await until(lambda: any(r.stop_reason for r in hub.runs.values()), 5)
    for _ in range(3):
        await asyncio.sleep(0)
    await cancelled_as_it_ends(_wait_task(task), release.set, steps)
    for run in list(hub.runs.values()):
        if run.task is not None:
            run.task.cancel()
    await hub.gate.stop()


async def _wait_task(task: asyncio.Future[None]) -> None:
    await task
