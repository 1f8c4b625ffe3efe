"""unbroken.server.eager: a coroutine runs at once, and a task takes over only if it waits."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.server import eager


async def test_a_coroutine_that_never_waits_runs_to_the_end_at_once() -> None:
    done: list[str] = []

    async def send() -> None:
        done.append("sent")

    assert eager.start(send()) is None
    assert done == ["sent"]  # before any trip through the event loop


async def test_a_coroutine_that_waits_is_finished_by_a_task() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[object] = []

    async def send() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    rest = eager.start(send())
    assert rest is not None and steps == ["before"]
    assert not rest.done()
    gate.set_result(7)
    await asyncio.wait_for(rest, 5)
    assert steps == ["before", 7, "after"]


async def test_an_error_before_the_first_wait_is_raised_by_start() -> None:
    async def send() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        eager.start(send())


async def test_an_error_after_a_wait_fails_the_task() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send() -> None:
        await gate
        raise ConnectionResetError("late")

    rest = eager.start(send())
    assert rest is not None
    gate.set_result(None)
    with pytest.raises(ConnectionResetError, match="late"):
        await asyncio.wait_for(rest, 5)


async def test_cancelling_the_task_closes_the_coroutine_where_it_waits() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned = asyncio.Event()

    async def send() -> None:
        try:
            await gate
        finally:
            cleaned.set()

    rest = eager.start(send())
    assert rest is not None
    rest.cancel()  # even before the task took its first step
    with pytest.raises(asyncio.CancelledError):
        await rest
    assert cleaned.is_set()


async def test_run_now_gives_the_value_at_once_or_the_rest_to_await() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def at_once() -> int:
        return 3

    async def waits() -> int:
        return 1 + await gate

    assert eager.run_now(at_once()) == (True, 3)
    done, rest = eager.run_now(waits())
    assert not done
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    gate.set_result(41)
    assert await asyncio.wait_for(task, 5) == 42


async def test_run_now_raises_an_error_before_the_first_wait() -> None:
    async def fails() -> int:
        raise LookupError("no")

    with pytest.raises(LookupError):
        eager.run_now(fails())
