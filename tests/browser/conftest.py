"""Real-browser tests: Debian's chromium driven by Playwright for Python.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (``./dev setup``
installs it), passed as ``executable_path``; the page loads the built ES module
``js/dist/unbroken.js`` (``./dev setup`` builds it). Facts about faulting a real
browser on this machine: ``/work/shared/research/browser-faults.md``.

Without chromium, Playwright or the bundle these tests skip with the reason, except
under ``CI=true``, where they fail: CI must not pass by testing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unbroken.chaos import FaultProxy
from unbroken.server import Unbroken
from unbroken.testing import RunningServer, serve

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "js" / "dist" / "unbroken.js"
PAGE = Path(__file__).with_name("page.html")
CHROMIUM = os.environ.get("UNBROKEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (./dev setup installs Debian's chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (pip install -e '.[dev]')"
    if not BUNDLE.exists():
        return f"{BUNDLE} is not built (./dev setup, or: cd js && npm ci && npm run build)"
    return None


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    why = _missing()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run under CI: {why}")
        pytest.skip(why)


# ------------------------------------------------------------------ the answer
def expected_parts(size: int) -> dict[str, str]:
    """The parts the ``mixed`` agent writes for ``size`` bytes (deterministic):
    a text part of numbered tokens, a JSON part in row fragments, a data part."""
    n_text = max(1, size * 6 // 10 // 12)
    n_rows = max(1, size * 3 // 10 // 36)
    text = "".join(f"tok{i:07d}  " for i in range(n_text))
    rows = ", ".join(f'{{"n": {i}, "s": "row {i:08d}"}}' for i in range(n_rows))
    summary = '{"rows": [' + rows + "]}"
    chart = json.dumps(
        {
            "mark": "bar",
            "data": {"values": [{"a": i, "b": i * 7 % 97} for i in range(size // 10 // 20)]},
        },
        separators=(",", ":"),
    )
    return {"text": text, "summary": summary, "chart": chart}


def mixed_app(calls: dict[str, int]) -> Unbroken:
    app = Unbroken(allow_anonymous=True)

    @app.agent("mixed")
    async def mixed(req, out):  # type: ignore[no-untyped-def]
        calls["mixed"] = calls.get("mixed", 0) + 1
        given = req.input if isinstance(req.input, dict) else {}
        size = int(given.get("size", 0))
        pace = float(given.get("pace", 0))  # seconds of sleep every 500 text tokens
        parts = expected_parts(size or 1_100_000)
        text = parts["text"]
        half = len(text) // 2 // 12 * 12
        for i in range(0, half, 12):
            await out.text(text[i : i + 12])
            if i % 6000 == 0:
                await asyncio.sleep(pace)
        async with out.json("summary") as j:
            body = parts["summary"]
            for i in range(0, len(body), 400):
                await j.write(body[i : i + 400])
        for i in range(half, len(text), 12):
            await out.text(text[i : i + 12])
            if i % 6000 == 0:
                await asyncio.sleep(pace)
        await out.data("chart", parts["chart"], mime="application/vnd.vegalite+json")

    return app


class _Site:
    """ASGI: the test page and the bundle over HTTP; the rest to the unbroken app."""

    def __init__(self, app: Unbroken) -> None:
        self.inner = app.asgi("/ws")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/", "/unbroken.js", "/unbroken.js.map"):
            path = scope["path"]
            if path == "/":
                body, ctype = PAGE.read_bytes(), "text/html; charset=utf-8"
            else:
                body, ctype = (BUNDLE.parent / path[1:]).read_bytes(), "text/javascript"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.inner(scope, receive, send)


@dataclass
class Rig:
    """A server, a fault proxy in front of its WebSocket, and the page's URL."""

    app: Unbroken
    server: RunningServer
    proxy: FaultProxy
    calls: dict[str, int] = field(default_factory=dict)

    def url(self, size: int = 0, req: str = "") -> str:
        q = f"?ws=ws://127.0.0.1:{self.proxy.port}/ws&agent=mixed&size={size}"
        return f"http://127.0.0.1:{self.server.port}/{q}" + (f"&req={req}" if req else "")

    async def final_digest(self, stream: str) -> str:
        meta = await self.app.store.meta(stream)
        assert meta is not None
        digest = await self.app.store.digest_at(stream, meta.head)
        assert digest is not None
        return digest.hex()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    calls: dict[str, int] = {}
    app = mixed_app(calls)
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        yield Rig(app, server, proxy, calls)


# ------------------------------------------------------------------ browsers
@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A Playwright-launched chromium (one per test: a SIGSTOP stops only its own)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class OwnChromium:
    """A chromium this test started itself and attached to over CDP with
    ``no_defaults``: the only way a Page Lifecycle freeze really freezes the page
    (a normal Playwright launch turns focus emulation on, which prevents it)."""

    browser: Any
    context: Any
    page: Any


@pytest.fixture
async def own_chromium() -> AsyncIterator[OwnChromium]:
    async with start_own_chromium() as own:
        yield own


@contextlib.asynccontextmanager
async def start_own_chromium() -> AsyncIterator[OwnChromium]:
    """Start chromium with a debugging port and attach over CDP (``no_defaults``)."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="unbroken-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            *ARGS,
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 20
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit {proc.returncode})")
                await asyncio.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            async with async_playwright() as p:
                b = await p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", no_defaults=True)
                ctx = b.contexts[0]
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                try:
                    yield OwnChromium(b, ctx, page)
                finally:
                    with contextlib.suppress(Exception):
                        await b.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
