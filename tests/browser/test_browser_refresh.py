"""In-band token refresh (protocol §18) in a real page against the real server with
real signed tokens (HS256 JWTs, 2 s lifetime): the page's token provider is asked
on connect and on ``auth_expiring``; a refreshed connection carries the answer
through several expiries without a reconnect; refused refreshes end in close 4010,
a reconnect with a fresh token, and an exact resume."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio

from unbroken.chaos import FaultProxy
from unbroken.server.auth import JWTAuth
from unbroken.testing import serve

from .conftest import Rig, _Site, mixed_app
from .test_browser_faults import _finish, assert_exact, disconnects

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "browser-refresh-test-secret-0123456789abcdef"
LIFETIME = 2.0  # seconds: the 1.1 MB answer, paced by its agent, outlives it twice
#: the agent sleeps this long every 500 text tokens: the answer takes about 5.5 s.
#: (Paced by the agent, not by a slow link: behind a slow link a full flow window
#: holds the server's ``auth_expiring`` back for up to window / rate seconds.)
PACE = 0.05


def token(*, expired: bool = False) -> str:
    exp = time.time() + (-5 if expired else LIFETIME)
    return jwt.encode({"sub": "alice", "exp": int(exp * 1000) / 1000}, SECRET, algorithm="HS256")


@pytest_asyncio.fixture(loop_scope="session")
async def auth_rig() -> AsyncIterator[Rig]:
    calls: dict[str, int] = {}
    app = mixed_app(calls, auth=JWTAuth(key=SECRET, algorithms=["HS256"]))
    async with (
        serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
    ):
        yield Rig(app, server, proxy, calls)


async def _page(browser: Any, rig: Rig, issue: Any) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    await page.expose_function("issueToken", issue)
    await page.goto(rig.url(1_100_000) + f"&auth=1&pace={PACE}")
    return page


async def test_the_connection_outlives_its_tokens_by_refreshing_in_band(
    auth_rig: Rig, browser: Any
) -> None:
    issued: list[float] = []

    def issue(_dropped: bool) -> str:
        issued.append(time.monotonic())
        return token()

    page = await _page(browser, auth_rig, issue)
    log = await _finish(page)
    asked = len(issued)
    # the connection stays open after the answer: its refreshes go on, so counts are
    # compared between two snapshots of the page's log, and by the events' order
    later = [e["kind"] for e in (await page.evaluate("window.log"))["conn"]]
    kinds = [e["kind"] for e in log["conn"]]
    assert kinds.count("refreshed") >= 2, kinds  # the answer lasts over two lifetimes
    # each notice is answered by one refresh before the next notice comes
    notices = [k for k in later if k in ("auth_expiring", "refreshed")]
    assert notices == (["auth_expiring", "refreshed"] * len(notices))[: len(notices)], notices
    assert "refresh_failed" not in later, log["conn"]
    assert not disconnects(log), "refreshed in-band: never reconnected"
    # a token for the connect, then one per notice (one may be asked still)
    assert 1 + kinds.count("refreshed") <= asked <= 1 + later.count("auth_expiring"), (asked, later)
    await assert_exact(auth_rig, log)


async def test_refused_refreshes_end_in_4010_a_fresh_token_and_an_exact_resume(
    auth_rig: Rig, browser: Any
) -> None:
    issued: list[bool] = []

    def issue(dropped: bool) -> str:
        # the first connection's refreshes get expired tokens (refused: auth_failed,
        # asked again up to 3 times), so it expires: 4010; the reconnect gets a good
        # one. (How many refreshes fit before the expiry depends on the machine's
        # load, so the page says when it has lost its connection.)
        bad = bool(issued) and not dropped
        issued.append(bad)
        return token(expired=bad)

    page = await _page(browser, auth_rig, issue)
    log = await _finish(page)
    kinds = [e["kind"] for e in log["conn"]]
    refused = kinds.count("refresh_failed")
    # how many refusals come back before the expiry depends on the machine's load
    # (the first refresh may still be on its way at 4010): counted against the tokens asked
    assert refused <= 3, kinds
    lost = disconnects(log)
    assert lost and lost[0]["code"] == 4010, lost
    assert kinds.count("connected") >= 2
    # the connect's token is good, the refreshes' are bad, the reconnect's good again;
    # the last bad one may have been asked for while the connection was expiring (its
    # refusal never came: no refresh_failed for it)
    assert issued[0] is False and False in issued[1:], issued
    bad = issued[1:].index(False)
    assert all(issued[1 : 1 + bad]) and bad >= 1 and refused <= bad <= min(refused + 1, 3), (
        refused,
        issued,
    )
    await assert_exact(auth_rig, log, runs=1)
