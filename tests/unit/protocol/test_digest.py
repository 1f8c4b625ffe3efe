"""The digest chain: its exact bytes, and that any single drop, duplicate, reorder or
altered byte is caught at the first wrong event, however the events are framed."""

from __future__ import annotations

import hashlib
from typing import TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.errors import ChainMismatch, IntegrityError, ProtocolError
from unbroken.protocol import ClientSession, digest
from unbroken.protocol.digest import Chain, ChainVerifier, chain, seed, step
from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start, payload
from unbroken.protocol.frames import Started, Welcome, encode

from .strategies import EPOCH, STREAM, content, encode_frames, renumber, splits, streams

PROPERTY = settings(max_examples=100, deadline=None)
T = TypeVar("T")


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


# ------------------------------------------------------------------ definition
def test_seed_hashes_version_stream_and_epoch() -> None:
    assert seed("abc", "e1") == blake(b"unbroken.v1\x00abc\x00e1")


def test_step_hashes_previous_seq_kind_and_payload() -> None:
    prev = bytes(range(16))
    want = blake(prev + (5).to_bytes(8, "big") + bytes([Kind.TEXT]) + b"text\x00hi")
    assert step(prev, 5, Kind.TEXT, b"text\x00hi") == want
    assert step(prev, 5, int(Kind.TEXT), b"text\x00hi") == want  # plain ints work too


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (chunk(1, Kind.TEXT, "p", "héllo"), "p\x00héllo".encode()),
        (chunk(1, Kind.JSON, "j", ""), b"j\x00"),
        (chunk(1, Kind.DATA, "d", "a\x00b"), b"d\x00a\x00b"),
        (
            part_start(1, "p", "json", "application/json", "{}"),
            b"p\x00json\x00application/json\x00{}",
        ),
        (part_start(1, "p", "text"), b"p\x00text\x00\x00"),
        (part_end(1, "p"), b"p\x00"),
        (part_end(1, "p", "bad"), b"p\x00bad"),
        (end(12, "failed", "boom"), b"failed\x00boom\x0012"),
        (end(3, "completed"), b"completed\x00\x003"),
    ],
)
def test_payload_is_nul_joined_utf8(event: Event, expected: bytes) -> None:
    assert payload(event) == expected


def test_chain_differs_by_stream_and_by_epoch() -> None:
    events = [chunk(1, Kind.TEXT, "t", "x")]
    assert chain("a", "e", events) != chain("b", "e", events)
    assert chain("a", "e", events) != chain("a", "f", events)


def test_verifier_refuses_a_start_digest_that_is_not_the_seed() -> None:
    with pytest.raises(ChainMismatch):
        ChainVerifier(STREAM, EPOCH, 0, b"\x00" * 16)
    assert ChainVerifier(STREAM, EPOCH, 0, seed(STREAM, EPOCH)).digest == seed(STREAM, EPOCH)


def test_verifier_reports_an_unencodable_payload_as_a_mismatch() -> None:
    v = ChainVerifier(STREAM, EPOCH)
    with pytest.raises(ChainMismatch):
        v.feed(chunk(1, Kind.TEXT, "t", "\ud800"))
    with pytest.raises(ChainMismatch):
        v.extend([chunk(1, Kind.TEXT, "t", "\ud800")])


@PROPERTY
@given(streams())
def test_extend_and_feed_agree_with_chain(events: list[Event]) -> None:
    digests = chain(STREAM, EPOCH, events)
    fed = ChainVerifier(STREAM, EPOCH)
    for ev, h in zip(events, digests, strict=True):
        assert fed.feed(ev, h) == h
    extended = ChainVerifier(STREAM, EPOCH)
    assert extended.extend(events, digests[-1]) == digests[-1]
    assert (extended.seq, extended.digest) == (fed.seq, fed.digest) == (len(events), digests[-1])


@PROPERTY
@given(streams(), st.data())
def test_every_way_of_feeding_a_chain_gives_the_same_digests(
    events: list[Event], data: st.DataObject
) -> None:
    """Chain.chunk (the producer), Chain.link (a store: payload bytes), Chain.event and
    Chain.extend (a client: a frame at a time) are one chain: step() link by link."""
    h = seed(STREAM, EPOCH)
    by_step = [h := step(h, ev.seq, ev.kind, payload(ev)) for ev in events]
    writer, store, one_by_one = (Chain.of(STREAM, EPOCH) for _ in range(3))
    for ev, want in zip(events, by_step, strict=True):
        if ev.kind <= Kind.DATA:
            assert writer.chunk(ev.kind, ev.part, ev.body.encode()) == want
        else:
            assert writer.event(ev) == want
        assert store.link(ev.kind, payload(ev)) == want
        assert one_by_one.event(ev) == want
    reader = Chain.of(STREAM, EPOCH)
    for frame in data.draw(splits(events)):
        reader.extend(frame)
    for c in (writer, store, one_by_one, reader):
        assert (c.seq, c.digest) == (len(events), by_step[-1])


@PROPERTY
@given(streams())
def test_chunks_in_one_call_give_the_digests_of_chunk_one_at_a_time(events: list[Event]) -> None:
    """Chain.chunks (the producer digests a batch at its append) is Chain.chunk
    link by link, for every run of chunks of one kind and part."""
    h = seed(STREAM, EPOCH)
    by_step = [h := step(h, ev.seq, ev.kind, payload(ev)) for ev in events]
    batched = Chain.of(STREAM, EPOCH)
    got: list[bytes] = []
    run: list[Event] = []

    def flush() -> None:
        if run:
            last = batched.chunks(run[0].kind, run[0].part, [e.body.encode() for e in run], got)
            assert last == got[-1]
            run.clear()

    for ev in events:
        if ev.kind <= Kind.DATA:
            if run and (run[0].kind, run[0].part) != (ev.kind, ev.part):
                flush()
            run.append(ev)
        else:
            flush()
            got.append(batched.event(ev))
    flush()
    assert got == by_step
    assert (batched.seq, batched.digest) == (len(events), by_step[-1])
    assert batched.chunks(Kind.TEXT, "t", [], got) == by_step[-1]  # nothing: nothing changes
    assert (batched.seq, len(got)) == (len(events), len(events))


def test_chunks_with_an_unencodable_part_change_nothing() -> None:
    c = Chain.of(STREAM, EPOCH)
    out: list[bytes] = []
    with pytest.raises(UnicodeEncodeError):
        c.chunks(Kind.TEXT, "\ud800", [b"a", b"b"], out)
    assert (c.seq, c.digest, out) == (0, seed(STREAM, EPOCH), [])


def test_a_chain_refuses_an_event_out_of_turn_and_unencodable_text_changes_nothing() -> None:
    c = Chain.of(STREAM, EPOCH)
    c.chunk(Kind.TEXT, "t", b"a")
    before = (c.seq, c.digest)
    with pytest.raises(ChainMismatch):
        c.event(chunk(3, Kind.TEXT, "t", "b"))
    with pytest.raises(UnicodeEncodeError):
        c.chunk(Kind.TEXT, "\ud800", b"b")
    with pytest.raises(UnicodeEncodeError):
        c.event(part_end(2, "p", "\udfff"))
    assert (c.seq, c.digest) == before
    c.reset(0, seed(STREAM, EPOCH))  # a producer's rollback to what the log holds
    assert c.chunk(Kind.TEXT, "t", b"a") == before[1]


def test_extend_is_all_or_nothing() -> None:
    events = [chunk(i, Kind.TEXT, "t", str(i)) for i in range(1, 6)]
    v = ChainVerifier(STREAM, EPOCH)
    with pytest.raises(ChainMismatch) as exc:
        v.extend(events, b"\x00" * 16)
    assert exc.value.seq == 5
    assert (v.seq, v.digest) == (0, seed(STREAM, EPOCH))
    with pytest.raises(ChainMismatch) as exc:
        v.extend([*events[:2], events[3]])
    assert exc.value.seq == 4
    assert v.seq == 0


@PROPERTY
@given(st.data())
def test_digests_do_not_depend_on_how_events_are_framed(data: st.DataObject) -> None:
    events = data.draw(streams())
    one, other = data.draw(splits(events)), data.draw(splits(events))
    by_seq = dict(enumerate(chain(STREAM, EPOCH, events), 1))
    for batches in (one, other):
        session = _welcomed_session()
        for batch, wire in zip(batches, encode_frames(batches), strict=True):
            out = session.receive(wire)
            assert out.digest == by_seq[batch[-1].seq]  # type: ignore[union-attr]
            assert out.events == batch  # type: ignore[union-attr]
        assert session.by_stream[STREAM].verifier.digest == by_seq[len(events)]  # type: ignore[union-attr]


# ------------------------------------------------------------------ single faults, per event
def _feed_all(events: list[Event], digests: list[bytes]) -> ChainVerifier:
    """Feed ``events`` with the digest the log has at each position."""
    v = ChainVerifier(STREAM, EPOCH)
    for pos, ev in enumerate(events):
        v.feed(ev, digests[pos] if pos < len(digests) else None)
    return v


def _truncated(events: list[Event]) -> bool:
    """A stream without its ``end``: the client knows it is not complete."""
    return not events or events[-1].kind is not Kind.END


def _fault(events: list[T], fault: str, i: int, j: int) -> list[T]:
    if fault == "drop":
        return events[:i] + events[i + 1 :]
    if fault == "duplicate":
        return events[: i + 1] + events[i:]
    out = list(events)  # reorder: move event i to position j
    out.insert(j, out.pop(i))
    return out


@settings(max_examples=200, deadline=None)
@given(
    streams(max_events=20),
    st.sampled_from(["drop", "duplicate", "reorder"]),
    st.data(),
)
def test_drop_duplicate_or_reorder_is_caught_at_the_first_wrong_event(
    events: list[Event], fault: str, data: st.DataObject
) -> None:
    n = len(events)
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j") if n > 1 else 0
    if fault == "reorder" and n < 2:
        return
    digests = chain(STREAM, EPOCH, events)
    bad = _fault(events, fault, i, j)

    # As delivered: the seq check fires at the first position holding the wrong seq.
    first_wrong = next((p for p, ev in enumerate(bad) if ev.seq != p + 1), None)
    if first_wrong is None:  # dropping the last event (end): a visibly truncated stream
        assert fault == "drop" and i == n - 1
        assert _feed_all(bad, digests).seq == n - 1 and _truncated(bad)
    else:
        with pytest.raises(ChainMismatch) as exc:
            _feed_all(bad, digests)
        assert exc.value.seq == bad[first_wrong].seq

    # Renumbered 1..n as a forger would: the digest fires at the first changed content.
    forged = renumber(bad)
    first_changed = next(
        (p for p, ev in enumerate(forged) if p >= n or content(ev) != content(events[p])),
        None,
    )
    if first_changed is None:
        if len(forged) == n:  # swapped two identical events: nothing changed
            return
        # the same events, just fewer: a truncated stream, seen by the missing end
        assert len(forged) < n and _truncated(forged)
        return
    if first_changed == n:
        # an extra event after the end: the session refuses any frame after end
        assert fault == "duplicate" and events[-1].kind is Kind.END
        return
    with pytest.raises(ChainMismatch) as exc:
        _feed_all(forged, digests)
    assert (exc.value.seq, exc.value.detail) == (first_changed + 1, "digest mismatch")


STRING_FIELDS = {
    Kind.TEXT: ("part", "body"),
    Kind.JSON: ("part", "body"),
    Kind.DATA: ("part", "body"),
    Kind.PART_START: ("part", "part_kind", "mime", "schema"),
    Kind.PART_END: ("part", "error"),
    Kind.END: ("status", "error"),
}


@settings(max_examples=200, deadline=None)
@given(streams(max_events=20), st.data())
def test_an_altered_character_is_caught_at_that_event(
    events: list[Event], data: st.DataObject
) -> None:
    digests = chain(STREAM, EPOCH, events)
    i = data.draw(st.integers(0, len(events) - 1), label="event")
    ev = events[i]
    name = data.draw(st.sampled_from(STRING_FIELDS[ev.kind]), label="field")
    value: str = getattr(ev, name)
    if value:
        pos = data.draw(st.integers(0, len(value) - 1), label="pos")
        new = chr(ord(value[pos]) ^ (1 << data.draw(st.integers(0, 6), label="bit")))
        if 0xD800 <= ord(new) <= 0xDFFF:
            new = "?" if value[pos] != "?" else "!"
        altered = value[:pos] + new + value[pos + 1 :]
    else:
        altered = "x"
    bad = [*events[:i], msgspec.structs.replace(ev, **{name: altered}), *events[i + 1 :]]
    v = ChainVerifier(STREAM, EPOCH)
    for ok in bad[:i]:
        v.feed(ok, digests[ok.seq - 1])
    with pytest.raises(ChainMismatch) as exc:
        v.feed(bad[i], digests[i])
    assert (exc.value.seq, exc.value.detail) == (ev.seq, "digest mismatch")


@settings(max_examples=100, deadline=None)
@given(streams(max_events=20), st.data())
def test_an_altered_kind_or_count_is_caught_at_that_event(
    events: list[Event], data: st.DataObject
) -> None:
    digests = chain(STREAM, EPOCH, events)
    i = data.draw(st.integers(0, len(events) - 1))
    ev = events[i]
    if ev.kind is Kind.END:
        bad = msgspec.structs.replace(ev, count=ev.count + 1)
    else:
        other = data.draw(st.sampled_from([k for k in Kind if k is not ev.kind]))
        bad = msgspec.structs.replace(ev, kind=other)
    v = _feed_all(events[:i], digests)
    with pytest.raises(ChainMismatch):
        v.feed(bad, digests[i])


# ------------------------------------------------------------------ single faults, per frame
def _welcomed_session() -> ClientSession:
    session = ClientSession()
    session.connect()
    session.receive(encode(Welcome(session="s", heartbeat_ms=1000, epoch=EPOCH)))
    session.start("r1", "agent", None)
    session.receive(encode(Started(req="r1", stream=STREAM, epoch=EPOCH)))
    return session


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_flipped_bit_in_any_frame_is_refused_or_harmless(data: st.DataObject) -> None:
    events = data.draw(streams(max_events=20))
    batches = data.draw(splits(events))
    wires = encode_frames(batches)
    k = data.draw(st.integers(0, len(wires) - 1), label="frame")
    damaged = bytearray(wires[k])
    pos = data.draw(st.integers(0, len(damaged) - 1), label="byte")
    damaged[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")

    session = _welcomed_session()
    for wire in wires[:k]:
        session.receive(wire)
    try:
        out = session.receive(bytes(damaged))
    except (ProtocolError, IntegrityError):
        return  # refused: the client resumes from its last good event
    # Accepted only if it means exactly the same events (e.g. "\u001f" -> "\u001F").
    assert out.events == batches[k]  # type: ignore[union-attr]
    for wire in wires[k + 1 :]:
        session.receive(wire)
    assert session.by_stream[STREAM].verifier.digest == chain(STREAM, EPOCH, events)[-1]  # type: ignore[union-attr]


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from(["drop", "duplicate", "reorder"]))
def test_a_dropped_duplicated_or_reordered_frame_raises_integrity_error(
    data: st.DataObject, fault: str
) -> None:
    events = data.draw(streams(max_events=20))
    batches = data.draw(splits(events))
    if len(batches) < 2:
        return
    wires = encode_frames(batches)
    i = data.draw(st.integers(0, len(wires) - 2), label="i")  # never only the last frame
    j = data.draw(st.integers(i + 1, len(wires) - 1), label="j")
    bad = _fault(wires, fault, i, j) if fault != "reorder" else _swap(wires, i, j)
    first_wrong = next(p for p, wire in enumerate(bad) if wire != wires[p])
    session = _welcomed_session()
    for wire in bad[:first_wrong]:
        session.receive(wire)
    with pytest.raises(IntegrityError):
        session.receive(bad[first_wrong])


def _swap(items: list[T], i: int, j: int) -> list[T]:
    out = list(items)
    out[i], out[j] = out[j], out[i]
    return out


def test_an_altered_event_with_the_original_h_raises_integrity_error_naming_its_seq() -> None:
    events = [chunk(1, Kind.TEXT, "t", "hello"), chunk(2, Kind.TEXT, "t", "world")]
    wire = encode_frames([events])[0]
    session = _welcomed_session()
    with pytest.raises(IntegrityError) as exc:
        session.receive(wire.replace(b"world", b"w0rld"))
    assert exc.value.stream == STREAM and exc.value.seq == 2
    assert session.receive(wire).events == events  # type: ignore[union-attr]


def test_digest_module_is_reexported() -> None:
    assert digest.DIGEST_SIZE == 16


def test_chains_share_one_packer_per_part_prefix_length() -> None:
    """A stream's chain holds no struct of its own (per-stream memory, issue 21)."""
    a, b = Chain.of("s1", "e"), Chain.of("s2", "e")
    assert a._head is b._head
    a._set_part("ab")
    b._set_part("cd")
    assert a._head is b._head
    assert a.chunk(1, "ab", b"x") != b.chunk(1, "cd", b"x")  # the prefix still counts
