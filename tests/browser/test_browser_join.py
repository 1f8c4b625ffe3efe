"""Two tabs on one answer (issue 20): a page starts an answer; a second page, in
its own browser context (its own ``sessionStorage``), follows it with
``client.join(streamId)`` while it is still being written: it replays the log from
event 1 and goes on live. Both end exact with the server's digest, the second
verified from the chain's seed (``complete``), and the agent ran once."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Rig
from .test_browser_faults import SIZE, _finish, _open, assert_exact, paced

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_second_tab_joins_a_live_answer(rig: Rig, browser: Any) -> None:
    paced(rig)
    _, first = await _open(browser, rig)
    await first.wait_for_function(f"window.log.received > {SIZE // 12 // 4}", polling=10)
    stream, done = await first.evaluate("[window.log.streamId, window.log.done]")
    assert stream and done is False, "the second tab must join while the answer is written"
    ctx = await browser.new_context()
    second = await ctx.new_page()
    await second.goto(rig.url(SIZE) + f"&join={stream}")
    a, b = await _finish(first), await _finish(second)
    await assert_exact(rig, a)
    await assert_exact(rig, b)
    assert b["streamId"] == stream
    assert b["fromSeq"] == 0 and b["complete"] is True, "verified from event 1"
    assert a["digest"] == b["digest"]
    assert b["order"] == a["order"]
