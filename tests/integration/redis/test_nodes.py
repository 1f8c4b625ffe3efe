"""Several unbroken nodes (processes) on one real redis-server: faults of nodes and of Redis."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time

import pytest

from unbroken import BackoffPolicy, StreamFailed, StreamGone
from unbroken.client import Client, Stream
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Kind
from unbroken.store.redis import RedisStore

from .conftest import Node, RedisServer, expected_text, full_digest, until_seq

pytestmark = pytest.mark.timeout(90)
FAST = BackoffPolicy(base=0.02, cap=0.2, max_attempts=100, deadline=60)


async def handoff(a: Node, b: Node, n: int, pause: float) -> tuple[Client, Stream]:
    """Start ``count`` on node ``a``, then follow it from node ``b`` (then ``a``)."""
    async with Client([a.url], policy=FAST) as starter:
        st0 = await starter.start("count", {"n": n, "every": 50, "pause": pause})
        await until_seq(st0, 1)
        cursor = st0.cursor
    assert cursor is not None and cursor.seq == 1
    client = Client([b.url, a.url], policy=FAST)
    await client.__aenter__()
    st = await client.resume(cursor)
    return client, st


async def test_killing_the_reading_node_resumes_through_the_producing_node_exactly(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    prefix = f"n{secrets.token_hex(4)}"
    a, b = Node(redis_server.url, prefix=prefix), Node(redis_server.url, prefix=prefix)
    nodes += [a, b]
    n = 6000
    client, st = await handoff(a, b, n, 0.02)
    store = RedisStore(redis_server.url, prefix=prefix)
    try:
        await until_seq(st, 1000)
        # the producer is held still across the kill (a few ms, far inside its lease):
        # the log's head then is the most the client can have had, so the kill is
        # provably mid-stream, whatever the machine's speed
        a.signal(signal.SIGSTOP)
        try:
            meta = await store.meta(st.id)
            assert meta is not None and meta.status == "running" and meta.head < n, meta
            at_kill = len(client.history)
            b.signal(signal.SIGKILL)
        finally:
            a.signal(signal.SIGCONT)
        async for _ in st:
            pass
        answer = await st.wait()
        assert answer.status == "completed"
        assert answer.text == expected_text(n)
        assert answer.digest == full_digest(st.id, st.epoch, n)
        # the client lost node b with a partial answer and took the rest through a
        after = client.history[at_kill:]
        assert any(e.kind == "disconnected" for e in after), after
        assert any(e.kind == "connected" and e.url == a.url for e in after), after
        resumed = [e for e in after if e.kind == "resumed" and e.stream == st.id]
        assert resumed and resumed[0].from_seq <= meta.head < n, (resumed, meta.head)
    finally:
        await store.close()
        await client.__aexit__(None, None, None)


async def test_killing_the_producing_node_ends_the_stream_producer_lost_within_the_lease(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    prefix = f"n{secrets.token_hex(4)}"
    lease = 1.0
    a = Node(redis_server.url, prefix=prefix, lease=lease)
    b = Node(redis_server.url, prefix=prefix, lease=lease)
    nodes += [a, b]
    client, st = await handoff(a, b, 100000, 0.02)
    try:
        await until_seq(st, 500)
        a.signal(signal.SIGKILL)
        killed = time.monotonic()
        async for _ in st:  # ends with the end event
            pass
        took = time.monotonic() - killed
        with pytest.raises(StreamFailed) as info:
            await st.wait()
        assert info.value.status == "failed" and info.value.error == "producer_lost"
        # valid 0.8 x lease after the last renewal, checked every lease / 5: within the
        # lease on a quiet machine (how soon is a figure for benchmarks, not a bound here:
        # a loaded machine runs the watcher late). The bound tells the lease from the
        # slower ways a stream could end (the outage timeout, 30 s) or hang.
        assert took < 5 * lease, took
    finally:
        await client.__aexit__(None, None, None)


async def test_sigterm_on_the_producing_node_drains_the_run_and_the_client_is_exact(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    prefix = f"n{secrets.token_hex(4)}"
    a, b = Node(redis_server.url, prefix=prefix), Node(redis_server.url, prefix=prefix)
    nodes += [a, b]
    n = 4000
    async with Client([a.url, b.url], policy=FAST) as client:
        st = await client.start("count", {"n": n, "every": 50, "pause": 0.02})
        await until_seq(st, 300)
        a.signal(signal.SIGTERM)
        async for _ in st:
            pass
        answer = await st.wait()
    assert answer.complete and answer.text == expected_text(n)
    assert answer.digest == full_digest(st.id, st.epoch, n)
    assert a.proc.wait(30) == 0 or a.proc.returncode is not None


async def test_two_producers_after_failover_exactly_one_wins(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    """Node A is frozen (a zombie) past its lease: B ends the stream; when A wakes
    its appends are refused, so the log has no event after the end."""
    prefix = f"n{secrets.token_hex(4)}"
    lease = 1.0
    a = Node(redis_server.url, prefix=prefix, lease=lease)
    b = Node(redis_server.url, prefix=prefix, lease=lease)
    nodes += [a, b]
    client, st = await handoff(a, b, 100000, 0.01)
    try:
        await until_seq(st, 300)
        a.signal(signal.SIGSTOP)
        async for _ in st:
            pass
        with pytest.raises(StreamFailed) as info:
            await st.wait()
        assert info.value.error == "producer_lost"
        a.signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while "run fenced out" not in a.output():  # wait on the zombie's own log
            assert time.monotonic() < deadline, a.output()
            await asyncio.sleep(0.05)
    finally:
        await client.__aexit__(None, None, None)
    store = RedisStore(redis_server.url, prefix=prefix)
    try:
        _, events = await store.read_all(st.id)
        meta = await store.meta(st.id)
    finally:
        await store.close()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events].count(Kind.END) == 1 and events[-1].kind is Kind.END
    assert meta is not None and meta.head == len(events) and meta.error == "producer_lost"
    assert meta.digest == chain(st.id, st.epoch, events)[-1]


async def test_redis_restarted_with_aof_mid_stream_keeps_streams_exact(
    private_redis: RedisServer, nodes: list[Node]
) -> None:
    private_redis.aof = True
    private_redis.start()
    a = Node(private_redis.url)
    nodes.append(a)
    n = 5000
    async with Client([a.url], policy=FAST) as client:
        st = await client.start("count", {"n": n, "every": 50, "pause": 0.02})
        await until_seq(st, 500)
        private_redis.stop(signal.SIGKILL)  # appendfsync always: nothing acknowledged is lost
        private_redis.start()
        async for _ in st:
            pass
        answer = await st.wait()
    assert answer.complete and answer.text == expected_text(n)
    assert answer.digest == full_digest(st.id, st.epoch, n)


async def test_redis_that_lost_its_data_answers_gone_epoch_and_new_streams_work(
    private_redis: RedisServer, nodes: list[Node]
) -> None:
    private_redis.start()
    a = Node(private_redis.url)
    nodes.append(a)
    async with Client([a.url], policy=FAST) as client:
        st = await client.start("count", {"n": 200})
        async for _ in st:
            pass
        cursor = st.cursor
        assert cursor is not None
        private_redis.stop(signal.SIGKILL)  # no persistence: everything is gone
        private_redis.start()
    async with Client([a.url], policy=FAST) as client:
        with pytest.raises(StreamGone) as info:
            await client.resume(cursor)
        assert info.value.reason == "epoch"
        st2 = await client.start("count", {"n": 300})
        answer = await st2.wait()
        assert answer.complete and answer.text == expected_text(300)
        assert st2.epoch != cursor.epoch
