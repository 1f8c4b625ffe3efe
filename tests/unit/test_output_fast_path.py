"""``Output.text`` / ``reasoning`` append a delta to the producer's pending run
directly while the producer says that run is the one written to (``Producer._hot``):
whatever mix of writes, parts, flushes, loop ticks, digest reads and failed appends,
the log, the chain, the errors raised, ``pending`` and the batch boundaries are those
of the same writes through ``Producer.add_chunk``, one by one (the path before)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from unbroken.protocol.digest import Chain, step
from unbroken.protocol.events import payload
from unbroken.server.agent import Output
from unbroken.server.producer import Producer
from unbroken.store.base import AppendBatch, Retention
from unbroken.store.memory import MemoryStore


class _SlowProducer(Producer):
    """The reference: never offers the fast path, every write goes through add_chunk."""

    __slots__ = ()

    def add_chunk(self, kind: int, part: str, body: str) -> None:
        try:
            super().add_chunk(kind, part, body)
        finally:
            self._hot = None


class _BatchedProducer(Producer):
    """Appends a chunk written alone in its tick as a batch of one (``append_nowait``),
    as before the memory log's one-chunk append (``append_chunk_nowait``)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._append_chunk = None


class _SlowStore:
    """The memory log as a store with I/O (no ``append_nowait``): each append waits a
    loop tick, so writes land while a batch is in flight (as with Redis)."""

    def __init__(self, store: MemoryStore, seen: list[tuple[int, int]]) -> None:
        self._store, self._seen = store, seen

    async def append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        self._seen.append((batch.first, batch.count))
        await asyncio.sleep(0)
        return self._store.append_nowait(stream, producer, batch)

    def __getattr__(self, name: str) -> Any:
        if name == "append_nowait":
            raise AttributeError(name)
        return getattr(self._store, name)


deltas = st.one_of(
    st.sampled_from(["a", "bc", "", 'q"', "é", "x\ud800", "\n", b"by", 7]),
    st.text(max_size=4),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("text"), deltas, st.sampled_from([None, None, "named", "other"])),
        st.tuples(st.just("reasoning"), deltas, st.none()),
        st.tuples(st.just("json"), st.sampled_from(['{"a":', "1}", "[", "é"]), st.none()),
        st.tuples(st.just("end"), st.sampled_from(["text", "reasoning", "named", "j"]), st.none()),
        st.tuples(st.sampled_from(["digest", "flush", "tick"]), st.none(), st.none()),
    ),
    max_size=80,
)


async def _run(
    cls: type[Producer], script: list[tuple[str, Any, Any]], max_batch: int, cap: int, io: bool
) -> dict[str, Any]:
    store = MemoryStore(Retention(max_stream_bytes=cap))
    c = await store.create("me", "r", 0.0)
    batches: list[tuple[int, int]] = []
    if io:
        p = cls(_SlowStore(store, batches), c.stream, c.epoch, c.producer, max_batch=max_batch)  # type: ignore[arg-type]
    else:
        p = cls(store, c.stream, c.epoch, c.producer, max_batch=max_batch)
        append = store.append_nowait

        def spy(stream: str, producer: str, batch: AppendBatch) -> int:
            batches.append((batch.first, batch.count))
            return append(stream, producer, batch)

        p._append_nowait = spy
    out = Output(p, max_chunk=16)  # deltas over 4 characters are split
    seen: list[Any] = []
    for op, arg, part in script:
        try:
            if op == "text":
                await out.text(arg, part)
            elif op == "reasoning":
                await out.reasoning(arg)
            elif op == "json":
                if "j" not in out.open_parts:
                    await out.start_part("j", "json")
                await out.chunk("j", arg)
            elif op == "end":
                if arg == "text":
                    await out.end_text()
                elif arg == "reasoning":
                    await out.end_reasoning()
                else:
                    await out.end_part(arg)
            elif op == "digest":
                assert len(p.digest) == 16  # (reading it digests what waits)
            elif op == "flush":
                await out.flush()
            else:
                await asyncio.sleep(0)
            seen.append(None)
        except Exception as exc:
            seen.append(type(exc).__name__)
        seen.append((p.seq, p.pending))
    try:
        await out.close_open_parts()
        await p.flush()
    except Exception as exc:
        seen.append(type(exc).__name__)
    _, events = await store.read_all(c.stream)
    digests = list(await store.read_digests(c.stream))
    h = Chain.of(c.stream, store.epoch).digest
    assert digests == [h := step(h, ev.seq, ev.kind, payload(ev)) for ev in events]
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1))
    if events:
        assert p.logged == (len(events), digests[-1])
    s = store._streams[c.stream]
    log = (bytes(s.buf), list(s.ends), list(s.run_seq), bytes(s.run_kind), list(s.run_part))
    return {"seen": seen, "events": events, "batches": batches, "log": (*log, len(s.ckpt))}


_IN_FLIGHT: list[tuple[str, Any, Any]] = [
    *[("text", "aaaa", None)] * 12,
    *[("tick", None, None)] * 2,  # the append is in flight (and fails: too large) …
    *[("text", "bbbb", None)] * 3,  # … while these are written
    *[("tick", None, None)] * 3,
    *[("text", "cccc", None)] * 3,  # the error is raised, not the fast path taken
]


@example(script=_IN_FLIGHT, max_batch=512, cap=80, io=True)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=ops,
    max_batch=st.sampled_from([1, 3, 512]),
    cap=st.sampled_from([80, 1 << 20]),
    io=st.booleans(),
)
def test_the_fast_path_writes_what_add_chunk_would(
    script: list[tuple[str, Any, Any]], max_batch: int, cap: int, io: bool
) -> None:
    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            await _run(Producer, script, max_batch, cap, io),
            await _run(_SlowProducer, script, max_batch, cap, io),
        )

    fast, slow = asyncio.run(both())
    assert fast == slow


async def test_the_fast_path_is_taken_for_a_run_of_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """(What the property above compares against must differ: the fast path is used.)"""
    store = MemoryStore()
    c = await store.create("me", "r", 0.0)
    p = Producer(store, c.stream, c.epoch, c.producer)
    out = Output(p)
    await out.text("a")
    assert p._hot == "text"
    calls: list[tuple[Any, ...]] = []
    real = Producer.add_chunk

    def counted(self: Producer, *a: Any) -> None:
        calls.append(a)
        real(self, *a)

    monkeypatch.setattr(Producer, "add_chunk", counted)
    for t in ("b", "c", "d"):
        await out.text(t)
    assert calls == [] and p.pending == 5  # the part_start and four deltas
    await out.text("é")  # not ASCII: checked the long way
    assert calls == [(1, "text", "é")]
    await p.flush()
    _, events = await store.read_all(c.stream)
    assert [e.body for e in events[1:]] == ["a", "b", "c", "d", "é"]


async def test_the_memory_log_takes_a_batch_at_any_base() -> None:
    """``AppendBatch.base``: the log's own ends when it holds that many bytes (the
    producer's case), shifted otherwise, and a batch that overlaps the head (skip) is
    cut at the right byte whatever its base."""
    from array import array

    from unbroken.store.base import EventRun
    from unbroken.store.batches import batch_of

    async def log_of(batches: list[AppendBatch]) -> tuple[list[Any], bytes]:
        store = MemoryStore()
        c = await store.create("me", "r", 0.0)
        for b in batches:
            store.append_nowait(c.stream, c.producer, b)
        _, events = await store.read_all(c.stream)
        read = await store.read(c.stream, 0, 1 << 20)
        assert read is not None
        return [(e.seq, e.body) for e in events], read.items

    def rebase(b: AppendBatch, base: int) -> AppendBatch:
        ends = array("I", [e + base for e in b.ends])
        return AppendBatch(b.first, b.count, b.items, ends, b.runs, b.digests, base)

    from unbroken.protocol.events import Event, Kind

    def texts(first: int, bodies: list[str], prev: bytes) -> AppendBatch:
        evs = [Event(first + i, Kind.TEXT, part="t", body=t) for i, t in enumerate(bodies)]
        b = batch_of(evs, prev)
        if first > 1:  # continues the log's run
            b.runs = []
        return b

    one = texts(1, ["ab", "c", 'd"'], b"\x00" * 16)
    two = texts(4, ["é", "f"], one.digests[-1])
    want = await log_of([one, two])
    size = len(one.items)
    for base in (0, size, size + 7, 3):  # the log's size, and not
        assert await log_of([one, rebase(two, base)]) == want
        both = AppendBatch(
            1,
            5,
            bytes(one.items) + bytes(two.items),
            array("I", list(one.ends) + [e + size for e in two.ends]),
            [EventRun(1, Kind.TEXT, "t")],
            one.digests + two.digests,
        )
        # the second append repeats events 1..3 (skipped) and adds 4..5
        assert await log_of([one, rebase(both, base)]) == want


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops, max_batch=st.sampled_from([1, 3, 512]), cap=st.sampled_from([80, 1 << 20]))
def test_a_chunk_alone_in_its_tick_is_appended_as_a_batch_of_one_would_be(
    script: list[tuple[str, Any, Any]], max_batch: int, cap: int
) -> None:
    """The memory log's one-chunk append (a paced token, no batch) leaves the log, the
    chain, the errors raised (a stream too large) and ``pending`` as a batch of one."""

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            await _run(Producer, script, max_batch, cap, False),
            await _run(_BatchedProducer, script, max_batch, cap, False),
        )

    alone, batched = asyncio.run(both())
    del alone["batches"], batched["batches"]  # (the one-chunk appends are no batches)
    assert alone == batched


async def test_a_chunk_alone_in_its_tick_takes_the_one_chunk_append() -> None:
    """(What the property above compares must differ: the one-chunk append is used.)"""
    store = MemoryStore()
    c = await store.create("me", "r", 0.0)
    p = Producer(store, c.stream, c.epoch, c.producer)
    out = Output(p)
    await out.text("a")  # the part's start and "a": a batch
    await asyncio.sleep(0)
    calls: list[int] = []
    real = store.append_chunk_nowait

    def counted(*args: Any) -> int:
        calls.append(args[2])
        return real(*args)

    p._append_chunk = counted
    for t in ("b", "c"):
        await out.text(t)
        await asyncio.sleep(0)  # its tick's flush
    assert calls == [3, 4] and p.logged[0] == 4
    _, events = await store.read_all(c.stream)
    assert [e.body for e in events[1:]] == ["a", "b", "c"]
