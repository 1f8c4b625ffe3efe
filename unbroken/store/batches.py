"""Append batches a store builds itself (see :class:`~unbroken.store.base.AppendBatch`)."""

from __future__ import annotations

from array import array

from ..protocol.digest import Chain
from ..protocol.events import CHUNK_KINDS, Event, end
from ..protocol.items import chunk_into, encode_one, run_part
from .base import AppendBatch, EventRun


def batch_of(events: list[Event], prev: bytes) -> AppendBatch:
    """``events`` (consecutive seqs) as one batch, chained on the digest ``prev``
    after the event before the first. Each event starts a run of its own unless it
    continues the previous event's run of chunks."""
    first = events[0].seq
    chain = Chain(prev, first - 1)
    items, ends, runs, digests = bytearray(), array("I"), [], []
    last: tuple[int, str] | None = None
    for ev in events:
        digests.append(chain.event(ev))
        if ev.kind in CHUNK_KINDS:
            chunk_into(ev.body, items, -1)
            if last != (ev.kind, ev.part):
                runs.append(EventRun(ev.seq, ev.kind, ev.part))
                last = (ev.kind, ev.part)
        else:
            items += encode_one(ev)
            runs.append(EventRun(ev.seq, ev.kind, run_part(ev)))
            last = None
        items += b","
        ends.append(len(items))
    return AppendBatch(first, len(events), bytes(items), ends, runs, digests)


def end_batch(seq: int, prev: bytes, status: str, error: str) -> AppendBatch:
    """The ``end`` event at ``seq``, chained on the digest ``prev``, as a batch of one:
    how a store ends a stream its producer cannot (producer lost, log diverged)."""
    return batch_of([end(seq, status, error)], prev)  # type: ignore[arg-type]
