"""Two nodes start the same request at once (a client that sent its start again to
another node): one stream, one run. A real redis-server; node A is held between its
claim of the req and writing the stream's meta."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from unbroken import BackoffPolicy
from unbroken.client import Client
from unbroken.errors import StoreUnavailable
from unbroken.server.agent import anonymous_principal
from unbroken.store.base import Created
from unbroken.store.redis import RedisStore

from ...waiting import until
from .conftest import ROOT, Node, RedisCluster, RedisServer, expected_text, full_digest

pytestmark = pytest.mark.timeout(60)
FAST = BackoffPolicy(base=0.02, cap=0.2, max_attempts=1000, deadline=60)


def hold_the_meta(store: RedisStore, claimed: asyncio.Event, go: asyncio.Event) -> None:
    """``store``'s first pipeline that writes a stream's meta waits for ``go`` (after
    setting ``claimed``): its create has claimed the req and not yet made the stream."""
    real_pipeline = store._r.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            writes_meta = any(c[0][0] == "HSET" for c in pipe.command_stack)
            if writes_meta and not claimed.is_set():
                claimed.set()
                await go.wait()
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    store._r.pipeline = pipeline


async def test_a_start_made_on_two_nodes_at_once_makes_one_stream(
    redis_server: RedisServer,
) -> None:
    """Before: node B found A's claim without its meta, took it for a stream that
    expired, deleted it and made a second stream of the same req (two runs)."""
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix)
    b = RedisStore(redis_server.url, prefix=prefix)
    claimed, go = asyncio.Event(), asyncio.Event()
    hold_the_meta(a, claimed, go)
    try:
        creating = asyncio.create_task(a.create("o", "req-twice", 0.0))
        await asyncio.wait_for(claimed.wait(), 10)
        with pytest.raises(StoreUnavailable, match="being created"):
            await b.create("o", "req-twice", 0.0)  # its client starts it again
        go.set()
        made = await asyncio.wait_for(creating, 10)
        assert made.created
        again = await b.create("o", "req-twice", 0.0)
        assert (again.stream, again.created) == (made.stream, False)
        found = await b.find("o", "req-twice")
        assert found is not None and found.stream == made.stream
    finally:
        go.set()
        await a.close()
        await b.close()


async def test_a_claim_left_by_a_creator_that_died_is_dropped_once_old(
    redis_server: RedisServer,
) -> None:
    """A claim with no stream, older than the creators' longest wait, was left by a
    node that died between the claim and the meta: a start makes the stream afresh
    (a younger one is a create under way: the start is told to come back)."""
    store = RedisStore(redis_server.url, prefix=f"t{secrets.token_hex(4)}", outage_timeout=1.0)
    try:
        rkey = store._req_key("o", "req-ghost")
        keep = store._running_keep_ms()
        await store._r.set(rkey, b"ghost-young", px=keep - 1000)  # claimed 1 s ago
        with pytest.raises(StoreUnavailable):
            await store.create("o", "req-ghost", 0.0)
        await store._r.set(rkey, b"ghost-old", px=keep - 7000)  # 7 s > 1 s + 5 s
        made = await store.create("o", "req-ghost", 0.0)
        assert made.created and made.stream != "ghost-old"
        assert await store._r.get(rkey) == made.stream.encode()
    finally:
        await store.close()


class Creator:
    """:mod:`.creator` in a process of its own, held between its claim and its meta."""

    def __init__(
        self, url: str, prefix: str, owner: str, scope: str, req: str, lease: float
    ) -> None:
        args = [url, prefix, owner, scope, req, str(lease)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.redis.creator", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> str:
        assert self.proc.stdout is not None
        got = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 20)
        return str(got).strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)


async def start_again(store: RedisStore, owner: str, req: str) -> Created:
    """Create ``req`` as a client does: started again while it is told ``unavailable``
    (a create under way), within a deadline."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await store.create(owner, req, 0.0)
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the claim never lapsed"
            await asyncio.sleep(0.05)


async def test_a_start_after_its_creator_was_killed_mid_create_completes_promptly_and_exact(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    """A creator process killed -9 between its claim of the req and the stream's meta:
    the client's start of the same req on another node completes, exact, once the
    dead creator's claim lease runs out (before: refused ``unavailable`` for
    ``outage_timeout`` + 5 s, 35 s by default)."""
    prefix = f"t{secrets.token_hex(4)}"
    lease = 1.0
    b = Node(redis_server.url, prefix=prefix)
    nodes.append(b)
    async with Client([b.url], policy=FAST) as client:
        key = client._session.anon
        assert key is not None
        principal, _ = anonymous_principal(key)
        a = Creator(redis_server.url, prefix, principal.id, principal.scope, "req-dead", lease)
        try:
            assert await a.line() == "claimed"
            a.stop()  # kill -9 mid-create
            st = await client.start("count", {"n": 300}, req="req-dead")
            answer = await st.wait()
        finally:
            a.stop()
    assert answer.complete and answer.text == expected_text(300)
    assert answer.digest == full_digest(st.id, st.epoch, 300)
    # answered by taking over the dead creator's lapsed claim (before: by dropping it
    # as stale once outage_timeout + 5 = 35 s old), and one stream, one run
    said = b.log_path.read_text()
    assert said.count("create took over a lapsed claim") == 1, said[-2000:]
    store = RedisStore(redis_server.url, prefix=prefix)
    try:
        assert await store._r.keys(f"{prefix}:{{*}}:m") == [store._meta_key(st.id).encode()]
    finally:
        await store.close()


async def test_a_live_creator_keeps_its_claim_past_its_lease(redis_server: RedisServer) -> None:
    """A creator held between its claim and its meta for longer than the claim's
    lease renews it: another node's start of the req is told to come back, and then
    gets the creator's stream (one stream, one run)."""
    prefix = f"t{secrets.token_hex(4)}"
    lease = 2.0  # the claim lapses 1.6 s after a renewal; renewed every 0.4 s
    a = RedisStore(redis_server.url, prefix=prefix, lease=lease)
    b = RedisStore(redis_server.url, prefix=prefix, lease=lease)
    claimed, go = asyncio.Event(), asyncio.Event()
    hold_the_meta(a, claimed, go)
    try:
        creating = asyncio.create_task(a.create("o", "req-slow", 0.0))
        await asyncio.wait_for(claimed.wait(), 10)
        # held past the claim's first deadline (Redis's clock): a slow creator
        rkey = b._req_key("o", "req-slow")
        first = int((await b._r.get(rkey)).rsplit(b":", 1)[1])

        async def past_first() -> bool:
            sec, usec = await b._r.time()
            return bool(sec * 1000 + usec // 1000 > first)

        await until(past_first, limit=30, every=0.05)
        with pytest.raises(StoreUnavailable, match="being created"):
            await b.create("o", "req-slow", 0.0)
        # the key itself lives as long as a stream's: a node of an older release
        # (which judges a claim without a stream by its age) sees a young claim
        left = await b._r.pttl(rkey)
        assert 0 < b._running_keep_ms() - left < (b.outage_timeout + 5.0) * 1000
        go.set()
        made = await asyncio.wait_for(creating, 10)
        assert made.created
        again = await b.create("o", "req-slow", 0.0)
        assert (again.stream, again.created) == (made.stream, False)
    finally:
        go.set()
        await a.close()
        await b.close()


async def test_a_creator_stopped_past_its_claim_lease_does_not_run_the_agent_again(
    redis_server: RedisServer,
) -> None:
    """A creator process stopped (SIGSTOP) between its claim and its meta past the
    claim's lease: another node creates the stream; continued, the first creator finds
    its claim taken and makes no stream of its own (the agent runs once)."""
    prefix = f"t{secrets.token_hex(4)}"
    lease = 1.0
    b = RedisStore(redis_server.url, prefix=prefix, lease=lease)
    a = Creator(redis_server.url, prefix, "o", "", "req-zombie", lease)
    try:
        assert await a.line() == "claimed"
        os.kill(a.proc.pid, signal.SIGSTOP)
        made = await start_again(b, "o", "req-zombie")  # once A's claim lapsed
        assert made.created
        os.kill(a.proc.pid, signal.SIGCONT)
        assert a.proc.stdin is not None
        a.proc.stdin.write("go\n")
        a.proc.stdin.flush()
        said = await a.line()
        assert said == f"created {made.stream} 0", said
        assert a.proc.wait(15) == 0
        keys = await b._r.keys(f"{prefix}:{{*}}:m")
        assert keys == [b._meta_key(made.stream).encode()]  # the loser's meta removed
        found = await b.find("o", "req-zombie")
        assert found is not None and found.stream == made.stream
    finally:
        a.stop()
        await b.close()


async def test_a_create_stuck_past_its_longest_wait_stops_holding_its_claim(
    redis_server: RedisServer,
) -> None:
    """A create stuck between its claim and its meta (a bad pooled connection) for
    longer than a create ever waits on Redis (``outage_timeout`` + 5 s): its claim is
    no longer renewed, another node's start takes the req over, and the stuck create,
    going on, gets that stream (before: renewed as long as the create lived, the
    req refused ``unavailable`` for up to a stream's keep, 650 s by default)."""
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix, lease=0.5, outage_timeout=0.1)
    b = RedisStore(redis_server.url, prefix=prefix, lease=0.5)
    claimed, go = asyncio.Event(), asyncio.Event()
    hold_the_meta(a, claimed, go)
    try:
        creating = asyncio.create_task(a.create("o", "req-stuck", 0.0))
        await asyncio.wait_for(claimed.wait(), 10)
        made = await start_again(b, "o", "req-stuck")  # once A stopped renewing
        assert made.created
        go.set()
        got = await asyncio.wait_for(creating, 10)
        assert (got.stream, got.created) == (made.stream, False)
        keys = await b._r.keys(f"{prefix}:{{*}}:m")
        assert keys == [b._meta_key(made.stream).encode()]  # A's own stream removed
    finally:
        go.set()
        await a.close()
        await b.close()


async def test_a_create_hanging_on_a_stopped_master_never_delays_other_masters_leases(
    redis_cluster: RedisCluster,
) -> None:
    """A create whose req lives on a master that does not answer (SIGSTOP): its claim's
    renewals hang, and a stream on another master keeps being renewed every tick
    (before: each lease tick first waited for the claims' renewals, and the stream's
    lease lapsed: another node would end it ``failed: producer_lost``)."""
    prefix = f"c{secrets.token_hex(4)}"
    store = RedisStore(redis_cluster.url, cluster=True, prefix=prefix, lease=2.0)
    stopped = redis_cluster.servers[0]
    assert stopped.proc is not None
    try:
        for i in range(60):  # (2/3)^60: never by chance
            made = await store.create("o", f"ok{i}", time.time())
            healthy = redis_cluster.owner(key_slot(store._meta_key(made.stream).encode()))
            if healthy != 0:
                break
        assert healthy != 0
        req = next(
            f"r{j}"
            for j in range(1000)
            if redis_cluster.owner(key_slot(store._req_key("o", f"r{j}").encode())) == 0
        )
        probe = aioredis.Redis(port=redis_cluster.servers[healthy].port)
        meta = store._meta_key(made.stream)
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        creating = asyncio.create_task(store.create("o", req, time.time()))
        try:
            rkey = store._req_key("o", req)
            await until(lambda: any(k == rkey for k, _ in store._claiming))
            # three renewals of the healthy stream's lease while the claim's hang
            for _ in range(3):
                lease = int(await probe.hget(meta, "lease") or 0)

                async def renewed(since: int = lease) -> bool:
                    return int(await probe.hget(meta, "lease") or 0) > since

                await until(renewed, limit=10, every=0.02)
            assert not creating.done()
        finally:
            os.kill(stopped.proc.pid, signal.SIGCONT)
            creating.cancel()
            await probe.aclose()
    finally:
        await store.close()
