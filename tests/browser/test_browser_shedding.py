"""The JS client in a real Chromium page against shedding (issue 16): a page reading
through a slow link is detached under sustained pressure with a connection-level
``error overloaded`` + ``retry_after_ms`` and close 4008; it comes back no sooner than
that, resumes, and ends exact (digest checked in the page and against the server's log).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from unbroken.chaos import Bandwidth, FaultProxy
from unbroken.server.admission import SLOW_READER, AdmissionLimits
from unbroken.testing import serve

from ..waiting import until
from .conftest import Rig, _Site, mixed_app
from .test_browser_faults import _finish, _open, assert_exact, disconnects

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

NEVER = 1 << 40  # an RSS limit never reached: the monitor runs, no pressure


@pytest.mark.timeout(60)
async def test_a_shed_page_comes_back_after_retry_after_and_ends_exact(
    browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="unbroken")
    calls: dict[str, int] = {}
    limits = AdmissionLimits(
        max_runs=None,
        max_runs_per_principal=None,
        max_loop_lag=None,  # the machine's own load must not be the pressure
        max_rss=NEVER,
        retry_after=0.5,
        shed_after=0.2,
    )
    app = mixed_app(calls, admission=limits, window=16 * 1024)
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        rig = Rig(app, server, proxy, calls)
        slow = proxy.add_toxic(Bandwidth(rate=8_000))  # the page falls behind its window
        _, page = await _open(browser, rig)
        await until(lambda: any(c.behind() >= SLOW_READER for c in app.connections), 15)
        gate = app.hub.gate
        gate.max_rss = 1  # sustained pressure through the real RSS path
        await until(lambda: gate.shed_total >= 1, 15)
        gate.max_rss = NEVER  # over: the page that comes back stays
        proxy.remove_toxic(slow.name)  # the link recovers: the rest goes fast
        log = await _finish(page)
    lost = disconnects(log)
    assert len(lost) == 1, log["conn"]
    assert lost[0]["code"] == 4008, lost[0]
    lines = [r.getMessage() for r in caplog.records if "shed slow reader" in r.message]
    assert len(lines) == 1, lines
    m = re.search(r"retry_after_ms=(\d+)", lines[0])
    assert m is not None
    retry_after_ms = int(m.group(1))
    assert 500 <= retry_after_ms <= 1000
    # the page waited the server's retry_after_ms (a floor) before it reconnected ...
    again = [e for e in log["conn"] if e["kind"] == "reconnecting" and e["at"] >= lost[0]["at"]]
    assert again and again[0]["delay"] * 1000 >= retry_after_ms - 1, again
    back = [e for e in log["conn"] if e["kind"] == "connected" and e["at"] > lost[0]["at"]]
    assert back and back[0]["at"] - lost[0]["at"] >= retry_after_ms - 1, (lost, back)
    # ... and resumed the same stream mid-answer: exact, the agent ran once
    resumed = [e for e in log["conn"] if e["kind"] == "resumed" and e["at"] > lost[0]["at"]]
    assert resumed and resumed[0]["fromSeq"] > 0, log["conn"]
    await assert_exact(rig, log, runs=1)
    assert gate.shed_total == 1


@pytest.mark.timeout(60)
async def test_a_page_shed_on_a_5_kbs_link_reads_its_error_and_waits_retry_after(
    browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """At 5 KB/s a full 16 KiB window is 3 s of events ahead of the shed's error and
    close: the page's silence detector must not cut the link first, so the page sees
    close 4008 with the server's retry_after_ms and waits that long before its next
    attempt. The link stays slow until the page saw its connection end."""
    caplog.set_level(logging.INFO, logger="unbroken")
    calls: dict[str, int] = {}
    limits = AdmissionLimits(
        max_runs=None,
        max_runs_per_principal=None,
        max_loop_lag=None,
        max_rss=NEVER,
        retry_after=0.5,
        shed_after=0.2,
    )
    app = mixed_app(calls, admission=limits, window=16 * 1024)
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        rig = Rig(app, server, proxy, calls)
        slow = proxy.add_toxic(Bandwidth(rate=5_000), stream="downstream")
        _, page = await _open(browser, rig)
        await until(lambda: any(c.behind() >= SLOW_READER for c in app.connections), 15)
        gate = app.hub.gate
        gate.max_rss = 1
        await until(lambda: gate.shed_total >= 1, 15)
        gate.max_rss = NEVER
        gone = "window.log.conn.some((e) => e.kind === 'disconnected')"
        await page.wait_for_function(gone, timeout=20_000, polling=50)
        proxy.remove_toxic(slow.name)  # the page saw the end: the rest goes fast
        log = await _finish(page)
    lost = disconnects(log)
    assert len(lost) == 1, log["conn"]  # no 4004 from the silence detector first
    assert lost[0]["code"] == 4008, lost[0]
    lines = [r.getMessage() for r in caplog.records if "shed slow reader" in r.message]
    assert len(lines) == 1, lines
    m = re.search(r"retry_after_ms=(\d+)", lines[0])
    assert m is not None
    retry_after_ms = int(m.group(1))
    assert lost[0]["retryAfter"] * 1000 == pytest.approx(retry_after_ms, abs=1)
    again = [e for e in log["conn"] if e["kind"] == "reconnecting" and e["at"] >= lost[0]["at"]]
    assert again and again[0]["delay"] * 1000 >= retry_after_ms - 1, again
    back = [e for e in log["conn"] if e["kind"] == "connected" and e["at"] > lost[0]["at"]]
    assert back and back[0]["at"] - lost[0]["at"] >= retry_after_ms - 1, (lost, back)  # (ms)
    resumed = [e for e in log["conn"] if e["kind"] == "resumed" and e["at"] > lost[0]["at"]]
    assert resumed and resumed[0]["fromSeq"] > 0, log["conn"]
    await assert_exact(rig, log, runs=1)
    assert gate.shed_total == 1
