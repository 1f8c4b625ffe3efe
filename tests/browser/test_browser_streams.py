"""``client.streams()`` in a real page against the real server: while a page's answer
is being written, the page lists it (its id, agent, a cursor whose digest is the
server log's at that head); a page of another principal (its own browser context, its
own anonymous id) lists nothing. The first page's answer still ends exact."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Rig
from .test_browser_faults import SIZE, _finish, assert_exact

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

LIST = """async () => (await window.client.streams()).map((s) => ({
  stream: s.stream, agent: s.agent, epoch: s.epoch, head: s.head, status: s.status,
  cursor: String(s.cursor), digest: s.cursor.digest, seq: s.cursor.seq }))"""


async def test_a_page_lists_its_live_stream_with_a_cursor(rig: Rig, browser: Any) -> None:
    # paced by the agent (a list's answer queued behind a throttled proxy would wait)
    page = await (await browser.new_context()).new_page()
    await page.goto(rig.url(SIZE) + "&pace=0.01")
    await page.wait_for_function(f"window.log.received > {SIZE // 12 // 8}", polling=10)
    items = await page.evaluate(LIST)
    stream, done = await page.evaluate("[window.log.streamId, window.log.done]")
    assert done is False, "listed while the answer is written"
    assert len(items) == 1, items
    [item] = items
    assert item["stream"] == stream and item["agent"] == "mixed"
    assert item["status"] == "running" and item["seq"] == item["head"] > 0
    assert item["digest"] == (await rig.app.store.digest_at(stream, item["head"])).hex()
    assert item["cursor"] == f"ub1.{stream}.{item['head']}.{item['digest']}.{item['epoch']}"
    other = await (await browser.new_context()).new_page()
    await other.goto(rig.url(0) + "&join=none")  # a page that never starts a run
    assert await other.evaluate(LIST) == [], "another principal's runs are not listed"
    await assert_exact(rig, await _finish(page))
