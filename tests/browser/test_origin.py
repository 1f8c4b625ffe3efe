"""The origin policy against a real browser (issue 15, TC15): the ``Origin`` header is
the one Chromium sets for the page, not one a test wrote.

A page from origin A (``http://127.0.0.1:PORT``) streams an answer; mid-answer the
policy is changed live (``app.policy.update``): A dropped, B (``http://localhost:PORT``,
the same page under another host name, another origin to the browser) added. The open
stream ends exact with no reconnect; a new page load from A is refused at the handshake
(the server logs why: a browser hides the 403 from the page, it sees a failed
connection), a page from B streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from unbroken.chaos import Bandwidth
from unbroken.server.policy import OriginPolicy

from .conftest import Rig, expected_parts

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

SIZE = 300_000
DONE = "window.log && window.log.done === true"


class Refusals(logging.Handler):
    """Wakes a waiter when the server refuses a handshake from ``origin``."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin
        self.seen = asyncio.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "origin refused" in text and f"'{self.origin}'" in text:
            self.lines.append(text)
            self.seen.set()  # (the server runs on this test's loop)


@pytest.fixture
def refusals_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("unbroken.server.policy")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


async def finished(page: Any) -> dict[str, Any]:
    await page.wait_for_function(DONE, timeout=30_000, polling=50)
    log: dict[str, Any] = await page.evaluate("window.log")
    assert log["error"] is None, f"{log['errorName']}: {log['error']}"
    return log


async def assert_exact(rig: Rig, log: dict[str, Any]) -> None:
    assert log["parts"] == expected_parts(SIZE)
    assert log["status"] == "completed" and log["complete"] is True
    assert log["digest"] == await rig.final_digest(log["streamId"])


async def test_a_page_origin_dropped_mid_stream(
    rig: Rig, browser: Any, refusals_log: logging.Logger
) -> None:
    page_a = f"http://127.0.0.1:{rig.server.port}"
    page_b = f"http://localhost:{rig.server.port}"
    rig.app.policy.update(OriginPolicy(allowed_origins=(page_a,), allow_same_host=False))
    rig.proxy.add_toxic(Bandwidth(rate=200_000))  # about 2 s: the change lands mid-answer
    refused = Refusals(page_a)
    refusals_log.addHandler(refused)
    try:
        first = await (await browser.new_context()).new_page()
        await first.goto(rig.url(SIZE))
        await first.wait_for_function("window.log.received > 200", polling=20)
        rig.app.policy.update(allowed_origins=[page_b])
        assert await first.evaluate("window.log.done") is False, "the change came mid-answer"
        log = await finished(first)
        await assert_exact(rig, log)
        assert [e["kind"] for e in log["conn"]].count("connected") == 1, log["conn"]
        assert not [e for e in log["conn"] if e["kind"] == "disconnected"], log["conn"]
        assert rig.calls["mixed"] == 1

        # a new page load from A: its handshake is refused by the new policy
        again = await (await browser.new_context()).new_page()
        await again.goto(rig.url(SIZE))
        await asyncio.wait_for(refused.seen.wait(), 20)
        assert "reason=origin not allowed" in refused.lines[0]
        state = await again.evaluate("[window.log.streamId, window.log.received]")
        assert state == ["", 0]
        conn = await again.evaluate("window.log.conn.map(e => e.kind)")
        assert "connected" not in conn
        await again.close()  # (its client would retry, with backoff, until it gives up)

        # the same page from B streams
        third = await (await browser.new_context()).new_page()
        await third.goto(rig.url(SIZE).replace(page_a, page_b, 1))
        assert await third.evaluate("location.origin") == page_b
        log = await finished(third)
        await assert_exact(rig, log)
        assert rig.calls["mixed"] == 2  # A's refused page never started a run
    finally:
        refusals_log.removeHandler(refused)
