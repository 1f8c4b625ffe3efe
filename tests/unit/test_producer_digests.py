"""The producer digests a batch at its append (Chain.chunks), not per write: what
the log holds is still the chain event by event, whatever mix of writes and flushes."""

from __future__ import annotations

import pytest

from unbroken.protocol.digest import Chain, step
from unbroken.protocol.events import Event, Kind, part_end, part_start, payload
from unbroken.server.producer import Producer
from unbroken.store.memory import MemoryStore


async def _producer() -> tuple[MemoryStore, Producer, str]:
    store = MemoryStore()
    c = await store.create("me", "r", 0.0)
    return store, Producer(store, c.stream, c.epoch, c.producer), c.stream


async def test_digests_of_mixed_runs_and_flushes_are_the_chain() -> None:
    store, p, stream = await _producer()
    p.add_chunk(Kind.TEXT, "text", "a")
    p.add_chunk(Kind.TEXT, "text", "b")
    assert p.seq == 2  # written, not digested yet: seq counts them
    p.add(part_start(0, "j", "json"))
    p.add_chunk(Kind.JSON, "j", '{"x":')
    p.add_chunk(Kind.TEXT, "text", "c")  # another run: the one before is digested first
    p.add_chunk(Kind.JSON, "j", "1}")
    mid = p.digest  # asking for it digests what waits
    await p.flush()
    p.add(part_end(0, "j"))
    for t in ("d", "e", "f"):
        p.add_chunk(Kind.TEXT, "text", t)
    await p.flush()
    _, events = await store.read_all(stream)
    h = Chain.of(stream, store.epoch).digest
    want = [h := step(h, ev.seq, ev.kind, payload(ev)) for ev in events]
    assert await store.read_digests(stream) == want
    assert len(events) == p.seq == 10
    assert mid == want[5]
    assert p.digest == want[-1] and p.logged == (10, want[-1])
    assert [e.body for e in events if e.kind is Kind.TEXT] == list("abcdef")


@pytest.mark.parametrize("before", [0, 1, 2, 5])
async def test_a_delta_that_is_not_a_str_is_refused_at_the_write(before: int) -> None:
    """bytes pass ``isascii()`` too: refused when written (the batch is encoded only at
    the append, where it would fail every later append and lose the text before it)."""
    store, p, stream = await _producer()
    for i in range(before):
        p.add_chunk(Kind.TEXT, "text", f"ok{i}")
    for bad in (b"oops", bytearray(b"oops"), 7):
        with pytest.raises(TypeError, match="must be a str"):
            p.add_chunk(Kind.TEXT, "text", bad)  # type: ignore[arg-type]
    assert (p.seq, p.pending) == (before, before)
    await p.flush()
    _, events = await store.read_all(stream)
    assert [e.body for e in events] == [f"ok{i}" for i in range(before)]


async def test_a_str_subclass_is_written_as_its_text() -> None:
    class Markup(str):
        pass

    store, p, stream = await _producer()
    for i in range(4):  # (the one-or-two path and the batch path)
        p.add_chunk(Kind.TEXT, "text", Markup(f"<b>{i}</b>"))
    await p.flush()
    _, events = await store.read_all(stream)
    assert [e.body for e in events] == [f"<b>{i}</b>" for i in range(4)]
    assert all(type(e.body) is str for e in events)


async def test_a_write_with_an_unencodable_part_changes_nothing() -> None:
    store, p, stream = await _producer()
    p.add_chunk(Kind.TEXT, "text", "a")
    before = (p.seq, p.pending)
    with pytest.raises(UnicodeEncodeError):
        p.add_chunk(Kind.TEXT, "bad\ud800", "x")
    with pytest.raises(UnicodeEncodeError):
        p.add_chunk(Kind.TEXT, "text", "y\ud800")
    assert (p.seq, p.pending) == before
    p.add_chunk(Kind.TEXT, "text", "b")
    await p.flush()
    _, events = await store.read_all(stream)
    assert events == [
        Event(1, Kind.TEXT, part="text", body="a"),
        Event(2, Kind.TEXT, part="text", body="b"),
    ]
    h = Chain.of(stream, store.epoch).digest
    assert (await store.read_digests(stream))[-1] == p.digest
    assert p.digest == step(step(h, 1, 1, b"text\x00a"), 2, 1, b"text\x00b")


@pytest.mark.parametrize(
    "bodies",
    [
        ["one"],  # a paced agent's append: item by item
        ["plain", "ascii", ""],  # no escape: the run's items come from one JSON array
        ["é ü", "\u2028", "😀 x"],  # not ASCII, still no escape
        ["a", 'q"uote', "back\\slash", "nl\n", "\x00", "b"],  # escapes: item by item
    ],
)
async def test_a_run_of_chunks_is_stored_as_each_chunk_alone_would_be(bodies: list[str]) -> None:
    from unbroken.protocol.items import chunk_into

    store, p, stream = await _producer()
    for b in bodies:
        p.add_chunk(Kind.TEXT, "text", b)
    batch = p._take()  # what the log is given
    want = bytearray()
    ends = []
    for b in bodies:
        chunk_into(b, want, -1)
        want += b","
        ends.append(len(want))
    assert bytes(batch.items) == bytes(want)
    assert list(batch.ends) == ends
    store.append_nowait(stream, p.token, batch)
    _, events = await store.read_all(stream)
    assert [e.body for e in events] == bodies
    h = Chain.of(stream, store.epoch).digest
    assert batch.digests == [h := step(h, ev.seq, ev.kind, payload(ev)) for ev in events]
