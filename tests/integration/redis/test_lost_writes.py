"""A Redis that lost recent writes (restarted from an older RDB snapshot, its default
persistence, or failed over to a lagging replica) must not hang anyone: the stream is
ended in the store and every reader learns, within a bounded time, that the log diverged."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from unbroken import BackoffPolicy, StreamGone
from unbroken.client import Client, Stream
from unbroken.errors import LogDiverged, LogFull, StaleProducer, StreamTooLarge
from unbroken.protocol.events import Kind
from unbroken.server import Output, Principal, Request
from unbroken.server.hub import Hub
from unbroken.server.producer import Producer
from unbroken.store.base import Retention, StreamMeta
from unbroken.store.redis import RedisStore

from .conftest import Node, RedisServer, until_seq

pytestmark = pytest.mark.timeout(90)
FAST = BackoffPolicy(base=0.02, cap=0.2, max_attempts=100, deadline=60)
#: readers must hear of the loss within this long after Redis is back
BOUND = 10.0


async def gone_within(st: Stream, limit: float) -> tuple[StreamGone, float]:
    """Read ``st`` until it raises :class:`StreamGone`; returns it and the time taken."""
    t0 = time.monotonic()
    with pytest.raises(StreamGone) as info:
        async with asyncio.timeout(limit):
            async for _ in st:
                pass
    return info.value, time.monotonic() - t0


async def test_redis_back_from_an_older_snapshot_ends_the_stream_and_readers_get_gone(
    private_redis: RedisServer, nodes: list[Node]
) -> None:
    private_redis.start()
    prefix = f"n{secrets.token_hex(4)}"
    # a lease the snapshot still holds when Redis is back: the producing node's next
    # append finds the lost head first (diverged). The snapshot keeps the lease's
    # expiry as it was at SAVE (at least 0.6 x lease ahead, renewals being every
    # lease / 5 for 0.8 x lease), and SAVE → restart took over 1.8 s on a loaded
    # machine: with 3 s the reader's node could find it lapsed and end the stream
    # producer_lost first. 10 s leaves 6 s; the diverged end does not wait on it.
    a = Node(private_redis.url, prefix=prefix, lease=10.0)
    b = Node(private_redis.url, prefix=prefix, lease=10.0)
    nodes += [a, b]
    r = aioredis.Redis.from_url(private_redis.url)
    on_a = Client([a.url], policy=FAST)
    on_b = Client([b.url], policy=FAST)
    try:
        await on_a.__aenter__()
        await on_b.__aenter__()
        st = await on_a.start("count", {"n": 1_000_000, "every": 50, "pause": 0.02})
        await until_seq(st, 300)
        assert st.cursor is not None
        st_b = await on_b.resume(st.cursor)  # a reader on the other node
        await until_seq(st_b, 300)
        await r.save()  # the snapshot Redis will come back with
        await until_seq(st, 1500)  # writes after the snapshot: lost below
        await until_seq(st_b, 1500)
        private_redis.stop(signal.SIGKILL)
        private_redis.start()  # loads dump.rdb: every write after SAVE is gone
        back = time.monotonic()
        got_a, took_a = await gone_within(st, BOUND)
        got_b, took_b = await gone_within(st_b, BOUND)
        took_b = time.monotonic() - back
        cursor = st.cursor
        assert cursor is not None and cursor.seq >= 1500
    finally:
        await on_a.__aexit__(None, None, None)
        await on_b.__aexit__(None, None, None)
    print(
        f"gone({got_a.reason}) on the producing node after {took_a:.2f}s, "
        f"gone({got_b.reason}) on the other after {took_b:.2f}s"
    )
    # the connection says why (before: nothing at all, for minutes)
    for got in (got_a, got_b):
        assert (got.stream, got.reason) == (cursor.stream, "diverged"), got
    # a fresh resume from where the client was says the log diverged, on either node
    for node in (a, b):
        async with Client([node.url], policy=FAST) as fresh:
            with pytest.raises(StreamGone) as info:
                await fresh.resume(cursor)
        assert info.value.reason == "diverged"
    # the stream is ended in the store, not left running with its lease renewed forever
    store = RedisStore(private_redis.url, prefix=prefix)
    try:
        meta = await store.meta(cursor.stream)
        _, events = await store.read_all(cursor.stream)
    finally:
        await store.close()
        await r.aclose()
    assert meta is not None and (meta.status, meta.error) == ("failed", "diverged"), meta
    assert meta.head < cursor.seq and events[-1].seq == meta.head
    assert "could not end stream" not in a.output()


class Heads:
    """What a store tells one subscriber about a stream: every head, and whether it is gone."""

    def __init__(self, store: RedisStore, stream: str) -> None:
        self.heads: list[int] = []
        self.gone = asyncio.Event()
        self.unsubscribe = store.subscribe(stream, self.on_change)

    def on_change(self, _stream: str, head: int) -> None:
        self.heads.append(head)
        if head < 0:
            self.gone.set()


async def lose_writes_after(
    redis_server: RedisServer, before: Callable[[], Awaitable[None]]
) -> None:
    """SAVE, run ``before`` (writes Redis will lose), then restart Redis from that RDB."""
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.save()
    finally:
        await r.aclose()
    await before()
    redis_server.stop(signal.SIGKILL)
    redis_server.start()


async def test_an_idle_producer_whose_log_lost_events_has_its_stream_ended_diverged(
    private_redis: RedisServer,
) -> None:
    """Nobody appends after the loss: the producing node notices at its next lease
    renewal, ends the stream ``failed: diverged`` and tells readers on every node."""
    private_redis.start()
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(private_redis.url, prefix=prefix, lease=1.0)
    b = RedisStore(private_redis.url, prefix=prefix, lease=1.0)
    try:
        c = await a.create("o", "idle", 0.0)
        p = Producer(a, c.stream, c.epoch, c.producer)
        for i in range(100):
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        await p.flush()
        on_a, on_b = Heads(a, c.stream), Heads(b, c.stream)

        async def more() -> None:
            for i in range(100, 250):
                p.add_chunk(Kind.TEXT, "t", f"{i} ")
            await p.flush()
            async with asyncio.timeout(5):
                while 250 not in on_b.heads:  # noqa: ASYNC110 - the other node saw them
                    await asyncio.sleep(0.01)

        await lose_writes_after(private_redis, more)
        back = time.monotonic()
        await asyncio.wait_for(asyncio.gather(on_a.gone.wait(), on_b.gone.wait()), BOUND)
        took = time.monotonic() - back
        meta = await b.meta(c.stream)
        assert meta is not None and (meta.status, meta.error) == ("failed", "diverged"), meta
        assert meta.head == 101  # the 100 events the snapshot kept, then the end
        _, events = await b.read_all(c.stream)
        assert events[-1].kind is Kind.END and events[-1].count == 101
        assert list(await b.read_digests(c.stream))[-1] == meta.digest
        # the producer learns it on its next write, with a typed error
        p.add_chunk(Kind.TEXT, "t", "late")
        with pytest.raises(LogDiverged):
            await p.flush()
        assert c.stream not in a._owned  # its lease is no longer renewed
        print(f"readers told {took:.2f}s after Redis was back")
    finally:
        await a.close()
        await b.close()


async def test_a_producer_that_meets_a_gap_gets_log_diverged_and_the_stream_ends(
    private_redis: RedisServer,
) -> None:
    private_redis.start()
    prefix = f"t{secrets.token_hex(4)}"
    # a long lease: the append, not the renewal, meets the loss first
    a = RedisStore(private_redis.url, prefix=prefix, lease=30.0)
    try:
        c = await a.create("o", "busy", 0.0)
        p = Producer(a, c.stream, c.epoch, c.producer)
        for i in range(50):
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        await p.flush()
        on_a = Heads(a, c.stream)

        async def more() -> None:
            for i in range(50, 80):
                p.add_chunk(Kind.TEXT, "t", f"{i} ")
            await p.flush()

        await lose_writes_after(private_redis, more)
        p.add_chunk(Kind.TEXT, "t", "after")
        with pytest.raises(LogDiverged) as info:
            await p.flush()
        assert "50" in str(info.value) and "80" in str(info.value)
        await asyncio.wait_for(on_a.gone.wait(), BOUND)
        meta = await a.meta(c.stream)
        assert meta is not None and (meta.status, meta.error, meta.head) == (
            "failed",
            "diverged",
            51,
        )
        # ending it is idempotent: the hub's finish is refused, nothing is appended twice
        with pytest.raises((StaleProducer, LogDiverged)):
            await p.finish("failed", "x", 1.0)
        assert (await a.meta(c.stream)).head == 51  # type: ignore[union-attr]
    finally:
        await a.close()


async def test_a_run_whose_end_cannot_be_written_is_released_and_ended_by_another_node(
    private_redis: RedisServer,
) -> None:
    """Redis is away longer than ``outage_timeout``: the run fails and its end cannot be
    written. The node must stop renewing the stream's lease (before: renewed forever,
    ``running`` for good) so that a node tailing it ends it once Redis is back."""
    private_redis.aof = True  # nothing is lost: this is about the end, not the data
    private_redis.start()
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(private_redis.url, prefix=prefix, lease=1.0, outage_timeout=0.3)
    b = RedisStore(private_redis.url, prefix=prefix, lease=1.0)

    async def forever(_req: Request, out: Output) -> None:
        i = 0
        while True:
            await out.text(f"{i} ")
            await out.flush()
            i += 1
            await asyncio.sleep(0.005)

    hub = Hub(a, {"forever": (forever, None)})
    try:
        created = await hub.start(Principal("o"), "r1", "forever", None)
        stream = created.stream
        on_b = Heads(b, stream)
        async with asyncio.timeout(5):
            while not on_b.heads or max(on_b.heads) < 50:  # noqa: ASYNC110 - tail woke us
                await asyncio.sleep(0.01)
        run = hub.runs[stream]
        private_redis.stop(signal.SIGKILL)
        await asyncio.wait_for(run.done.wait(), 10)  # failed, and its end could not be written
        assert stream not in a._owned  # released: no more renewals
        private_redis.start()
        back = time.monotonic()
        meta = await asyncio.wait_for(wait_ended(b, stream), BOUND)
        took = time.monotonic() - back
        assert (meta.status, meta.error) == ("failed", "producer_lost"), meta
        _, events = await b.read_all(stream)
        assert events[-1].kind is Kind.END and events[-1].seq == meta.head
        assert list(await b.read_digests(stream))[-1] == meta.digest
        print(f"ended producer_lost {took:.2f}s after Redis was back")
    finally:
        await hub.shutdown(0.1)
        await a.close()
        await b.close()


async def wait_ended(store: RedisStore, stream: str) -> StreamMeta:
    """The stream's metadata once it is no longer running (checked on every change)."""
    changed = asyncio.Event()
    unsubscribe = store.subscribe(stream, lambda _s, _h: changed.set())
    try:
        while True:
            meta = await store.meta(stream)
            if meta is not None and meta.status != "running":
                return meta
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.2)
    finally:
        unsubscribe()


async def test_events_written_during_a_refused_append_are_dropped_with_it(
    redis_server: RedisServer,
) -> None:
    """An append is refused (stream_too_large) while the agent kept writing: the events
    written meanwhile follow the refused batch and must be dropped with it. Before, the
    end event landed after them, past a gap: the store refused it ("could not end
    stream") and the stream stayed running."""
    prefix = f"t{secrets.token_hex(4)}"
    store = RedisStore(redis_server.url, prefix=prefix, retention=Retention(max_stream_bytes=2_000))
    try:
        c = await store.create("o", "r1", 0.0)
        p = Producer(store, c.stream, c.epoch, c.producer)
        for i in range(10):
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        await p.flush()
        for i in range(10, 500):  # too much for the stream
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        refused = asyncio.ensure_future(p.flush())
        await asyncio.sleep(0)  # one loop step: the flush took its batch, awaits Redis
        assert p.pending == 0
        for i in range(500, 520):  # written while that append is in flight
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        with pytest.raises(StreamTooLarge):
            await refused
        assert await p.finish("failed", "stream_too_large", 1.0) == ("failed", "stream_too_large")
        meta = await store.meta(c.stream)
        assert meta is not None and (meta.status, meta.head) == ("failed", 11), meta
        _, events = await store.read_all(c.stream)
        assert [e.seq for e in events] == list(range(1, 12)) and events[-1].kind is Kind.END
        assert list(await store.read_digests(c.stream))[-1] == meta.digest
    finally:
        await store.close()


async def test_an_append_refused_by_a_full_redis_is_log_full(private_redis: RedisServer) -> None:
    """Redis at ``maxmemory`` (``noeviction``) refuses writes with OOM: the producer gets
    the same typed error as from a full memory log (the run ends ``failed: log_full``)."""
    private_redis.start()
    r = aioredis.Redis.from_url(private_redis.url)
    store = RedisStore(private_redis.url, prefix=f"t{secrets.token_hex(4)}")
    try:
        c = await store.create("o", "full", 0.0)
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", str(used + 512 * 1024))
        p = Producer(store, c.stream, c.epoch, c.producer)
        with pytest.raises(LogFull):
            for i in range(10_000):  # ~2 MB at most: far over the room left
                p.add_chunk(Kind.TEXT, "t", f"{i:08d} " * 20)
                if p.pending >= 64:
                    await p.flush()
        assert isinstance(p.error, LogFull)
        await r.config_set("maxmemory", "1")  # no room at all: a start is refused too
        with pytest.raises(LogFull):  # (the connection answers overloaded, not internal)
            await store.create("o", "next", 0.0)
    finally:
        await store.close()
        await r.aclose()
