"""RedisStore on a real Redis Cluster (3 masters): streams on every master, nodes
reading each other's streams, a cut and a resume on another node, a live stream
whose slot moves to another master (ASK, then MOVED) and a master that loses its
scripts."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from pathlib import Path

import pytest
from redis.crc import key_slot

from unbroken import BackoffPolicy
from unbroken.client import Client, ConnectionEvent, Stream
from unbroken.errors import LogUnavailable, StoreUnavailable, UnbrokenError
from unbroken.protocol.digest import chain
from unbroken.protocol.digest import seed as seed_of
from unbroken.protocol.events import Kind, chunk, part_start
from unbroken.store.base import AppendBatch, StreamMeta
from unbroken.store.batches import batch_of
from unbroken.store.redis import RedisStore

from .conftest import Node, RedisCluster, expected_text, full_digest, until_seq

pytestmark = pytest.mark.timeout(120)
HELD_APP = "tests.integration.redis.held_app:app"  # examples.redis_app + held_count
FAST = BackoffPolicy(base=0.02, cap=0.2, max_attempts=100, deadline=60)


def slot_of(stream: str) -> int:
    """The cluster slot of every key of ``stream`` (its id is their hash tag)."""
    return key_slot(f"{{{stream}}}".encode())


def text_batch(first: int, n: int, prev: bytes) -> AppendBatch:
    return batch_of([chunk(s, Kind.TEXT, "t", f"x{s} ") for s in range(first, first + n)], prev)


async def test_streams_on_every_master_end_exact_across_a_cut_and_a_resume_on_another_node(
    redis_cluster: RedisCluster, nodes: list[Node], tmp_path: Path
) -> None:
    """Node A produces streams until each master holds at least two; a client reads
    them all from node B (B tails A's streams); B is killed mid-stream and the client
    resumes every stream on A: each ends exact (text and digest). The streams hold
    at token ``hold`` until B is dead (a gate file): on a slow machine they used to
    end, and reach the client through B, before the kill, and no resume on A was
    needed (no "connected" to A was recorded)."""
    prefix = f"c{secrets.token_hex(4)}"
    a = Node(redis_cluster.url, prefix=prefix, cluster=True, app=HELD_APP)
    b = Node(redis_cluster.url, prefix=prefix, cluster=True, app=HELD_APP)
    nodes += [a, b]
    n, hold = 3000, 1000
    gate = tmp_path / "gate"
    ask = {"n": n, "every": 50, "pause": 0.01, "hold_at": hold, "gate": str(gate)}
    cursors = []
    per_master = [0, 0, 0]
    async with Client([a.url], policy=FAST) as starter:
        while min(per_master) < 2:
            assert len(cursors) < 60, per_master  # (1 - 1/3)^60: never by chance
            st0 = await starter.start("held_count", ask)
            await until_seq(st0, 1)
            assert st0.cursor is not None
            cursors.append(st0.cursor)
            per_master[redis_cluster.owner(slot_of(st0.id))] += 1
    seen: list[ConnectionEvent] = []
    client = Client([b.url, a.url], policy=FAST, on_event=seen.append)
    async with client:
        streams: list[Stream] = [await client.resume(c) for c in cursors]
        # every stream is being read from B, mid-answer (held at ``hold`` on A)
        await asyncio.gather(*(until_seq(st, 200) for st in streams))
        assert all(st.cursor is not None and st.cursor.seq < n for st in streams)
        b.signal(signal.SIGKILL)
        await asyncio.to_thread(b.proc.wait, 15)  # dead: it cannot pass on another event
        gate.touch()

        async def finish(st: Stream) -> None:
            async for _ in st:
                pass
            answer = await st.wait()
            assert answer.status == "completed"
            assert answer.text == expected_text(n)
            assert answer.digest == full_digest(st.id, st.epoch, n)

        await asyncio.gather(*(finish(st) for st in streams))
    # every stream was resumed on A after the cut (B's connection carried them all;
    # none could end before it: their ends were written after B died)
    to_a = [i for i, e in enumerate(seen) if e.kind == "connected" and e.url == a.url]
    assert to_a, seen
    resumed_on_a = {e.stream for e in seen[to_a[-1] :] if e.kind == "resumed"}
    assert resumed_on_a == {st.id for st in streams}, seen


async def test_a_live_stream_keeps_its_events_while_its_slot_moves_to_another_master(
    redis_cluster: RedisCluster,
) -> None:
    """The stream's slot is migrated by hand (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE),
    with appends in each state: keys still on the source, keys moved but the slot not
    yet (ASK), slot moved (MOVED). Another store tails it all along; the log ends
    exact and every read matches the chain."""
    prefix = f"c{secrets.token_hex(4)}"
    a = RedisStore.cluster(redis_cluster.url, prefix=prefix)
    b = RedisStore.cluster(redis_cluster.url, prefix=prefix)
    try:
        made = await a.create("o", "moving", 0.0)
        stream = made.stream
        heard: list[int] = []
        reached = asyncio.Event()
        target = 0

        def listen(_s: str, head: int) -> None:
            heard.append(head)
            if head >= target:
                reached.set()

        b.subscribe(stream, listen)
        events = [part_start(1, "t", "text", mime="text/plain")]
        prev = seed_of(stream, made.epoch)
        first = batch_of(events, prev)
        head = await a.append(stream, made.producer, first)
        prev = first.digests[-1]

        async def append_and_hear(count: int) -> None:
            nonlocal head, prev, target
            batch = text_batch(head + 1, count, prev)
            target = head + count
            reached.clear()
            assert await a.append(stream, made.producer, batch) == target
            head, prev = target, batch.digests[-1]
            await asyncio.wait_for(reached.wait(), 10)  # B's tail follows the move too

        await append_and_hear(10)
        slot = slot_of(stream)
        src = redis_cluster.owner(slot)
        dst = (src + 1) % 3
        src_port, dst_port = (str(redis_cluster.servers[i].port) for i in (src, dst))
        src_id, dst_id = redis_cluster.node_id(src), redis_cluster.node_id(dst)
        cli = redis_cluster.cli
        await asyncio.to_thread(
            cli, "-p", dst_port, "cluster", "setslot", str(slot), "importing", src_id
        )
        await asyncio.to_thread(
            cli, "-p", src_port, "cluster", "setslot", str(slot), "migrating", dst_id
        )
        await append_and_hear(10)  # the keys are still on the source: served there
        keys = (
            await asyncio.to_thread(
                cli, "-p", src_port, "cluster", "getkeysinslot", str(slot), "100"
            )
        ).split()
        assert f"{prefix}:{{{stream}}}:s" in keys and f"{prefix}:{{{stream}}}:m" in keys
        await asyncio.to_thread(
            cli, "-p", src_port, "migrate", "127.0.0.1", dst_port, "", "0", "5000", "keys", *keys
        )
        await append_and_hear(10)  # moved keys, slot not yet: the source answers ASK
        got = await b.read(stream, 0, 1 << 20)
        assert got is not None and got.first == 1 and got.count == head
        for i in (dst, src, 3 - src - dst):
            port = str(redis_cluster.servers[i].port)
            await asyncio.to_thread(
                cli, "-p", port, "cluster", "setslot", str(slot), "node", dst_id
            )
        assert redis_cluster.owner(slot) == dst
        await append_and_hear(10)  # the slot moved: MOVED, the client learns the new owner
        await a.finish(stream, made.producer, "completed", "", 1.0)
        _, stored = await b.read_all(stream)
        assert [e.seq for e in stored] == list(range(1, head + 1))
        assert [e.body for e in stored[1:]] == [f"x{s} " for s in range(2, head + 1)]
        digests = await b.read_digests(stream)
        assert digests == chain(stream, made.epoch, list(stored))
        meta = await b.meta(stream)
        assert meta is not None and meta.head == head and meta.status == "completed"
        assert meta.digest == digests[-1]
        assert sorted(heard) == heard and heard[-1] == head
    finally:
        await a.close()
        await b.close()


async def test_appends_of_one_tick_go_one_round_trip_per_master_and_reload_lost_scripts(
    redis_cluster: RedisCluster,
) -> None:
    """Appends of streams on all three masters queued in one tick: one pipeline, one
    round trip per master; after every master lost its scripts they are loaded and
    the appends land once."""
    prefix = f"c{secrets.token_hex(4)}"
    # a long lease: no renewal pipeline runs between the counts
    store = RedisStore.cluster(redis_cluster.url, prefix=prefix, lease=600)
    try:
        made = []
        masters: set[int] = set()
        while len(masters) < 3 or len(made) < 6:
            assert len(made) < 60
            c = await store.create("o", f"r{len(made)}", 0.0)
            made.append(c)
            masters.add(redis_cluster.owner(slot_of(c.stream)))
        batches = [text_batch(1, 3, seed_of(c.stream, c.epoch)) for c in made]
        heads = await asyncio.gather(  # (opens each master's connections: their handshakes)
            *(store.append(c.stream, c.producer, b) for c, b in zip(made, batches, strict=True))
        )
        assert heads == [3] * len(made)
        prevs = [b.digests[-1] for b in batches]
        batches = [text_batch(4, 2, p) for p in prevs]
        before = store.redis_counts.round_trips
        heads = await asyncio.gather(
            *(store.append(c.stream, c.producer, b) for c, b in zip(made, batches, strict=True))
        )
        assert heads == [5] * len(made)
        assert store.redis_counts.round_trips - before == 3
        for srv in redis_cluster.servers:  # as after restarts: no master has the script
            await asyncio.to_thread(redis_cluster.cli, "-p", str(srv.port), "script", "flush")
        before = store.redis_counts.round_trips
        more = await asyncio.gather(
            *(
                store.append(c.stream, c.producer, text_batch(6, 2, b.digests[-1]))
                for c, b in zip(made, batches, strict=True)
            )
        )
        assert more == [7] * len(made)
        # the pipeline (NOSCRIPT from each master), SCRIPT LOAD on each, the pipeline again
        assert store.redis_counts.round_trips - before == 9
        for c in made:
            _, events = await store.read_all(c.stream)
            assert [e.seq for e in events] == list(range(1, 8))
    finally:
        await store.close()


def prefix_off(redis_cluster: RedisCluster, master: int) -> str:
    """A key prefix whose epoch key is not on ``master``."""
    while True:
        prefix = f"c{secrets.token_hex(4)}"
        if redis_cluster.owner(key_slot(f"{prefix}:epoch".encode())) != master:
            return prefix


@pytest.mark.full
async def test_a_dead_master_costs_only_its_own_streams(
    redis_cluster: RedisCluster,
) -> None:
    """No replicas; the master of slot 0 (redis-py's first master: it reads its command
    table there) is killed -9 while store A produces streams on every master. Store B
    is built after the kill, as a node started during the outage. A keeps renewing the
    leases on the other two masters, so B, watching those, never ends them
    ``producer_lost``; they take appends and read back exact. The dead master's
    streams fail typed (``StoreUnavailable``) on both stores; once it is back (no
    persistence: empty) they are gone and the others still run."""
    victim = redis_cluster.owner(0)
    prefix = prefix_off(redis_cluster, victim)
    lease = 2.0
    a = RedisStore.cluster(redis_cluster.url, prefix=prefix, lease=lease, outage_timeout=2)
    b: RedisStore | None = None
    try:
        made = []
        masters: set[int] = set()
        while len(masters) < 3:
            assert len(made) < 60
            c = await a.create("o", f"r{len(made)}", 0.0)
            made.append(c)
            masters.add(redis_cluster.owner(slot_of(c.stream)))
        for c in made:
            assert (
                await a.append(c.stream, c.producer, text_batch(1, 2, seed_of(c.stream, c.epoch)))
                == 2
            )
        healthy = [c for c in made if redis_cluster.owner(slot_of(c.stream)) != victim]
        lost = [c for c in made if c not in healthy]
        assert healthy and lost
        await asyncio.to_thread(redis_cluster.servers[victim].stop, signal.SIGKILL)
        alive = (victim + 1) % 3
        b = RedisStore.cluster(
            redis_cluster.servers[alive].url, prefix=prefix, lease=lease, outage_timeout=2
        )
        ended: list[str] = []
        third = {c.stream: asyncio.Event() for c in healthy}

        def heard(s: str, h: int) -> None:
            if h < 0:
                ended.append(s)
            elif h >= 3:
                third[s].set()

        for c in healthy:
            b.subscribe(c.stream, heard)
        ms = f"{prefix}:{{{healthy[0].stream}}}:m"
        now = await asyncio.to_thread(
            redis_cluster.cli, "-p", str(redis_cluster.servers[alive].port), "time"
        )
        killed = int(now.split()[0]) * 1000  # on the masters' clock (one box)
        port = str(redis_cluster.servers[redis_cluster.owner(slot_of(healthy[0].stream))].port)

        async def renewed_past(limit_ms: int) -> None:
            while True:  # read on its master by redis-cli: not through a client under test
                got = await asyncio.to_thread(redis_cluster.cli, "-p", port, "hget", ms, "lease")
                if got.strip() and int(got) > limit_ms:
                    return
                await asyncio.sleep(0.1)

        # renewed more than two leases after the kill: B's lease checks ran all along
        await asyncio.wait_for(renewed_past(killed + int(2.5 * lease * 1000)), 20)
        for c in healthy:
            meta = await b.meta(c.stream)
            assert meta is not None and meta.status == "running" and meta.head == 2, (meta, made)
        assert ended == []
        for c in healthy:
            m = await b.meta(c.stream)
            assert m is not None
            assert await a.append(c.stream, c.producer, text_batch(3, 1, m.digest)) == 3
            _, events = await b.read_all(c.stream)
            assert [e.seq for e in events] == [1, 2, 3]
            assert await b.read_digests(c.stream) == chain(c.stream, c.epoch, list(events))
        # B's tail of the streams on the live masters goes on (the dead one not polled)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in third.values())), 10)
        # a store cannot start on the dead master's URL (a typed error, not a hang)
        with pytest.raises(StoreUnavailable):
            RedisStore.cluster(redis_cluster.servers[victim].url, prefix=prefix)
        # the dead master's streams: a typed error, on the producing store and on B
        with pytest.raises(StoreUnavailable):
            await b.meta(lost[0].stream)
        with pytest.raises(StoreUnavailable):
            m0 = seed_of(lost[0].stream, lost[0].epoch)
            await a.append(lost[0].stream, lost[0].producer, text_batch(3, 1, m0))
        # back, empty (no persistence): its streams are gone, the others run on
        await asyncio.to_thread(redis_cluster.servers[victim].start)

        async def served_again() -> StreamMeta | None:
            while True:  # (each try waits out outage_timeout; the others keep failing it)
                with contextlib.suppress(StoreUnavailable):
                    return await b.meta(lost[0].stream)

        assert await asyncio.wait_for(served_again(), 60) is None
        for c in healthy:
            meta = await b.meta(c.stream)
            assert meta is not None and meta.status == "running" and meta.head == 3, meta
        assert ended == []
    finally:
        await a.close()
        if b is not None:
            await b.close()


@pytest.mark.full
async def test_a_client_reading_streams_of_every_master_loses_only_the_dead_masters(
    redis_cluster: RedisCluster, nodes: list[Node]
) -> None:
    """Through a node: a client reads streams on every master, on one connection; the
    master of slot 0 is killed -9 mid-answer (for good). The streams on the other
    masters end completed and exact; those on the dead master are told ``error
    unavailable`` (for that stream: the connection stays), resumed again with backoff,
    and fail with ``LogUnavailable`` once the client's policy is spent; they do not
    cost the others their connection (its reads of the dead master's streams wait out
    the node's ``outage_timeout`` once, then fail at once)."""
    victim = redis_cluster.owner(0)
    prefix = prefix_off(redis_cluster, victim)
    node = Node(redis_cluster.url, prefix=prefix, cluster=True, lease=2.0, outage_timeout=2)
    nodes.append(node)
    n = 400
    streams: list[Stream] = []
    on: list[int] = []
    policy = BackoffPolicy(base=0.02, cap=0.2, max_attempts=100, deadline=15)
    async with Client([node.url], policy=policy) as client:
        while len(set(on)) < 3 or on.count(victim) < 2:
            assert len(streams) < 60
            st = await client.start("count", {"n": n, "every": 20, "pause": 0.05})
            streams.append(st)
            await until_seq(st, 1)
            on.append(redis_cluster.owner(slot_of(st.id)))
        await asyncio.gather(*(until_seq(st, 10) for st in streams))
        await asyncio.to_thread(redis_cluster.servers[victim].stop, signal.SIGKILL)

        async def finish(st: Stream) -> BaseException | None:
            try:
                async for _ in st:
                    pass
                answer = await st.wait()
            except UnbrokenError as exc:
                return exc
            assert answer.status == "completed", answer
            assert answer.text == expected_text(n)
            assert answer.digest == full_digest(st.id, st.epoch, n)
            return None

        got = await asyncio.gather(*(finish(st) for st in streams))
    for st, where, res in zip(streams, on, got, strict=True):
        if where == victim:  # told by an error frame: not a connection given up on
            assert isinstance(res, LogUnavailable), (st.id, res)
            assert res.code == "unavailable" and "unreachable" in str(res), res
        else:
            assert res is None, (st.id, res)
