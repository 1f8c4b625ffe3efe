"""A real browser for the scenarios and the browser tests: Debian's chromium driven by
Playwright for Python, the JS client's test page and bundle served over HTTP, and the
faults only a browser has (a Page Lifecycle freeze, a stopped renderer).

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (or
``$UNBROKEN_CHROMIUM``), passed as ``executable_path``. The page is the repository's
``tests/browser/page.html``, the bundle its ``js/dist/unbroken.js`` (``./dev setup``
builds it): both are read from the checkout at run time. :func:`missing` says why a
browser run cannot happen here (then it is skipped with that reason).

Facts about faulting a real browser: ``/work/shared/research/browser-faults.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: The repository checkout this package runs from.
ROOT: Final = Path(__file__).resolve().parents[2]
#: The JS client, built (``./dev setup``, or ``cd js && npm ci && npm run build``).
BUNDLE: Final = ROOT / "js" / "dist" / "unbroken.js"
#: The page that streams one answer with the JS client and reports on ``window.log``.
PAGE: Final = ROOT / "tests" / "browser" / "page.html"
#: Debian's chromium.
CHROMIUM: Final = (
    os.environ.get("UNBROKEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
#: Chromium's switches for a quiet, container-friendly headless run.
ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
#: The page has finished (the answer verified, or an error shown).
DONE: Final = "window.log && window.log.done === true"


def missing() -> str | None:
    """Why a browser run cannot happen here (None: it can): no chromium, no Playwright
    for Python, no built bundle or no test page."""
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (./dev setup installs Debian's chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (pip install -e '.[dev]')"
    if not BUNDLE.exists():
        return f"{BUNDLE} is not built (./dev setup, or: cd js && npm ci && npm run build)"
    if not PAGE.exists():
        return f"the browser test page {PAGE} is missing (not a repository checkout?)"
    return None


#: The built files a test page may load (and their source maps): the page bundle, its
#: lazily loaded v1 codec and JavaScript BLAKE2b, and the bundle with every internal
#: (benchmarks in the page).
SERVED: Final = ("unbroken.js", "unbroken-v1.js", "unbroken-blake2b.js", "testing.js", "core.js")


class PageSite:
    """ASGI: the test page at ``/`` and the built client (``SERVED``: ``/unbroken.js``
    …) over HTTP; every other request to ``inner`` (e.g. an unbroken app's
    WebSocket), or 404 without one."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/" or path.removesuffix(".map")[1:] in SERVED):
            if path == "/":
                body, ctype = PAGE.read_bytes(), "text/html; charset=utf-8"
            else:
                body, ctype = (BUNDLE.parent / path[1:]).read_bytes(), "text/javascript"
            await _respond(send, 200, body, ctype)
            return
        if self.inner is not None:
            await self.inner(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await _respond(send, 404, b"not found", "text/plain")
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})


async def _respond(send: Any, status: int, body: bytes, ctype: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """Serve the page and the bundle on loopback; yields the page's base URL."""
    from ..testing import serve

    async with serve(PageSite(), path="/") as server:
        yield f"http://127.0.0.1:{server.port}/"


# ------------------------------------------------------------------ browsers
@contextlib.asynccontextmanager
async def _playwright(given: Any) -> AsyncIterator[Any]:
    """``given`` (a started Playwright, whose driver the caller keeps), or a Playwright
    started for the block (its driver, a Node process, stopped after it)."""
    if given is not None:
        yield given
        return
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        yield p


@contextlib.asynccontextmanager
async def launch(playwright: Any = None) -> AsyncIterator[Any]:
    """A Playwright-launched chromium (Playwright's ``Browser``), closed after the
    block; through ``playwright`` (a started one) if given, else through a driver
    started (and stopped) for it."""
    async with _playwright(playwright) as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(ARGS))
        try:
            yield b
        finally:
            await b.close()


@dataclass
class OwnChromium:
    """A chromium started here and attached to over CDP with ``no_defaults``: the only
    way a Page Lifecycle freeze really freezes the page (a normal Playwright launch turns
    focus emulation on, which prevents it)."""

    browser: Any
    context: Any
    page: Any
    pid: int


@contextlib.asynccontextmanager
async def start_own_chromium(playwright: Any = None) -> AsyncIterator[OwnChromium]:
    """Start chromium with a debugging port and attach over CDP (``no_defaults``); the
    default context's page. Killed (its whole process group) on exit. Attached through
    ``playwright`` (a started one) if given, else through a driver started for it."""
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
                await asyncio.sleep(0.05)  # chromium writes the file when it listens
            port = int(port_file.read_text().split()[0])
            async with _playwright(playwright) as p:
                b = await p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", no_defaults=True)
                ctx = b.contexts[0]
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                try:
                    yield OwnChromium(b, ctx, page, proc.pid)
                finally:
                    with contextlib.suppress(Exception):
                        await b.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)


# ------------------------------------------------------------------ browser faults
async def lifecycle(context: Any, page: Any, state: str) -> None:
    """Set the page's Page Lifecycle state (``frozen`` or ``active``) over CDP: a real
    freeze only in a chromium of :func:`start_own_chromium`."""
    cdp = await context.new_cdp_session(page)
    try:
        await cdp.send("Page.enable")
        await cdp.send("Page.setWebLifecycleState", {"state": state})
    finally:
        with contextlib.suppress(Exception):
            await cdp.detach()


async def renderer_pids(browser: Any) -> list[int]:
    """The process ids of the browser's renderers (one page may have several)."""
    cdp = await browser.new_browser_cdp_session()
    try:
        info = await cdp.send("SystemInfo.getProcessInfo")
    finally:
        with contextlib.suppress(Exception):
            await cdp.detach()
    return [int(p["id"]) for p in info["processInfo"] if p["type"] == "renderer"]


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """SIGSTOP every process of ``pids`` for the block (a stalled tab), then SIGCONT."""
    done: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            done.append(pid)
        yield
    finally:
        for pid in done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


__all__ = [
    "ARGS",
    "BUNDLE",
    "CHROMIUM",
    "DONE",
    "PAGE",
    "ROOT",
    "OwnChromium",
    "PageSite",
    "launch",
    "lifecycle",
    "missing",
    "page_server",
    "renderer_pids",
    "start_own_chromium",
    "stopped",
]
