"""The shared heartbeat ticker: one timer per loop and period, members ticked in a sweep."""

from __future__ import annotations

import asyncio

from unbroken.server.ticker import Ticker, ticker


class _Member:
    def __init__(self, keep: int, done: asyncio.Event | None = None, fail: bool = False) -> None:
        self.keep = keep  # ticks answered True before answering False
        self.times: list[float] = []
        self.done = done
        self.fail = fail

    def tick(self, now: float) -> bool:
        self.times.append(now)
        if self.fail:
            raise RuntimeError("boom")
        if len(self.times) > self.keep:
            if self.done is not None:
                self.done.set()
            return False
        return True


async def test_members_ticked_in_one_sweep_until_they_answer_false() -> None:
    loop = asyncio.get_running_loop()
    t = Ticker(loop, 0.01)
    done = asyncio.Event()
    short, long_ = _Member(keep=1), _Member(keep=4, done=done)
    t.add(short)
    t.add(long_)
    t.add(short)  # twice: still one member
    assert len(t) == 2
    await asyncio.wait_for(done.wait(), 10)
    assert len(short.times) == 2  # its second tick answered False: it left
    assert len(long_.times) == 5
    # both were ticked by the same sweeps, at the same loop time
    assert short.times == long_.times[:2]
    assert all(b - a >= 0.009 for a, b in zip(long_.times, long_.times[1:], strict=False))
    assert len(t) == 0 and t._handle is None  # no member: no timer


async def test_a_failing_member_leaves_and_the_others_go_on() -> None:
    t = Ticker(asyncio.get_running_loop(), 0.01)
    done = asyncio.Event()
    bad, good = _Member(keep=9, fail=True), _Member(keep=2, done=done)
    t.add(bad)
    t.add(good)
    await asyncio.wait_for(done.wait(), 10)
    assert len(bad.times) == 1 and bad not in t
    assert len(good.times) == 3


async def test_discard_stops_ticks_and_the_timer() -> None:
    t = Ticker(asyncio.get_running_loop(), 0.01)
    m = _Member(keep=100)
    t.add(m)
    assert t._handle is not None
    t.discard(m)
    t.discard(m)  # not a member: nothing happens
    assert t._handle is None and m not in t


async def test_one_ticker_per_loop_and_period() -> None:
    assert ticker(0.2) is ticker(0.2)
    assert ticker(0.2) is not ticker(0.3)


def test_each_loop_has_its_own() -> None:
    async def get() -> Ticker:
        return ticker(0.2)

    a, b = asyncio.run(get()), asyncio.run(get())
    assert a is not b


async def test_a_member_added_during_a_sweep_is_ticked_next_sweep() -> None:
    t = Ticker(asyncio.get_running_loop(), 0.01)
    done = asyncio.Event()
    late = _Member(keep=0, done=done)

    class Adder:
        def tick(self, now: float) -> bool:
            t.add(late)
            return False

    t.add(Adder())
    await asyncio.wait_for(done.wait(), 10)
    assert len(late.times) == 1 and len(t) == 0
