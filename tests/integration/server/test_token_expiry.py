"""The ``auth_expiring`` notice is never lost to the expiry close (docs/reference/protocol.md
§18), even when the server's loop stalls past both: a real server and a real socket; the
stall is the test's own (it blocks the loop it shares with the server until both
timers are due), so no timing margin decides the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.integration.server.jwt_kit import AUDIENCE, ISSUER, SigningKey, ec_key
from tests.integration.server.wire import Closed, Wire
from unbroken.protocol.client_session import AuthExpiringOut, ClientSession
from unbroken.protocol.frames import CAP_REFRESH
from unbroken.server import Unbroken
from unbroken.server.auth import JWTAuth
from unbroken.server.connection import Connection
from unbroken.store.base import ReadBatch
from unbroken.store.memory import MemoryStore
from unbroken.testing import RunningServer, serve

pytestmark = pytest.mark.timeout(60)

#: long enough that a loaded machine's hello arrives before the expiry (else 4002)
LIFETIME = 2.0

#: how far the loop's clock may trail the wall clock across the stall (milliseconds):
#: the notice's ``in_ms`` comes from the wall clock, the stall ends by the loop's; far
#: below the notice's normal lead (20 % of LIFETIME), so a notice sent on time fails
SKEW_MS = 100


class PumpedStore(MemoryStore):
    """The memory log with no read that answers at once: every send goes through the
    connection's sender task (as on Redis), the path where a queued frame waited for
    a task that the close cancelled. Its reads (a coroutine, as on Redis) still work."""

    read_nowait = None  # the connection sees a store that must be awaited

    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        return MemoryStore.read_nowait(self, stream, after, max_bytes)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return ec_key("k1")


@pytest.fixture(params=["memory", "pumped"])
async def server(
    request: pytest.FixtureRequest, key: SigningKey
) -> AsyncIterator[tuple[RunningServer, Unbroken]]:
    auth = JWTAuth(key=key.public_pem(), algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)
    store = MemoryStore() if request.param == "memory" else PumpedStore()
    app = Unbroken(auth=auth, store=store, shutdown_grace=1.0)
    async with serve(app) as srv:
        yield srv, app


async def opened(
    server: tuple[RunningServer, Unbroken], key: SigningKey
) -> tuple[Wire, Connection]:
    srv, app = server
    w = await Wire.open(
        srv.url, token=key.token(lifetime=LIFETIME), session=ClientSession(caps=(CAP_REFRESH,))
    )
    (conn,) = app.connections
    return w, conn


async def seen_until_close(w: Wire) -> tuple[list[object], int | None]:
    seen: list[object] = []
    with pytest.raises(Closed) as closed:
        await w.until(lambda o: seen.append(o) or False, 10)
    return seen, closed.value.code


async def test_a_loop_stalled_past_notice_and_expiry_still_sends_the_notice_first(
    server: tuple[RunningServer, Unbroken], key: SigningKey
) -> None:
    w, conn = await opened(server, key)
    notice, expiry = conn._notice_handle, conn._expiry_handle
    assert notice is not None and expiry is not None
    assert notice.when() < expiry.when()
    # the stall: nothing on this loop (server or client) runs until both timers are
    # due, so the loop's next turn runs the notice's and the expiry's callbacks back
    # to back (a GC pause or a blocking call in an agent, on a real server)
    loop = asyncio.get_running_loop()
    while loop.time() < expiry.when():
        time.sleep(0.01)  # noqa: ASYNC251 - blocking on purpose: this is the stall
    seen, code = await seen_until_close(w)
    assert code == 4010
    notices = [o for o in seen if isinstance(o, AuthExpiringOut)]
    assert len(notices) == 1, seen
    # sent late, with what was left then: nothing, by the wall clock the server reads
    # the expiry with; the stall ran to the expiry by the loop's clock, which may lag
    # the wall clock by a little (an NTP slew, rounding), so allow that little
    assert 0 <= notices[0].in_ms <= SKEW_MS, notices[0]


async def test_an_expiry_that_runs_before_its_pending_notice_sends_the_notice_first(
    server: tuple[RunningServer, Unbroken], key: SigningKey
) -> None:
    # two timers due at the same instant run in either order: here the expiry's first
    w, conn = await opened(server, key)
    expiry = conn._expiry_handle
    assert expiry is not None and conn._notice_handle is not None
    expiry.cancel()
    conn._expired()
    seen, code = await seen_until_close(w)
    assert code == 4010
    assert sum(isinstance(o, AuthExpiringOut) for o in seen) == 1, seen


async def test_the_pumped_store_reads_through_its_coroutine() -> None:
    # the fixture's store must still read (a connection on it reads with `await read`)
    store = PumpedStore()
    made = await store.create("alice", "r1", 0.0)
    assert await store.read(made.stream, 0, 1 << 16) is None  # nothing appended yet
    assert await store.read("no-such-stream", 0, 1 << 16) is None
