"""StreamLog conformance: what the hub and every reader rely on, checked against
each backend (``make_log``: the memory log and Redis) with the same properties.

Each example builds a log of its own and runs in an event loop of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unbroken.errors import StaleProducer, StreamTooLarge
from unbroken.protocol.digest import Chain, chain, seed
from unbroken.protocol.events import CHUNK_KINDS, Event, Kind, chunk
from unbroken.protocol.frames import Events, decode_server, encode_events_frame, events_of
from unbroken.server.producer import Producer
from unbroken.store.base import Created, Retention, StreamLog
from unbroken.store.batches import batch_of, end_batch

from ...unit.protocol.strategies import streams
from .answers import long_answers
from .conftest import MakeLog

pytestmark = pytest.mark.timeout(180)
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def run(make_log: MakeLog, body: Callable[[StreamLog], Awaitable[None]], **kw: object) -> None:
    """``body`` on a new log, in a loop of its own; the log is closed afterwards."""

    async def main() -> None:
        log = make_log(**kw)
        try:
            await body(log)
        finally:
            await log.close()

    asyncio.run(main())


async def write(log: StreamLog, events: list[Event], flushes: set[int], req: str = "r") -> Created:
    """Write ``events`` as an agent does (the producer; the last, ``end``, by finishing),
    appending what is pending after each event whose index is in ``flushes``."""
    created = await log.create("owner", req, 0.0)
    producer = Producer(log, created.stream, created.epoch, created.producer)
    for i, ev in enumerate(events[:-1]):
        if ev.kind in CHUNK_KINDS:
            producer.add_chunk(ev.kind, ev.part, ev.body)
        else:
            producer.add(ev)
        if i in flushes:
            await producer.flush()
    last = events[-1]
    await producer.finish(last.status, last.error, 1.0)
    return created


@PROPERTY
@given(
    events=streams(max_events=40) | long_answers(),
    flushes=st.sets(st.integers(0, 2000), max_size=40),
    data=st.data(),
)
def test_appended_events_read_back_exactly_from_any_after_with_the_chains_digests(
    make_log: MakeLog, events: list[Event], flushes: set[int], data: st.DataObject
) -> None:
    async def body(log: StreamLog) -> None:
        c = await write(log, events, flushes)
        digests = chain(c.stream, c.epoch, events)
        h0 = seed(c.stream, c.epoch)
        assert list((await log.read_all(c.stream))[1]) == events  # type: ignore[attr-defined]
        assert list(await log.read_digests(c.stream)) == digests  # type: ignore[attr-defined]
        after = data.draw(st.integers(0, len(events)), label="after")
        budget = data.draw(st.sampled_from([1, 40, 300, 5000, 1 << 20]), label="max_bytes")
        kinds = {e.part: e.part_kind for e in events[:after] if e.kind is Kind.PART_START}
        reader = Chain(digests[after - 1] if after else h0, after)
        got: list[Event] = []
        while (batch := await log.read(c.stream, after + len(got), budget)) is not None:
            assert batch.first == after + len(got) + 1 and batch.count >= 1
            frame = decode_server(
                encode_events_frame(c.stream, batch.first, batch.items, batch.digest)
            )
            assert isinstance(frame, Events)
            evs = events_of(frame, kinds)
            assert len(evs) == batch.count and batch.last_kind == evs[-1].kind
            reader.extend(evs, batch.digest)  # the log's digest is the chain's
            got += evs
        assert got == events[after:]
        for seq in {0, len(events), *data.draw(st.lists(st.integers(0, len(events))), "seqs")}:
            assert await log.digest_at(c.stream, seq) == (digests[seq - 1] if seq else h0)
        assert await log.digest_at(c.stream, len(events) + 1) is None

    run(make_log, body)


@PROPERTY
@given(events=streams(max_events=30), flushes=st.sets(st.integers(0, 30)))
def test_an_ended_stream_has_its_status_error_head_and_digest_and_readers_heard_it(
    make_log: MakeLog, events: list[Event], flushes: set[int]
) -> None:
    async def body(log: StreamLog) -> None:
        heads: list[int] = []
        c = await log.create("owner", "r", 0.0)
        log.subscribe(c.stream, lambda _s, head: heads.append(head))
        meta = await log.meta(c.stream)
        assert meta is not None and (meta.status, meta.head, meta.owner) == ("running", 0, "owner")
        assert meta.digest == seed(c.stream, c.epoch)
        again = await write(log, events, flushes)  # the same request: the same stream
        assert (again.stream, again.producer, again.created) == (c.stream, c.producer, False)
        meta = await log.meta(c.stream)
        last = events[-1]
        assert meta is not None
        assert (meta.status, meta.error, meta.head) == (last.status, last.error, len(events))
        assert meta.digest == chain(c.stream, c.epoch, events)[-1] and meta.ended == 1.0
        assert heads == sorted(heads) and heads[-1] == len(events)
        read = await log.read(c.stream, len(events) - 1, 1 << 20)
        assert read is not None and read.count == 1 and read.last_kind == Kind.END
        assert await log.read(c.stream, len(events), 1 << 20) is None
        assert await log.meta("NoSuchStream0123456789") is None

    run(make_log, body)


async def test_a_request_makes_one_stream_per_owner_and_scope(make_log: MakeLog) -> None:
    log = make_log()
    try:
        a = await log.create("o", "same", 0.0)
        assert a.created and a.epoch == log.epoch
        b = await log.create("o", "same", 1.0)
        others = [await log.create("p", "same", 1.0), await log.create("o", "same", 1.0, "s")]
        assert (b.stream, b.producer, b.created) == (a.stream, a.producer, False)
        assert len({a.stream, *(o.stream for o in others)}) == 3
        assert all(o.created for o in others)
    finally:
        await log.close()


@PROPERTY
@given(events=streams(max_events=30, with_end=False), data=st.data())
def test_appends_are_fenced_idempotent_and_append_only_what_is_new(
    make_log: MakeLog, events: list[Event], data: st.DataObject
) -> None:
    n = len(events)
    k = data.draw(st.integers(1, n), label="first batch")
    m = data.draw(st.integers(k, n), label="overlapping batch")

    async def body(log: StreamLog) -> None:
        c = await log.create("owner", "r", 0.0)
        h0 = seed(c.stream, c.epoch)
        first, overlap = batch_of(events[:k], h0), batch_of(events[:m], h0)
        with pytest.raises(StaleProducer):
            await log.append(c.stream, "not-the-producer", first)
        with pytest.raises(StaleProducer):
            await log.append("NoSuchStream0123456789", c.producer, first)
        assert (await log.meta(c.stream)).head == 0  # type: ignore[union-attr]
        assert await log.append(c.stream, c.producer, first) == k
        assert await log.append(c.stream, c.producer, first) == k  # a retry: no duplicate
        assert await log.append(c.stream, c.producer, overlap) == m  # only k+1..m added
        assert list((await log.read_all(c.stream))[1]) == events[:m]  # type: ignore[attr-defined]
        meta = await log.meta(c.stream)
        assert meta is not None and meta.head == m and meta.digest == overlap.digests[-1]
        with pytest.raises(StaleProducer):
            await log.finish(c.stream, "not-the-producer", "completed", "", 1.0)
        assert (await log.meta(c.stream)).status == "running"  # type: ignore[union-attr]
        await log.append(c.stream, c.producer, end_batch(m + 1, meta.digest, "cancelled", "x"))
        await log.finish(c.stream, c.producer, "cancelled", "x", 1.0)
        more = batch_of([chunk(m + 2, Kind.TEXT, "t", "late")], b"\0" * 16)
        with pytest.raises(StaleProducer):  # an ended stream takes nothing more
            await log.append(c.stream, c.producer, more)
        meta = await log.meta(c.stream)
        assert meta is not None and (meta.status, meta.head) == ("cancelled", m + 1)

    run(make_log, body)


@PROPERTY
@given(
    limit=st.integers(1, 400),
    sizes=st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=8), min_size=1, max_size=8),
)
def test_a_stream_holds_at_most_max_stream_bytes_but_its_end_always_fits(
    make_log: MakeLog, limit: int, sizes: list[list[int]]
) -> None:
    async def body(log: StreamLog) -> None:
        c = await log.create("owner", "r", 0.0)
        held, head, digest = 0, 0, seed(c.stream, c.epoch)
        for batch_sizes in sizes:
            evs = [chunk(head + 1 + i, Kind.TEXT, "t", "x" * n) for i, n in enumerate(batch_sizes)]
            batch = batch_of(evs, digest)
            if held + len(batch.items) > limit:
                with pytest.raises(StreamTooLarge):
                    await log.append(c.stream, c.producer, batch)
            else:
                assert await log.append(c.stream, c.producer, batch) == head + len(evs)
                held, head, digest = held + len(batch.items), head + len(evs), batch.digests[-1]
            meta = await log.meta(c.stream)
            assert meta is not None and (meta.head, meta.nbytes) == (head, held)
        await log.append(c.stream, c.producer, end_batch(head + 1, digest, "failed", "too big"))
        await log.finish(c.stream, c.producer, "failed", "too big", 1.0)
        meta = await log.meta(c.stream)
        assert meta is not None and (meta.status, meta.head) == ("failed", head + 1)
        events = (await log.read_all(c.stream))[1]  # type: ignore[attr-defined]
        assert events[-1].kind is Kind.END and events[-1].error == "too big"

    run(make_log, body, retention=Retention(max_stream_bytes=limit))
