"""RedisStore against a real redis-server: what only Redis has (leases, racing
producers, expiry, tailing from another node, its recent-entries cache, a flushed
or unreachable Redis). What every StreamLog does is in tests/integration/store."""

from __future__ import annotations

import asyncio
import random
import secrets
import time

import pytest
import redis.asyncio as aioredis

from unbroken.errors import StaleProducer
from unbroken.protocol.digest import chain
from unbroken.protocol.digest import seed as seed_of
from unbroken.protocol.events import Kind, chunk
from unbroken.protocol.frames import Events, decode_server, encode_events_frame, events_of
from unbroken.server.producer import Producer
from unbroken.store.base import AppendBatch, Retention
from unbroken.store.batches import batch_of
from unbroken.store.redis import RedisStore

from ...waiting import until
from ..store.answers import random_events
from .conftest import RedisServer

pytestmark = pytest.mark.timeout(60)


def text_batch(first: int, n: int, prev: bytes, tag: str = "x") -> AppendBatch:
    """``n`` text chunks from seq ``first`` (a run of part "t")."""
    return batch_of(
        [chunk(seq, Kind.TEXT, "t", f"{tag}{seq}") for seq in range(first, first + n)], prev
    )


async def test_two_producers_racing_one_wins_no_duplicate(redis_server: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix, lease=0.3)
    b = RedisStore(redis_server.url, prefix=prefix, lease=0.3)
    try:
        c = await a.create("o", "zombie", 0.0)
        h0 = seed_of(c.stream, c.epoch)
        await a.append(c.stream, c.producer, text_batch(1, 3, h0, "a"))
        # a stops renewing (a zombie): b takes the stream once the lease ran out
        a._owned.clear()
        for t in a._tasks:
            t.cancel()
        r = aioredis.Redis.from_url(redis_server.url)
        await r.hset(f"{prefix}:{{{c.stream}}}:m", "lease", 0)
        await r.aclose()
        got = await b._claim_script(keys=[b._meta_key(c.stream)], args=["tok-b", 60000, ""])
        assert got[0] == 0 and got[1] == 3
        prev = got[2]
        results = await asyncio.gather(
            a.append(c.stream, c.producer, text_batch(4, 3, prev, "a")),
            b.append(c.stream, "tok-b", text_batch(4, 3, prev, "b")),
            return_exceptions=True,
        )
        assert isinstance(results[0], StaleProducer) and results[1] == 6
        _, events = await b.read_all(c.stream)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert [e.body for e in events] == ["a1", "a2", "a3", "b4", "b5", "b6"]
    finally:
        await a.close()
        await b.close()


async def test_ttl_after_end_drops_the_stream_and_leaves_a_tombstone(
    redis_server: RedisServer,
) -> None:
    s = RedisStore(
        redis_server.url,
        prefix=f"t{secrets.token_hex(4)}",
        retention=Retention(ttl=0.2, tombstone_ttl=30),
    )
    try:
        c = await s.create("o", "ttl", 0.0)
        p = Producer(s, c.stream, c.epoch, c.producer)
        p.add_chunk(Kind.TEXT, "t", "hello")
        dropped = asyncio.Event()
        s.subscribe(c.stream, lambda _s, head: dropped.set() if head == -1 else None)
        await p.finish("completed", "", 1.0)
        await asyncio.wait_for(dropped.wait(), 5)  # told by the store's upkeep
        assert await s.meta(c.stream) is None
        assert await s.tombstone(c.stream) == "o"
        again = await s.create("o", "ttl", 2.0)  # the request key expired with it
        assert again.created and again.stream != c.stream
    finally:
        await s.close()


async def test_a_tail_on_another_store_hears_every_append(redis_server: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix)
    b = RedisStore(redis_server.url, prefix=prefix)
    try:
        c = await a.create("o", "tail", 0.0)
        heads: list[int] = []
        reached = asyncio.Event()

        def heard(_s: str, head: int) -> None:
            heads.append(head)
            if head >= 500:
                reached.set()

        b.subscribe(c.stream, heard)
        p = Producer(a, c.stream, c.epoch, c.producer)
        for i in range(500):
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
            if i % 7 == 0:
                await p.flush()
        await p.flush()
        await asyncio.wait_for(reached.wait(), 5)
        assert heads == sorted(heads) and heads[-1] == 500
    finally:
        await a.close()
        await b.close()


async def test_a_lost_producer_is_ended_failed_producer_lost(redis_server: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix, lease=0.5)
    b = RedisStore(redis_server.url, prefix=prefix, lease=0.5)
    try:
        c = await a.create("o", "lost", 0.0)
        p = Producer(a, c.stream, c.epoch, c.producer)
        for i in range(10):
            p.add_chunk(Kind.TEXT, "t", f"{i} ")
        await p.flush()
        await a.close()  # the node dies: no more renewals
        ended = asyncio.Event()
        b.subscribe(c.stream, lambda _s, head: ended.set() if head == 11 else None)
        await asyncio.wait_for(ended.wait(), 3)
        meta = await b.meta(c.stream)
        assert meta is not None and meta.status == "failed" and meta.error == "producer_lost"
        _, events = await b.read_all(c.stream)
        digests = chain(c.stream, c.epoch, events)
        assert meta.digest == digests[-1] and events[-1].kind is Kind.END
        assert events[-1].error == "producer_lost" and events[-1].count == 11
    finally:
        await b.close()


@pytest.mark.parametrize("seed", range(4))
async def test_reads_of_a_live_stream_on_its_node_match_reads_from_redis(
    redis_server: RedisServer, seed: int
) -> None:
    """The producing node serves recent entries from memory: same events, same digests."""
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix)
    b = RedisStore(redis_server.url, prefix=prefix)
    try:
        rng = random.Random(seed)
        events = random_events(rng, rng.randint(50, 3000))[:-1]  # still running: no end
        c = await a.create("o", f"live{seed}", 0.0)
        p = Producer(a, c.stream, c.epoch, c.producer)
        for ev in events:
            if ev.kind in (Kind.TEXT, Kind.JSON, Kind.DATA):
                p.add_chunk(ev.kind, ev.part, ev.body)
            else:
                p.add(ev)
            if rng.random() < 0.08:
                await p.flush()
        await p.flush()
        assert a._recent.get(c.stream)  # the cache is in use
        digests = chain(c.stream, c.epoch, events)
        for _ in range(30):
            after = rng.randint(max(0, len(events) - 600), len(events) - 1)
            budget = rng.choice([1, 64, 300, 5000, 1 << 20])
            x, y = await a.read(c.stream, after, budget), await b.read(c.stream, after, budget)
            assert x is not None and y is not None
            for got in (x, y):
                frame = encode_events_frame(c.stream, got.first, got.items, got.digest)
                decoded = decode_server(frame)
                assert isinstance(decoded, Events)
                kinds = {e.part: e.part_kind for e in events[:after] if e.kind is Kind.PART_START}
                evs = events_of(decoded, kinds)
                assert evs == events[after : after + got.count]
                assert got.digest == digests[after + got.count - 1]
        p.abandon()
    finally:
        await a.close()
        await b.close()


async def test_a_flushed_redis_gets_a_new_epoch_and_old_streams_are_unknown(
    private_redis: RedisServer,
) -> None:
    private_redis.start()
    s = RedisStore(private_redis.url, prefix="flush")
    try:
        c = await s.create("o", "before", 0.0)
        old = s.epoch
        r = aioredis.Redis.from_url(private_redis.url)
        await r.flushall()
        await r.aclose()
        assert await s.meta(c.stream) is None
        assert s.epoch != old  # noticed on the way (meta reads the epoch key)
        with pytest.raises(StaleProducer):
            await s.append(c.stream, c.producer, text_batch(1, 1, seed_of(c.stream, old)))
        again = await s.create("o", "before", 1.0)
        assert again.created and again.epoch == s.epoch
    finally:
        await s.close()


async def test_an_outage_longer_than_outage_timeout_fails_the_append(
    private_redis: RedisServer,
) -> None:
    from unbroken.errors import StoreUnavailable

    private_redis.start()
    s = RedisStore(private_redis.url, prefix="down", outage_timeout=0.5)
    try:
        c = await s.create("o", "down", 0.0)
        private_redis.stop()
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.append(c.stream, c.producer, text_batch(1, 3, seed_of(c.stream, c.epoch)))
        assert time.monotonic() - t < 10  # its 0.5 s, with room on a loaded machine (not 30 s)
    finally:
        await s.close()


async def test_an_append_waits_out_a_short_outage_and_lands_once(
    private_redis: RedisServer,
) -> None:
    private_redis.aof = True
    private_redis.start()
    s = RedisStore(private_redis.url, prefix="blip")
    try:
        c = await s.create("o", "blip", 0.0)
        b1 = text_batch(1, 5, seed_of(c.stream, c.epoch))
        await s.append(c.stream, c.producer, b1)
        private_redis.stop()
        pending = asyncio.ensure_future(
            s.append(c.stream, c.producer, text_batch(6, 5, b1.digests[-1]))
        )
        # Redis comes back while the append retries against the dead port
        await asyncio.to_thread(private_redis.start)
        assert await asyncio.wait_for(pending, 20) == 10
        _, events = await s.read_all(c.stream)
        assert [e.seq for e in events] == list(range(1, 11))
    finally:
        await s.close()


async def test_appends_of_one_tick_share_a_round_trip_and_fail_alone(
    redis_server: RedisServer,
) -> None:
    """Appends queued in one loop tick go in one pipeline: one round trip for all,
    each its own script (a stale producer among them is refused alone), and after
    Redis lost its scripts (SCRIPT FLUSH) each is loaded and run again."""
    prefix = f"t{secrets.token_hex(4)}"
    # only the appends' round trips are counted: a lease of 600 s puts the lease loop's
    # first tick (renewals, claims, lease checks; every lease / 5) past the test's end
    store = RedisStore(redis_server.url, prefix=prefix, lease=600)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.script_flush()  # as after a restart: the first appends load the script
        made = [await store.create("o", f"p{i}", 0.0) for i in range(6)]
        assert await store.append(made[5].stream, made[5].producer, text_batch(1, 1, b"")) == 1
        assert await r.script_exists(store._append_script.sha) == [True]
        # the tailer's one command (CLIENT ID, on its own connection) is behind us too
        await until(lambda: store._tail_client_id is not None, 10)
        made = made[:5]
        heads = [seed_of(c.stream, c.epoch) for c in made]
        batches = [text_batch(1, 3, h, f"s{i}") for i, h in enumerate(heads)]
        before = store.redis_counts.round_trips
        results = await asyncio.gather(
            *(
                store.append(c.stream, "not-the-producer" if i == 2 else c.producer, b)
                for i, (c, b) in enumerate(zip(made, batches, strict=True))
            ),
            return_exceptions=True,
        )
        assert store.redis_counts.round_trips - before == 1
        assert [type(x) for x in results] == [int, int, StaleProducer, int, int]
        assert results[0] == results[1] == results[3] == results[4] == 3
        for i, c in enumerate(made):
            _, events = await store.read_all(c.stream)
            expect = [] if i == 2 else [f"s{i}{seq}" for seq in range(1, 4)]
            assert [e.body for e in events] == expect

        await r.script_flush()
        prevs = [b.digests[-1] for b in batches]
        before = store.redis_counts.round_trips
        more = await asyncio.gather(
            *(
                store.append(c.stream, c.producer, text_batch(4, 2, p, f"s{i}"))
                for i, (c, p) in enumerate(zip(made, prevs, strict=True))
                if i != 2
            )
        )
        assert more == [5, 5, 5, 5]
        # the pipeline (NOSCRIPT each), SCRIPT LOAD, the pipeline again
        assert store.redis_counts.round_trips - before == 3
        for i, c in enumerate(made):
            if i != 2:
                _, events = await store.read_all(c.stream)
                assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    finally:
        await r.aclose()
        await store.close()


@pytest.mark.parametrize("steps", range(4))
async def test_a_tailer_cancelled_as_it_is_woken_ends(
    redis_server: RedisServer, steps: int
) -> None:
    # A worker's shutdown cancels every task once (asyncio.Runner); a cancel that
    # lands while the tailer's wake-up is in flight must still end it (a lost one
    # left the worker process alive after its supervisor died).
    s = RedisStore(redis_server.url, prefix=f"t{secrets.token_hex(4)}")
    try:
        s.subscribe("nothing", lambda _s, _h: None)()  # the tailer runs, tails nothing
        tail = s._tasks[0]
        # until it waits for a subscription (it has its client id)
        await until(lambda: s._tail_client_id is not None, 5)
        s._kick()  # a subscription's wake-up ...
        for _ in range(steps):
            await asyncio.sleep(0)
        tail.cancel()  # ... and the shutdown's cancel in the same few loop steps
        done, _ = await asyncio.wait({tail}, timeout=10)
        assert done, "the tailer swallowed its cancellation and kept running"
        assert tail.cancelled()
    finally:
        await s.close()


async def test_a_create_whose_reply_is_lost_finishes_its_own_stream(
    redis_server: RedisServer,
) -> None:
    """A create whose last step ran on Redis but whose reply was lost (a connection
    reset: the store tries again) is the new stream's creator, not a repeat of a start
    made elsewhere: before, the retry found its own claim, answered ``created=False``
    and no run was ever started for the stream."""
    store = RedisStore(redis_server.url, prefix=f"t{secrets.token_hex(4)}")
    real = store._renew_script
    lost: list[bool] = []

    async def renew_then_lose_the_reply(**kw: object) -> object:
        got = await real(**kw)  # type: ignore[arg-type]
        if not lost:
            lost.append(True)
            raise ConnectionError("connection reset by peer (the reply was lost)")
        return got

    store._renew_script = renew_then_lose_the_reply  # type: ignore[assignment,method-assign]
    try:
        created = await store.create("o", "req-lost", 0.0)
        assert lost and created.created
        meta = await store.meta(created.stream)
        assert meta is not None and meta.status == "running"
        assert await store.find("o", "req-lost") is not None
        again = await store.create("o", "req-lost", 0.0)  # a real repeat: the same stream
        assert (again.stream, again.created) == (created.stream, False)
        h0 = seed_of(created.stream, created.epoch)
        await store.append(created.stream, created.producer, text_batch(1, 2, h0, "x"))
    finally:
        await store.close()
