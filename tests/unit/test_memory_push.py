"""The memory log's one-chunk append (``append_chunk_nowait``: a paced token, no
batch) and its push to the stream's only reader (``subscribe_live``): the log it
leaves is byte for byte the one a batch of one leaves, a chunk that does not fit
changes nothing, and the push goes to the one reader that gave it, never while
others listen (they are each told as after any append)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.errors import LogDiverged, LogFull, StaleProducer, StreamTooLarge
from unbroken.protocol.digest import Chain
from unbroken.protocol.events import CHUNK_KINDS, Event, Kind, part_end
from unbroken.store.base import Retention
from unbroken.store.batches import batch_of
from unbroken.store.memory import MemoryStore


def _internals(store: MemoryStore, stream: str) -> tuple[Any, ...]:
    s = store._streams[stream]
    return (
        bytes(s.buf),
        list(s.ends),
        list(s.run_seq),
        bytes(s.run_kind),
        list(s.run_part),
        list(s.parts),
        bytes(s.ckpt),
        s.head_digest,
        store.total_bytes,
    )


def _events(script: list[tuple[int, str, str]]) -> list[Event]:
    """Events 1.. of ``(kind, part, body)``; kind 0 is a ``part_end`` of ``part``."""
    out: list[Event] = []
    for i, (kind, part, body) in enumerate(script, 1):
        if kind:
            out.append(Event(i, Kind(kind), part=part, body=body))
        else:
            out.append(part_end(i, part))
    return out


script = st.lists(
    st.tuples(
        st.sampled_from([int(Kind.TEXT), int(Kind.TEXT), int(Kind.JSON), int(Kind.DATA), 0]),
        st.sampled_from(["a", "b"]),
        st.text(max_size=5),  # quotes, backslashes, controls, non-ASCII: escaped items
    ),
    min_size=33,  # past a checkpoint (every 32 events): resumes between two of them
    max_size=100,
)


@settings(max_examples=40, deadline=None)
@given(script=script)
def test_a_chunk_appended_alone_leaves_the_log_a_batch_of_one_leaves(
    script: list[tuple[int, str, str]],
) -> None:
    import asyncio

    events = _events(script)  # (hypothesis's text holds no lone surrogate)

    async def both() -> tuple[Any, Any]:
        batched, alone = MemoryStore(), MemoryStore()
        a = await batched.create("me", "r", 0.0)
        b = await alone.create("me", "r", 0.0)
        chain = Chain.of(b.stream, b.epoch)
        prev_a, prev_b = Chain.of(a.stream, a.epoch).digest, chain.digest
        last: tuple[int, str] | None = None
        for ev in events:
            one = batch_of([ev], prev_a)
            run = (int(ev.kind), ev.part) if ev.kind in CHUNK_KINDS else None
            if run is not None and run == last:
                one.runs = []  # it continues the log's run (as the producer lists it)
            batched.append_nowait(a.stream, a.producer, one)
            prev_a = one.digests[-1]
            if run is not None:
                digest = chain.chunk(int(ev.kind), ev.part, ev.body.encode())
                n = alone.append_chunk_nowait(
                    b.stream,
                    b.producer,
                    ev.seq,
                    int(ev.kind),
                    ev.part,
                    run != last,
                    ev.body,
                    digest,
                )
                assert n > 0
            else:
                single = batch_of([ev], prev_b)
                chain.reset(ev.seq, single.digests[-1])
                alone.append_nowait(b.stream, b.producer, single)
            prev_b = chain.digest
            last = run
        # same bytes, offsets, runs, checkpoints and counts; the seeds differ, so the
        # digests are compared as the chain each log recomputes from what it holds
        ia, ib = _internals(batched, a.stream), _internals(alone, b.stream)
        assert ia[:6] == ib[:6] and ia[8] == ib[8] and len(ia[6]) == len(ib[6])
        digests = [chain.digest for chain in [Chain.of(b.stream, b.epoch)]]
        digests += await alone.read_digests(b.stream)  # recomputed from what it holds
        assert digests[-1] == ib[7] == prev_b
        for seq in range(len(events) + 1):  # every resume point, checkpoints or not
            assert await alone.digest_at(b.stream, seq) == digests[seq]
        assert (await alone.read_all(b.stream))[1] == events
        return ia, ib

    asyncio.run(both())


async def _one(retention: Retention | None = None) -> tuple[MemoryStore, str, str, Chain]:
    store = MemoryStore(retention)
    c = await store.create("me", "r", 0.0)
    return store, c.stream, c.producer, Chain.of(c.stream, c.epoch)


def _append(store: MemoryStore, stream: str, producer: str, chain: Chain, body: str) -> int:
    seq = chain.seq + 1
    digest = chain.chunk(1, "text", body.encode())
    return store.append_chunk_nowait(stream, producer, seq, 1, "text", seq == 1, body, digest)


async def test_a_chunk_that_does_not_fit_changes_nothing() -> None:
    store, stream, producer, chain = await _one(Retention(max_stream_bytes=12))
    assert _append(store, stream, producer, chain, "abc") == 6  # "abc",
    before = _internals(store, stream)
    with pytest.raises(StreamTooLarge):
        _append(store, stream, producer, Chain(chain.digest, chain.seq), "defgh")
    assert _internals(store, stream) == before

    store, stream, producer, chain = await _one(Retention(max_total_bytes=10))
    assert _append(store, stream, producer, chain, "ab") == 5
    before = _internals(store, stream)
    with pytest.raises(LogFull):
        _append(store, stream, producer, Chain(chain.digest, chain.seq), "cdef")
    assert _internals(store, stream) == before


async def test_the_log_grows_by_a_small_margin() -> None:
    """A paced stream's log, a token at a time, holds little spare room (CPython's
    ~1/8 margin of a bytearray; msgspec's ``encode_into`` leaves half again: a few
    MB of RSS at 1,000 streams)."""
    store, stream, producer, chain = await _one()
    for i in range(400):
        _append(store, stream, producer, chain, f"{i * 0.05:014.6f}00003 ")
    buf = store._streams[stream].buf
    assert len(buf) == 400 * 23
    assert isinstance(buf, bytearray) and buf.__alloc__() <= 1.2 * len(buf) + 64


async def test_a_chunk_out_of_place_is_refused_or_ignored() -> None:
    store, stream, producer, chain = await _one()
    _append(store, stream, producer, chain, "a")
    before = _internals(store, stream)
    digest = store._streams[stream].head_digest
    # a repeated append (event 1 again): nothing appended
    assert store.append_chunk_nowait(stream, producer, 1, 1, "text", False, "a", digest) == 0
    with pytest.raises(LogDiverged):  # event 3 after 1: a gap
        store.append_chunk_nowait(stream, producer, 3, 1, "text", False, "c", digest)
    with pytest.raises(StaleProducer):
        store.append_chunk_nowait(stream, "someone-else", 2, 1, "text", False, "b", digest)
    assert _internals(store, stream) == before
    await store.finish(stream, producer, "completed", "", 1.0)
    with pytest.raises(StaleProducer):
        store.append_chunk_nowait(stream, producer, 2, 1, "text", False, "b", digest)


async def test_the_push_goes_to_the_only_reader_that_gave_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, stream, producer, chain = await _one()
    told: list[tuple[str, int]] = []
    pushed: list[tuple[Any, ...]] = []
    answer = {"take": True}

    def listener(s: str, head: int) -> None:
        told.append((s, head))

    def push(s: str, seq: int, kind: int, part: str, enc: bytes, digest: bytes) -> bool:
        pushed.append((s, seq, kind, part, enc, digest))
        if answer["take"] is None:
            raise RuntimeError("reader bug")
        return answer["take"]

    unsubscribe = store.subscribe_live(stream, listener, push)
    _append(store, stream, producer, chain, 'say "hi"')
    assert pushed == [(stream, 1, 1, "text", b'"say \\"hi\\""', chain.digest)]
    assert told == []  # taken: nobody else to tell

    answer["take"] = False  # declined: told the usual way
    _append(store, stream, producer, chain, "b")
    assert len(pushed) == 2 and told == [(stream, 2)]

    other: list[int] = []
    unsubscribe_other = store.subscribe(stream, lambda _s, head: other.append(head))
    answer["take"] = True
    _append(store, stream, producer, chain, "c")  # two readers: no push, both told
    assert len(pushed) == 2 and told[-1] == (stream, 3) and other == [3]

    unsubscribe_other()  # the one reader again: pushed to
    _append(store, stream, producer, chain, "d")
    assert len(pushed) == 3 and told[-1] == (stream, 3)

    answer["take"] = None  # a push that raises: logged, and the reader is told
    with caplog.at_level(logging.ERROR):
        _append(store, stream, producer, chain, "e")
    assert told[-1] == (stream, 5)
    assert any(r.getMessage().startswith("stream push failed") for r in caplog.records)

    # any other append tells the listeners, never the push
    answer["take"] = True
    seq = chain.seq + 1
    store.append_nowait(stream, producer, batch_of([part_end(seq, "text")], chain.digest))
    assert len(pushed) == 4 and told[-1] == (stream, 6)

    unsubscribe()
    _append(store, stream, producer, Chain(store._streams[stream].head_digest, 6), "f")
    assert len(pushed) == 4 and told[-1] == (stream, 6)
