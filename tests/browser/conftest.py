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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from unbroken.chaos import FaultProxy
from unbroken.scenarios.browser import (
    ARGS,
    BUNDLE,
    CHROMIUM,
    PAGE,
    OwnChromium,
    PageSite,
    launch,
    missing,
    start_own_chromium,
)
from unbroken.server import Unbroken
from unbroken.testing import RunningServer, serve

# (measure.py and older tests import these from here)
__all__ = ["ARGS", "BUNDLE", "CHROMIUM", "PAGE", "OwnChromium", "start_own_chromium"]

_missing = missing


def _check() -> None:
    why = _missing()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run under CI: {why}")
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    _check()


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


def mixed_app(
    calls: dict[str, int], holds: list[asyncio.Event] | None = None, **options: Any
) -> Unbroken:
    """The app of the ``mixed`` agent (anonymous unless ``options`` say otherwise:
    ``auth=…``). ``holds``: events a run waits for once it has written the first half
    of its text part (see :meth:`Rig.hold_at_half`)."""
    app = Unbroken(**({"allow_anonymous": "auth" not in options} | options))

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
        for hold in holds or ():
            await hold.wait()
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


class _Site(PageSite):
    """ASGI: the test page and the bundle over HTTP; the rest to the unbroken app."""

    def __init__(self, app: Unbroken) -> None:
        super().__init__(app.asgi("/ws"))


@dataclass
class Rig:
    """A server, a fault proxy in front of its WebSocket, and the page's URL."""

    app: Unbroken
    server: RunningServer
    proxy: FaultProxy
    calls: dict[str, int] = field(default_factory=dict)
    holds: list[asyncio.Event] = field(default_factory=list)

    def hold_at_half(self) -> asyncio.Event:
        """Make the agent's runs wait, once they have written the first half of their
        text part (its first ``len(text) // 2 // 12`` tokens), until the returned event
        is set: a fault
        timed by the page's progress then lands mid-answer however late the test gets
        to it (a paced answer may have finished meanwhile on a loaded machine)."""
        release = asyncio.Event()
        self.holds.append(release)
        return release

    def url(self, size: int = 0, req: str = "", *, compression: bool = False) -> str:
        """The page's URL. The page speaks the client's default protocol (v2), but
        without the ``zlib`` cap unless ``compression``: tests that cut after a number
        of bytes or pace by bandwidth need the bytes to track the answer."""
        q = f"?ws=ws://127.0.0.1:{self.proxy.port}/ws&agent=mixed&size={size}"
        q += "" if compression else "&compression=0"
        return f"http://127.0.0.1:{self.server.port}/{q}" + (f"&req={req}" if req else "")

    async def final_digest(self, stream: str) -> str:
        meta = await self.app.store.meta(stream)
        assert meta is not None
        digest = await self.app.store.digest_at(stream, meta.head)
        assert digest is not None
        return digest.hex()


@pytest_asyncio.fixture(loop_scope="session")
async def rig() -> AsyncIterator[Rig]:
    calls: dict[str, int] = {}
    holds: list[asyncio.Event] = []
    app = mixed_app(calls, holds)
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        yield Rig(app, server, proxy, calls, holds)


# ------------------------------------------------------------------ browsers
# One Playwright driver (a Node process, most of a second to start) and one chromium
# for the whole run: each test gets fresh browser contexts (their own storage, cookies,
# cache; closed after it), not a fresh browser. The tests that fault the browser itself
# keep their own chromium (``solo_browser``: a SIGSTOP of its renderers stops no other
# test's; ``own_chromium``: a Page Lifecycle freeze needs a chromium started without
# Playwright's defaults). Every async test and fixture here runs on the session's event
# loop (``pytestmark`` of each module, ``loop_scope`` below), the loop Playwright's
# objects belong to.
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pw() -> AsyncIterator[Any]:
    """Playwright (its driver started once for the run)."""
    _check()  # (before _need_browser: a session fixture is set up first)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        yield p


class _Shared:
    """The run's chromium, launched again if a test lost it (a crash)."""

    def __init__(self) -> None:
        self.browser: Any = None
        self.exit: contextlib.AsyncExitStack | None = None

    async def get(self, pw: Any) -> Any:
        if self.browser is not None and self.browser.is_connected():
            return self.browser
        await self.close()
        self.exit = contextlib.AsyncExitStack()
        self.browser = await self.exit.enter_async_context(launch(pw))
        return self.browser

    async def close(self) -> None:
        if self.exit is not None:
            exit, self.exit, self.browser = self.exit, None, None
            with contextlib.suppress(Exception):
                await exit.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _shared_browser(pw: Any) -> AsyncIterator[_Shared]:
    shared = _Shared()
    try:
        yield shared
    finally:
        await shared.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(pw: Any, _shared_browser: _Shared) -> AsyncIterator[Any]:
    """The run's Playwright-launched chromium; the contexts a test opens in it are
    closed after the test (it starts with none open)."""
    b = await _shared_browser.get(pw)
    for ctx in list(b.contexts):  # a failed teardown's leftovers
        await ctx.close()
    try:
        yield b
    finally:
        for ctx in list(b.contexts):
            with contextlib.suppress(Exception):
                await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def solo_browser(pw: Any) -> AsyncIterator[Any]:
    """A chromium of the test's own (a SIGSTOP of its renderers stops only its own),
    launched through the run's driver."""
    async with launch(pw) as b:
        yield b


@pytest_asyncio.fixture(loop_scope="session")
async def own_chromium(pw: Any) -> AsyncIterator[OwnChromium]:
    """A chromium started by the test, attached over CDP with ``no_defaults``
    (:func:`unbroken.scenarios.browser.start_own_chromium`)."""
    async with start_own_chromium(pw) as own:
        yield own
