"""Protocol v2 in a real Chromium page: the JS client negotiates ``unbroken.v2``
(binary MessagePack frames, stream handles, 8-byte per-frame digests, the full 16 at
the end, the ``zlib`` cap inflated by the browser's DecompressionStream), survives
cuts by the fault proxy with the answer exact and its digest verified in the page;
a page pinned to v1 still works against the same server; a v1-only page facing a
v2-only server shows the typed ``UnsupportedVersion``.
"""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.chaos import FaultProxy
from unbroken.testing import serve

from .conftest import Rig, _Site, mixed_app
from .test_browser_faults import SIZE, _finish, assert_exact, disconnects

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

#: v2 wire bytes per byte of this answer without compression (MessagePack strings,
#: tags, handle and seq, 10 bytes of h per frame): measured 1.02-1.03
WIRE_V2 = 1.03


def versions(log: dict[str, Any]) -> list[str]:
    return [e["version"] for e in log["conn"] if e["kind"] == "connected"]


async def test_v2_cut_by_bytes_at_half_uncompressed_is_resumed_exactly(
    rig: Rig, browser: Any
) -> None:
    """v2 without the zlib cap: a rst after half the answer's bytes."""
    rig.proxy.cut_after_bytes(int(SIZE * WIRE_V2 * 0.5), mode="rst")
    page = await (await browser.new_context()).new_page()
    await page.goto(rig.url(SIZE))
    log = await _finish(page)
    assert versions(log) == ["v2", "v2"], log["conn"]
    assert len(disconnects(log)) == 1, log["conn"]
    resumed = [e for e in log["conn"] if e["kind"] == "resumed"]
    # about half the answer's events came before the cut (≈ 56k events in all)
    assert len(resumed) == 1 and 20_000 < resumed[0]["fromSeq"] < 36_000, resumed
    await assert_exact(rig, log)


async def test_v2_with_zlib_cut_mid_answer_by_fin_is_resumed_exactly(
    rig: Rig, browser: Any
) -> None:
    """v2 with the zlib cap (the default): the answer crosses the wire deflated; a fin
    once the page has half of it."""
    page = await (await browser.new_context()).new_page()
    # paced by the agent (a sleep every 500 tokens): about 2 s in all
    await page.goto(rig.url(SIZE, compression=True) + "&pace=0.02")
    await page.wait_for_function(f"window.log.received > {SIZE // 12 // 4}", polling=10)
    assert await rig.proxy.cut_all("fin") == 1
    log = await _finish(page)
    assert versions(log) == ["v2", "v2"], log["conn"]
    assert len(disconnects(log)) == 1, log["conn"]
    await assert_exact(rig, log)
    # compressed: far fewer bytes crossed than the answer has
    sent = rig.proxy.totals()["downstream"]["sent"]
    assert sent < SIZE // 3, sent


async def test_a_page_pinned_to_v1_works_against_the_same_server(rig: Rig, browser: Any) -> None:
    page = await (await browser.new_context()).new_page()
    rig.proxy.cut_after_bytes(int(SIZE * 1.25 * 0.5), mode="fin")
    await page.goto(rig.url(SIZE) + "&protocols=v1")
    log = await _finish(page)
    assert versions(log) == ["v1", "v1"], log["conn"]
    assert len(disconnects(log)) == 1
    await assert_exact(rig, log)


async def test_a_v1_only_page_against_a_v2_only_server_shows_unsupported_version(
    browser: Any,
) -> None:
    calls: dict[str, int] = {}
    app = mixed_app(calls, protocols=("v2",))
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        rig = Rig(app, server, proxy, calls)
        page = await (await browser.new_context()).new_page()
        await page.goto(rig.url(1000) + "&protocols=v1")
        await page.wait_for_function("window.log && window.log.done === true", timeout=20_000)
        log = await page.evaluate("window.log")
    assert log["errorName"] == "UnsupportedVersion", log
    assert "this client speaks v1, the server speaks v2" in log["error"], log["error"]
    # typed and final: one attempt, never retried; the agent never ran
    assert [e["kind"] for e in log["conn"]].count("reconnecting") == 0, log["conn"]
    assert calls.get("mixed", 0) == 0


@pytest.mark.full
async def test_v2_cut_by_bytes_at_half_fin_uncompressed(rig: Rig, browser: Any) -> None:
    rig.proxy.cut_after_bytes(int(SIZE * WIRE_V2 * 0.5), mode="fin")
    page = await (await browser.new_context()).new_page()
    await page.goto(rig.url(SIZE))
    log = await _finish(page)
    assert versions(log) == ["v2", "v2"]
    assert len(disconnects(log)) == 1
    await assert_exact(rig, log)


@pytest.mark.full
async def test_v2_with_zlib_cut_mid_answer_by_rst(rig: Rig, browser: Any) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(rig.url(SIZE, compression=True) + "&pace=0.02")
    await page.wait_for_function(f"window.log.received > {SIZE // 12 // 4}", polling=10)
    assert await rig.proxy.cut_all("rst") == 1
    log = await _finish(page)
    assert versions(log) == ["v2", "v2"]
    assert len(disconnects(log)) == 1
    await assert_exact(rig, log)
