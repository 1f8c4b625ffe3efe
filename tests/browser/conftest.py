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
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

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


def mixed_app(calls: dict[str, int], **options: Any) -> Unbroken:
    """The app of the ``mixed`` agent (anonymous unless ``options`` say otherwise:
    ``auth=…``)."""
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
    async with launch() as b:
        yield b


@pytest.fixture
async def own_chromium() -> AsyncIterator[OwnChromium]:
    """A chromium started by the test, attached over CDP with ``no_defaults``
    (:func:`unbroken.scenarios.browser.start_own_chromium`)."""
    async with start_own_chromium() as own:
        yield own
