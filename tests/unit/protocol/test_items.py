"""The items codec: one layout for frames and for what the stores keep."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.protocol import frames, items
from unbroken.protocol.events import CHUNK_KINDS, Event, Kind, payload
from unbroken.store.batches import batch_of

from .strategies import STREAM, streams

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(streams())
def test_a_stored_item_decodes_to_its_event_and_gives_its_payload(events: list[Event]) -> None:
    for ev in events:
        enc = items.encode_one(ev)
        assert items.decode_one(ev.seq, ev.kind, items.run_part(ev), enc) == ev
        assert items.payload_of(ev.kind, items.run_part(ev), enc) == payload(ev)
        if ev.kind in CHUNK_KINDS:  # a chunk is kept in its bare form: its body
            assert json.loads(enc) == ev.body


@PROPERTY
@given(streams())
def test_the_frame_layout_round_trips(events: list[Event]) -> None:
    wire = frames.encode_events_frame(STREAM, 1, items.encode(events), b"\0" * 16)
    frame = frames.decode_server(wire)
    assert isinstance(frame, frames.Events)
    assert items.decode(frame.seq, frame.items) == events == frames.events_of(frame)
    assert frames.encode_items is items.encode


@PROPERTY
@given(streams(), st.data())
def test_the_items_array_of_stored_runs_decodes_to_the_events(
    events: list[Event], data: st.DataObject
) -> None:
    """As a store reads: stored items (each with its comma), a segment per run, each
    cut anywhere (a read that starts or stops mid-run, a run spread over entries)."""
    batch = batch_of(events, b"\0" * 16)
    starts = [r.seq for r in batch.runs] + [len(events) + 1]
    first = data.draw(st.integers(1, len(events)), label="first")
    cuts = (
        data.draw(st.sets(st.integers(first + 1, len(events)), max_size=5), label="cuts")
        if first < len(events)
        else set()
    )
    bounds = sorted({first, *cuts, *(s for s in starts if s > first), len(events) + 1})
    segments: list[items.Segment] = []
    ends = batch.ends
    for a, b in itertools.pairwise(bounds):
        run = batch.runs[max(i for i, s in enumerate(starts[:-1]) if s <= a)]
        start = ends[a - 2] if a > 1 else 0
        end = ends[b - 2] - (b > len(events))  # the last segment: no comma after it
        segments.append((run.kind, run.part, batch.items, start, ends[a - 1], end))
    array, last_kind = items.items_array(segments)
    got = json.loads(array)
    frame = frames.Events(stream=STREAM, seq=first, items=frames_items(got), h="0" * 32)
    kinds = {e.part: e.part_kind for e in events[: first - 1] if e.kind is Kind.PART_START}
    assert items.decode(frame.seq, frame.items, kinds) == events[first - 1 :]
    assert last_kind == events[-1].kind


@PROPERTY
@given(streams(), st.data())
def test_a_read_within_one_run_is_the_items_array_of_its_segment(
    events: list[Event], data: st.DataObject
) -> None:
    """item_run (a live stream's read, within one run) lays out what items_array
    does for that one segment, byte for byte."""
    batch = batch_of(events, b"\0" * 16)
    starts = [r.seq for r in batch.runs] + [len(events) + 1]
    r = data.draw(st.integers(0, len(batch.runs) - 1), label="run")
    lo, hi = starts[r], starts[r + 1] - 1
    first = data.draw(st.integers(lo, hi), label="first")
    last = data.draw(st.integers(first, hi), label="last")
    ends = batch.ends
    a = ends[first - 2] if first > 1 else 0
    seg = (
        batch.runs[r].kind,
        batch.runs[r].part,
        batch.items,
        a,
        ends[first - 1],
        ends[last - 1] - 1,
    )
    assert items.item_run(*seg) == items.items_array([seg])


def frames_items(raw: list[object]) -> list[items.Item]:
    """Decoded JSON items as the frame decoder types them."""
    wire = json.dumps({"t": "events", "stream": STREAM, "seq": 1, "items": raw, "h": "0" * 32})
    frame = frames.decode_server(wire)
    assert isinstance(frame, frames.Events)
    return frame.items
