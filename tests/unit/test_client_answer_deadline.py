"""The Python client's wait for a start's or resume's answer: an ``unavailable``
(or a start refused for load) that arrives while the request is still being sent
moves its deadline on, and the wait that begins after the send keeps it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from unbroken.client.client import Client, Stream
from unbroken.errors import RequestTimeout


async def test_a_deadline_moved_on_during_the_send_is_kept() -> None:
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.05)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    loop = asyncio.get_running_loop()
    later = loop.time() + 60.0
    # an unavailable processed during `await self._send_frame(frame)`: sent again later
    client._answer_later("r1", later)
    waiting = asyncio.create_task(client._answered(st, "resume"))
    await asyncio.sleep(0)  # one step: _answered has set its deadline and waits
    assert client._answer_due(st) >= later + 0.05  # not overwritten by now + request_timeout
    assert not waiting.done()
    st._started.set_result(None)  # answered
    await asyncio.wait_for(waiting, 5)


async def test_a_resend_that_goes_late_is_answered_request_timeout_after_it_goes() -> None:
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.05)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    sent: list[Any] = []

    async def send(frame: Any) -> None:
        sent.append(frame)

    # the session's side (which frame goes again) is tested without the client; here the
    # client's clock: an `unavailable` planned a resend 10 ms on, then the process stalled
    client._session.resend_start = lambda req: ("start", req)  # type: ignore[assignment,method-assign,return-value]
    client._send_frame = send  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    client._answer_later("r1", loop.time() + 0.01)
    waiting = asyncio.create_task(client._answered(st, "start"))
    await asyncio.sleep(0)
    time.sleep(0.2)  # noqa: ASYNC251 (the fault: a stalled process, its timers all late)
    client._resend_start("r1")  # the resend timer, 190 ms late
    assert client._answer_due(st) >= loop.time() + 0.04  # due after it went, not when planned
    await asyncio.sleep(0)
    assert sent == [("start", "r1")]
    assert not waiting.done(), "failed RequestTimeout before the resend was answered"
    st._started.set_result(None)
    await asyncio.wait_for(waiting, 5)


async def test_a_stall_before_a_resend_is_not_counted_again_after_it() -> None:
    # the process stalls while a start waits (1 s, request_timeout 0.3 s); then an
    # `unavailable` plans its resend 10 ms on: the answer is due request_timeout after
    # the resend, and the stall (already behind the resend's time) does not move it
    # again (it used to: due 0.3 + ~0.9 s after the resend)
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.3)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(client._answered(st, "start"))
    await asyncio.sleep(0)  # one step: _answered has set its deadline and waits
    time.sleep(1.0)  # noqa: ASYNC251 (the fault: a stalled process, its timers all late)
    resend_at = loop.time() + 0.01
    client._answer_later("r1", resend_at)
    for _ in range(3):
        await asyncio.sleep(0)  # the late timers run: the ticker, the wait's deadline
    assert not waiting.done()
    # any lateness after the resend was planned still counts (a loaded machine's);
    # the 1 s stall before it does not
    late_since = client._late_now()
    due = client._answer_due(st)
    assert due >= resend_at + 0.3
    assert due - (resend_at + 0.3) < 0.5, (due - resend_at, late_since)
    st._started.set_result(None)
    await asyncio.wait_for(waiting, 5)


async def test_a_loop_stalled_longer_than_request_timeout_does_not_fail_the_wait() -> None:
    # a start made while the client is still connecting (no frame sent yet), then the
    # process stalls (a blocking call, a stopped process) for longer than
    # request_timeout: that time is the process's, not the server's (as in the
    # liveness rule), so the answer that comes after the stall is taken
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.3)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    waiting = asyncio.create_task(client._answered(st, "start"))
    await asyncio.sleep(0)  # one step: _answered has set its deadline and waits
    time.sleep(0.5)  # noqa: ASYNC251 (the fault: a stalled process, its timers all late)
    await asyncio.sleep(0)  # the loop's next turn: the late timers run
    await asyncio.sleep(0)
    assert not waiting.done(), "failed RequestTimeout for the process's own stall"
    st._started.set_result(None)  # the answer (it waited in the socket meanwhile)
    await asyncio.wait_for(waiting, 5)


async def test_a_request_unanswered_for_request_timeout_still_fails() -> None:
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.1)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(client._answered(st, "start"), 5)
    assert loop.time() - t0 >= 0.1
    assert st.done


async def test_pending_waits_share_one_ticker_and_do_not_wake() -> None:
    # many starts waiting for their answer cost one ticker (a few wake-ups a second
    # for the client), not a wake-up per wait: each wait keeps one timer, at its
    # deadline, untouched while the loop runs on time
    n = 200
    client = Client(["ws://127.0.0.1:1/"], request_timeout=30.0)
    loop = asyncio.get_running_loop()
    streams = [Stream(client, f"r{i}", "a") for i in range(n)]
    for st in streams:
        client._streams[st.req] = st
    before = set(asyncio.all_tasks())
    waits = [asyncio.create_task(client._answered(st, "start")) for st in streams]
    ticks = 0
    ticked = asyncio.Event()
    armed: list[float] = []
    tick = client._late_tick

    def counted_tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 2:  # (1: the start) from here on, count every timer armed on the loop
            loop.call_at = counting_call_at  # type: ignore[method-assign]
        if ticks == 5:
            ticked.set()
        tick()

    real_call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> Any:
        armed.append(when)
        return real_call_at(when, callback, *args, **kw)

    client._late_tick = counted_tick  # type: ignore[method-assign]
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # every wait has armed its timer
        assert client._late_waits == n
        assert client._late_handle is not None  # the one ticker
        await asyncio.wait_for(ticked.wait(), 10)  # four ticks of the ticker
    finally:
        vars(loop).pop("call_at", None)
    # four ticks re-armed the ticker; no wait woke meanwhile (each would arm a timer)
    assert len(armed) == 4, armed
    assert set(asyncio.all_tasks()) - before == set(waits)  # no task per wait either
    for st in streams:
        st._started.set_result(None)  # all answered
    await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert client._late_waits == 0
    assert client._late_handle is None  # the ticker stops with the last wait
