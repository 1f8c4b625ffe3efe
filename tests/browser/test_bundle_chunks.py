"""The page bundle's lazily loaded modules in a real Chromium page: BLAKE2b runs in
WebAssembly, so a page never asks for ``unbroken-blake2b.js``; under a
Content-Security-Policy that refuses to compile WebAssembly (no
``'wasm-unsafe-eval'``) the core loads that JavaScript compression from beside itself
and the answer is the same, verified in the page against the server's digest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from unbroken.chaos import FaultProxy
from unbroken.testing import serve

from .conftest import Rig, _Site, mixed_app
from .test_browser_faults import SIZE, _finish, assert_exact

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

#: scripts from the page's origin (and its inline module); no 'wasm-unsafe-eval'
CSP = "script-src 'self' 'unsafe-inline'"
#: resolves when the page's answer is done (checked every 50 ms, at most 60 s)
WAIT_DONE = """new Promise((resolve, reject) => {
  const t0 = performance.now();
  const check = () => (window.log && window.log.done === true ? resolve(true)
    : performance.now() - t0 > 60000 ? reject(new Error("not done in 60 s"))
    : setTimeout(check, 50));
  check();
})"""


class _CspSite(_Site):
    """The test site; the page with ``csp=1`` in its query is sent with ``CSP``. (A
    header added by Playwright's routing would make the page another address space
    to Chromium, which then refuses its loopback WebSocket.)"""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"")
        if scope["type"] != "http" or scope.get("path") != "/" or b"csp=1" not in query:
            await super().__call__(scope, receive, send)
            return

        async def with_csp(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message["headers"], (b"content-security-policy", CSP.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_csp)


@pytest_asyncio.fixture(loop_scope="session")
async def rig() -> AsyncIterator[Rig]:
    calls: dict[str, int] = {}
    app = mixed_app(calls)
    async with (
        serve(_CspSite(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        yield Rig(app, server, proxy, calls)


async def _stream(browser: Any, rig: Rig, csp: str | None) -> tuple[dict[str, Any], list[str]]:
    ctx = await browser.new_context()
    try:
        page = await ctx.new_page()
        loaded: list[str] = []
        page.on("request", lambda r: loaded.append(r.url.rsplit("/", 1)[-1]))
        await page.goto(rig.url(SIZE) + ("&csp=1" if csp is not None else ""))
        if csp is not None:
            # (wait_for_function compiles its predicate in the page: the CSP refuses
            # that; an evaluated promise is not the page's own script)
            await page.evaluate(WAIT_DONE)
        log = await _finish(page)
        if csp is not None:
            refused = await page.evaluate(
                "(() => { try {"
                " new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));"
                " return false; } catch (e) { return e instanceof WebAssembly.CompileError"
                " || e instanceof EvalError; } })()"
            )
            assert refused, "the CSP did not refuse WebAssembly: this test proves nothing"
        return log, loaded
    finally:
        await ctx.close()


async def test_webassembly_blake2b_needs_no_chunk(rig: Rig, browser: Any) -> None:
    log, loaded = await _stream(browser, rig, None)
    await assert_exact(rig, log)
    assert "unbroken.js" in loaded
    assert "unbroken-blake2b.js" not in loaded, loaded
    assert "unbroken-v1.js" not in loaded, loaded


async def test_a_csp_without_wasm_loads_the_javascript_blake2b(rig: Rig, browser: Any) -> None:
    log, loaded = await _stream(browser, rig, CSP)
    await assert_exact(rig, log)
    assert "unbroken-blake2b.js" in loaded, loaded
