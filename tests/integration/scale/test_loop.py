"""``unbroken serve --loop``: uvloop by default when installed, and exact on it."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from unbroken.client import Client
from unbroken.errors import ConfigError
from unbroken.server import serving
from unbroken.server.serving import resolve_loop

from .conftest import FAST, Served, expected_text, full_digest

pytestmark = pytest.mark.timeout(60)
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
NO_UVLOOP = "uvloop not installed: pip install -e '.[server]' (./dev setup installs it)"


def test_auto_is_uvloop_when_installed_and_asyncio_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "uvloop_installed", lambda: True)
    assert resolve_loop("auto") == "uvloop"
    assert resolve_loop("uvloop") == "uvloop"
    monkeypatch.setattr(serving, "uvloop_installed", lambda: False)
    assert resolve_loop("auto") == "asyncio"
    assert resolve_loop("asyncio") == "asyncio"
    with pytest.raises(
        ConfigError,
        match=r"uvloop is not installed: pip install 'unbroken\[server\]'",
    ):
        resolve_loop("uvloop")
    with pytest.raises(ConfigError, match="unknown event loop 'trio'"):
        resolve_loop("trio")


async def _round_trip(url: str, n: int) -> None:
    async with Client(url, policy=FAST) as client:
        streams = [
            await client.start("count", {"n": n, "every": 100, "pause": 0.001}) for _ in range(4)
        ]
        answers = await asyncio.gather(*(st.wait() for st in streams))
    for st, answer in zip(streams, answers, strict=True):
        assert answer.status == "completed"
        assert answer.text == expected_text(n)
        assert answer.digest == full_digest(st.id, st.epoch, n)


@pytest.mark.skipif(not HAVE_UVLOOP, reason=NO_UVLOOP)
@pytest.mark.parametrize("flag", [None, "uvloop"])
async def test_served_on_uvloop_by_default_and_when_asked_the_round_trip_is_exact(
    served: list[Served], flag: str | None
) -> None:
    args = ("--loop", flag) if flag else ()
    srv = await Served.start("tests.integration.scale.apps:memory_app", *args)
    served.append(srv)
    await srv.p.wait_line(r"event loop: uvloop \(uvloop\.Loop\)")
    await _round_trip(srv.url, 3000)


async def test_loop_asyncio_is_the_standard_loop(served: list[Served]) -> None:
    srv = await Served.start("tests.integration.scale.apps:memory_app", "--loop", "asyncio")
    served.append(srv)
    await srv.p.wait_line(r"event loop: asyncio \(asyncio\.\S+EventLoop\)")
    await _round_trip(srv.url, 1000)
