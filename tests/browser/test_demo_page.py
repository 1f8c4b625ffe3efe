"""``unbroken serve --demo-page`` in real Chromium: the page starts an agent with the
browser client, shows its parts streaming, and its fault buttons break the link for
real (the page drops its socket; the server cuts the link; a blackhole the page's
silence detector finds); each time the answer resumes, ends exact, and the digest the
page shows is the one the server's log holds (read back over its HTTP stream path).

The server is a real ``unbroken serve`` process; without the built bundle the page
says how to build it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unbroken.server import Unbroken
from unbroken.server.demo_page import DemoPage
from unbroken.testing import serve

from .conftest import expected_parts

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
DONE = "window.demo && window.demo.done === true"
SIZE = 300_000


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    """``unbroken serve tests.browser.demo_app:app --demo-page --port 0`` as a process,
    one for the module's tests (each has its own page, stream and links: a fault
    button faults only the page's own links); yields the page's URL (from its log line).
    A thread reads the server's log throughout, so its pipe never fills."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from unbroken.cli import main; main()",
            "serve",
            "tests.browser.demo_app:app",
            "--demo-page",
            "--port",
            "0",
            "--loop",
            "asyncio",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    urls: list[str] = []
    seen = threading.Event()  # the URL's line, or the end of the log

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"demo page: (http://\S+)", line)
            if found and not urls:
                urls.append(found.group(1))
                seen.set()
        seen.set()

    reader = threading.Thread(target=read_log, name="demo-server-log", daemon=True)
    reader.start()
    try:
        assert seen.wait(30), f"no demo page URL in 30 s: {''.join(lines)}"
        assert urls, f"unbroken serve exited: {''.join(lines)}"
        yield urls[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines[-20:])
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)


def server_digest(base: str, stream: str) -> str:
    """The final digest of ``stream`` in the server's log: the last offset of its HTTP
    read (``{seq:016d}_{digest}``) once the answer has ended."""
    with urllib.request.urlopen(f"{base}v1/agent/{stream}?offset=-1", timeout=10) as r:
        offset: str = r.headers["Stream-Next-Offset"]
        assert r.headers.get("Stream-Up-To-Date") == "true" or r.status == 200
    return offset.split("_", 1)[1]


async def start(page: Any, url: str, pace: float) -> None:
    await page.goto(url)
    await page.wait_for_function("window.demo && window.demo.ready", timeout=10_000)
    await page.select_option("#agent", "mixed")
    await page.fill("#input", f'{{"size": {SIZE}, "pace": {pace}}}')
    await page.click("#start")


async def finished(page: Any, url: str) -> dict[str, Any]:
    await page.wait_for_function(DONE, timeout=30_000, polling=50)
    demo: dict[str, Any] = await page.evaluate("window.demo")
    assert demo["error"] is None, f"{demo['errorName']}: {demo['error']} {demo['events']}"
    assert demo["status"] == "completed"
    assert demo["parts"] == expected_parts(SIZE)
    shown = await page.text_content("#digest")
    assert demo["digest"] and demo["digest"] in shown and "verified" in shown
    assert demo["digest"] == await asyncio.to_thread(server_digest, url, demo["streamId"])
    return demo


async def test_the_demo_page_streams_an_answer_and_shows_its_digest(
    browser: Any, demo_url: str
) -> None:
    page = await (await browser.new_context()).new_page()
    await start(page, demo_url, pace=0)
    demo = await finished(page, demo_url)
    kinds = [e["kind"] for e in demo["events"]]
    assert kinds[0] == "connected" and "disconnected" not in kinds
    assert await page.text_content("#state") == "connected"


@pytest.mark.parametrize("button", ["drop", "cut", "blackhole"])
async def test_a_fault_button_breaks_the_link_and_the_answer_resumes_exact(
    browser: Any, demo_url: str, button: str
) -> None:
    page = await (await browser.new_context()).new_page()
    await start(page, demo_url, pace=0.1)  # about 3 s: the fault lands mid-answer
    await page.wait_for_function("window.demo.received > 1000", timeout=10_000, polling=20)
    await page.click(f"#{button}")
    assert await page.evaluate("window.demo.done") is False, "the fault must come mid-answer"
    demo = await finished(page, demo_url)
    faults = demo["faults"]
    assert len(faults) == 1 and faults[0].get("links", faults[0].get("sockets")) == 1, faults
    kinds = [e["kind"] for e in demo["events"]]
    assert kinds.count("disconnected") == 1, demo["events"]
    lost = next(e for e in demo["events"] if e["kind"] == "disconnected")
    expected_code = {"drop": 3000, "cut": 1001, "blackhole": 4004}[button]
    assert lost["code"] == expected_code, lost
    resumed = [e for e in demo["events"] if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["fromSeq"] > 1000, demo["events"]
    events = await page.text_content("#events")
    assert "resumed" in events and "reconnecting" in events


async def test_without_the_bundle_the_page_says_how_to_build_it(
    browser: Any, tmp_path: Path
) -> None:
    app = Unbroken(allow_anonymous=True)
    site = DemoPage(app.asgi("/ws"), agents=["x"], bundle=tmp_path / "unbroken.js")
    async with serve(site, path="/ws") as server:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await page.wait_for_function("window.demo && window.demo.error", timeout=10_000)
        notice = await page.text_content("#notice")
        assert await page.is_visible("#notice")
    assert notice is not None and "not built" in notice and "./dev setup" in notice


SECRET = "demo-page-test-secret-0123456789abcdef0123"


def jwt_token(lifetime: float) -> str:
    import jwt

    exp = time.time() + lifetime
    return jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")


async def test_with_auth_the_page_asks_a_token_and_refreshes_in_band(browser: Any) -> None:
    from unbroken.server.auth import JWTAuth

    from .conftest import mixed_app

    app = mixed_app({}, auth=JWTAuth(key=SECRET, algorithms=["HS256"]))
    site = DemoPage(app.asgi("/ws"), agents=app.agents, auth=True)
    async with serve(site, path="/ws") as server:
        url = f"http://127.0.0.1:{server.port}/"
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        await page.wait_for_function("window.demo && window.demo.ready", timeout=10_000)
        assert await page.is_visible("#token")
        # a wrong token: the typed error is shown, and the next Start opens a new session
        await page.fill("#token", "not-a-token")
        await page.select_option("#agent", "mixed")
        await page.fill("#input", f'{{"size": {SIZE}, "pace": 0.1}}')
        await page.click("#start")
        await page.wait_for_function(DONE, timeout=10_000, polling=50)
        assert await page.evaluate("window.demo.errorName") == "AuthError"
        assert "AuthError" in (await page.text_content("#digest") or "")
        # a token of 2 s, replaced in the field by a long one once the answer runs
        # (about 3 s): the client asks the field before the first expires, in-band
        await page.fill("#token", jwt_token(2.0))
        await page.click("#start")
        await page.wait_for_function("window.demo.received > 100", timeout=10_000, polling=20)
        await page.fill("#token", jwt_token(60.0))
        await page.wait_for_function(DONE, timeout=30_000, polling=50)
        demo: dict[str, Any] = await page.evaluate("window.demo")
        assert demo["error"] is None, f"{demo['errorName']}: {demo['error']} {demo['events']}"
        assert demo["parts"] == expected_parts(SIZE)
        kinds = [e["kind"] for e in demo["events"]]
        assert "refreshed" in kinds and "disconnected" not in kinds[kinds.index("refreshed") :]
        meta = await app.store.meta(demo["streamId"])
        assert meta is not None
        digest = await app.store.digest_at(demo["streamId"], meta.head)
        assert digest is not None and demo["digest"] == digest.hex()
        assert "refreshed" in (await page.text_content("#events") or "")


async def test_a_reload_mid_answer_picks_up_the_same_answer(browser: Any, demo_url: str) -> None:
    page = await (await browser.new_context()).new_page()
    await start(page, demo_url, pace=0.1)
    await page.wait_for_function("window.demo.received > 1000", timeout=10_000, polling=20)
    before = await page.evaluate("window.demo.streamId")
    await page.reload()
    await page.wait_for_function(DONE, timeout=30_000, polling=50)
    demo: dict[str, Any] = await page.evaluate("window.demo")
    assert demo["error"] is None, f"{demo['errorName']}: {demo['error']} {demo['events']}"
    assert demo["streamId"] == before and demo["status"] == "completed"
    assert demo["fromSeq"] > 1000
    assert demo["digest"] == await asyncio.to_thread(server_digest, demo_url, before)
    assert "picked up after a reload" in (await page.text_content("#digest") or "")
