"""When a write is appended (``Producer._pend`` schedules it, for ``add_chunk``, ``add``
and ``Output.text``): in the loop tick it was written in, unless the last append is less than
``coalesce`` seconds old; then once that interval is over (a timer), so the tokens
of a fast agent share an append. Timers are caught, not waited for, and the
producer's clock is the test's (no stall of a loaded machine moves a due time)."""

from __future__ import annotations

import asyncio
from typing import Any

from unbroken.server.agent import Output
from unbroken.server.producer import Producer
from unbroken.store.memory import MemoryStore


class _Loop:
    """The running loop, with ``call_later`` recorded instead of armed and ``time``
    the test's clock (``now``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.later: list[tuple[float, Any]] = []
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Any) -> None:
        self.later.append((delay, fn))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


async def _producer(coalesce: float) -> tuple[MemoryStore, Producer, _Loop]:
    store = MemoryStore()
    c = await store.create("me", "r", 0.0)
    p = Producer(store, c.stream, c.epoch, c.producer, coalesce=coalesce)
    loop = p._loop = _Loop()  # type: ignore[assignment]
    return store, p, loop


async def test_a_token_after_a_quiet_spell_is_appended_in_its_tick() -> None:
    _, p, loop = await _producer(30.0)
    out = Output(p)
    await out.text("a")
    await asyncio.sleep(0)  # the tick's flush
    assert p.pending == 0 and p.logged[0] == 2  # the part's start and "a"
    assert loop.later == []


async def test_a_token_within_the_interval_waits_for_its_end() -> None:
    store, p, loop = await _producer(30.0)
    out = Output(p)
    await out.text("a")
    await asyncio.sleep(0)
    loop.now += 12.5
    await out.text("b")  # 30 s have not passed since "a" was appended
    await out.text("c")
    for _ in range(3):
        await asyncio.sleep(0)
    assert p.pending == 2 and p.logged[0] == 2  # held
    [(delay, fn)] = loop.later  # one timer for both
    assert delay == 30.0 - 12.5  # due when the interval since "a"'s append is over
    fn()  # the interval is over
    assert p.pending == 0 and p.logged[0] == 4
    _, events = await store.read_all(p.stream)
    assert [e.body for e in events[1:]] == ["a", "b", "c"]


async def test_without_coalescing_every_tick_appends() -> None:
    _, p, loop = await _producer(0.0)
    out = Output(p)
    for i, t in enumerate("abc"):
        await out.text(t)
        await asyncio.sleep(0)
        assert p.pending == 0 and p.logged[0] == i + 2
    assert loop.later == []


async def test_a_closed_producer_schedules_nothing() -> None:
    _, p, loop = await _producer(0.0)
    p._closed = True  # finish() appends what is pending itself
    p.add_chunk(1, "text", "a")
    await asyncio.sleep(0)
    assert p.pending == 1 and not p._scheduled and loop.later == []
