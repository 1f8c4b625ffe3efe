"""A resume pending through a Redis outage longer than the client's ``request_timeout``
(a real redis-server this test pauses or stops by pid): while the log does not answer
(paused: no error, only silence; stopped: refused) the server answers ``error
unavailable``, the client keeps resuming within its policy and the answer ends exact
once Redis is back; past the policy it fails with ``LogUnavailable``, never
``RequestTimeout``. (tests/integration/server/test_store_outage.py: the same on a
store that refuses at once.)"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from unbroken import BackoffPolicy, Cursor, LogUnavailable
from unbroken.client import Client, Stream
from unbroken.server import Output, Request, Unbroken
from unbroken.store.redis import RedisStore
from unbroken.testing import RunningServer, serve

from .conftest import RedisServer

pytestmark = pytest.mark.timeout(30)
TIMEOUT = 10.0
#: the client gives the server this long to answer a request: each outage is longer.
#: Told ``unavailable`` twice takes >= 3 s (the server's 1 s bound, the 1 s
#: retry_after, the bound again), longer than this: a client whose clock did not
#: restart on each resend would time out first. Each round (sent, told within the
#: 1 s bound) has 1.7 s to spare on a loaded machine (it had 0.5 s at 1.5 s).
ANSWER_WITHIN = 2.7
POLICY = BackoffPolicy(base=0.05, cap=0.3, max_attempts=60, deadline=30)


@dataclass
class Served:
    app: Unbroken
    srv: RunningServer
    gate: asyncio.Event


@asynccontextmanager
async def served(redis: RedisServer, heartbeat: float = 0.4) -> AsyncIterator[Served]:
    """An app on a RedisStore of ``redis`` (its default ``outage_timeout``: 30 s)."""
    store = RedisStore(redis.url, prefix=f"t{secrets.token_hex(4)}")
    app = Unbroken(store, allow_anonymous=True, shutdown_grace=1.0, heartbeat=heartbeat)
    gate = asyncio.Event()

    @app.agent("gated")
    async def gated(req: Request, out: Output) -> None:
        await out.text("started ")
        await out.flush()
        await gate.wait()
        await out.text("done")

    try:
        async with serve(app) as srv:
            yield Served(app, srv, gate)
            gate.set()
    finally:
        await store.close()


async def completed_cursor(s: Served) -> Cursor:
    """A cursor after the first text of an answer that then completes in the log."""
    async with Client(s.srv.url) as first:
        st = await first.start("gated")
        async for _ in st:
            break
        cursor = st.cursor
        assert cursor is not None
        s.gate.set()
        await asyncio.wait_for(st.wait(), TIMEOUT)
    return cursor


async def unavailable_for(client: Client, since: float, span: float) -> int:
    """Wait until the client has been told ``unavailable`` for ``span`` seconds
    after ``since`` (monotonic); how many times it was told."""
    seen = [e for e in client.history if e.kind == "unavailable"]
    if not (seen and seen[-1].at - since > span):
        async with asyncio.timeout(TIMEOUT):
            async for e in client.connection_events():
                if e.kind == "unavailable":
                    seen.append(e)
                    if e.at - since > span:
                        break
    return len(seen)


async def text_of(resuming: asyncio.Task[Stream]) -> str:
    st = await asyncio.wait_for(resuming, TIMEOUT)
    async for _ in st:
        pass
    answer = await asyncio.wait_for(st.wait(), TIMEOUT)
    assert answer.status == "completed"
    return answer.text


def connections(client: Client) -> int:
    return sum(1 for e in client.history if e.kind == "connected")


async def test_a_resume_pending_while_redis_is_paused_ends_exact_once_it_is_back(
    private_redis: RedisServer,
) -> None:
    """A paused Redis answers nothing at all (no error: the store would wait for it):
    the server answers ``unavailable`` without waiting for it; the pending resume is
    not a ``RequestTimeout`` however long it lasts, and the answer ends exact."""
    private_redis.start()
    assert private_redis.proc is not None
    async with served(private_redis) as s:
        cursor = await completed_cursor(s)
        async with Client([s.srv.url], policy=POLICY, request_timeout=ANSWER_WITHIN) as client:
            os.kill(private_redis.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                resuming = asyncio.create_task(client.resume(cursor))
                told = await unavailable_for(client, t0, ANSWER_WITHIN)
                assert not resuming.done() and told >= 2
            finally:
                os.kill(private_redis.proc.pid, signal.SIGCONT)
            assert await text_of(resuming) == "started done"
            assert connections(client) == 1  # the connection never dropped


async def test_several_resumes_on_one_connection_wait_out_a_paused_redis_beside_it(
    private_redis: RedisServer,
) -> None:
    """Three streams resumed on one connection while Redis is paused, heartbeat 0.4 s:
    their lookups wait beside the connection's reader (its pings are answered), so
    each is told ``unavailable`` and the connection never falls silent (no 4004)."""
    private_redis.start()
    assert private_redis.proc is not None
    async with served(private_redis, heartbeat=0.4) as s:
        cursors = [await completed_cursor(s) for _ in range(3)]
        async with Client([s.srv.url], policy=POLICY) as client:
            os.kill(private_redis.proc.pid, signal.SIGSTOP)
            try:
                resuming = [asyncio.create_task(client.resume(c)) for c in cursors]
                told: set[str] = set()
                async with asyncio.timeout(TIMEOUT):
                    async for e in client.connection_events():
                        if e.kind == "unavailable":
                            told.add(e.stream)
                            if len(told) == 3:
                                break
                assert not any(r.done() for r in resuming)
            finally:
                os.kill(private_redis.proc.pid, signal.SIGCONT)
            for r in resuming:
                assert (await text_of(r)).endswith("done")
            assert connections(client) == 1  # never silent: the connection never dropped


async def test_a_resume_pending_while_redis_restarts_ends_exact_once_it_is_back(
    private_redis: RedisServer,
) -> None:
    """A stopped Redis refuses connections (the store retries them for its
    ``outage_timeout``, 30 s): the same, and it comes back with its data (AOF)."""
    private_redis.aof = True
    private_redis.start()
    async with served(private_redis) as s:
        cursor = await completed_cursor(s)
        async with Client([s.srv.url], policy=POLICY, request_timeout=ANSWER_WITHIN) as client:
            private_redis.stop()
            t0 = time.monotonic()
            resuming = asyncio.create_task(client.resume(cursor))
            told = await unavailable_for(client, t0, ANSWER_WITHIN)
            assert not resuming.done() and told >= 2
            private_redis.start()  # the same port, its data from the AOF
            assert await text_of(resuming) == "started done"
            assert connections(client) == 1


@pytest.mark.full  # 7 s; default tier: LogUnavailable past the policy on a refusing
# store (server/test_store_outage.py), a pending resume outliving request_timeout here
async def test_past_the_policy_a_pending_resume_fails_with_log_unavailable(
    private_redis: RedisServer,
) -> None:
    """The policy runs out before Redis is back: ``LogUnavailable`` with the
    attempts and the server's cause (not ``RequestTimeout``); the cursor is resumed
    exact later."""
    private_redis.start()
    assert private_redis.proc is not None
    short = BackoffPolicy(base=0.05, cap=0.3, max_attempts=3, deadline=30)
    async with served(private_redis) as s:
        cursor = await completed_cursor(s)
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            async with Client([s.srv.url], policy=short, request_timeout=ANSWER_WITHIN) as c:
                with pytest.raises(LogUnavailable) as caught:
                    await asyncio.wait_for(c.resume(cursor), TIMEOUT)
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        err = caught.value
        assert err.stream == cursor.stream and err.attempts == 3
        assert err.elapsed > ANSWER_WITHIN and "unreachable" in str(err)
        async with Client([s.srv.url], policy=POLICY) as later:
            assert await text_of(asyncio.create_task(later.resume(cursor))) == "started done"


async def test_a_start_sent_while_redis_is_paused_runs_once_it_is_back(
    private_redis: RedisServer,
) -> None:
    """A start whose create waits for a paused Redis is answered ``unavailable`` within
    its bound (not after the store's 30 s ``outage_timeout``); the client sends it again
    meanwhile (no ``RequestTimeout``); once Redis is back the stream is created once,
    the agent runs once, and the answer completes on the same connection."""
    private_redis.start()
    assert private_redis.proc is not None
    async with served(private_redis) as s:
        runs: list[str] = []
        agent, _ = s.app.hub.agents["gated"]

        async def counted(req: Request, out: Output) -> None:
            runs.append(req.req)
            await agent(req, out)

        s.app.hub.agents["gated"] = (counted, None)
        async with Client([s.srv.url], policy=POLICY, request_timeout=ANSWER_WITHIN) as client:
            os.kill(private_redis.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                starting = asyncio.create_task(client.start("gated"))
                told = await unavailable_for(client, t0, ANSWER_WITHIN)
                assert not starting.done() and told >= 2
            finally:
                os.kill(private_redis.proc.pid, signal.SIGCONT)
            s.gate.set()
            assert await text_of(starting) == "started done"
            assert connections(client) == 1
        assert len(runs) == 1
