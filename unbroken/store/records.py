"""Conversions between stored :class:`~unbroken.store.base.Record` and events."""

from __future__ import annotations

from array import array
from typing import Final

import msgspec

from ..protocol.digest import step
from ..protocol.events import CHUNK_KINDS, Event, Kind, end, payload
from ..protocol.frames import EndItem, PartEndItem, PartStartItem, encode_json
from .base import AppendBatch, Run

_str_decoder: Final = msgspec.json.Decoder(str)
_start_decoder: Final = msgspec.json.Decoder(PartStartItem)
_end_part_decoder: Final = msgspec.json.Decoder(PartEndItem)
_end_decoder: Final = msgspec.json.Decoder(EndItem)


def to_record(event: Event) -> tuple[int, str, bytes]:
    """Encode an event for storage (see :mod:`unbroken.store.base`)."""
    k = event.kind
    if k in CHUNK_KINDS:
        return (k, event.part, encode_json(event.body))
    if k is Kind.PART_START:
        item: object = PartStartItem(
            event.part,
            event.part_kind,  # type: ignore[arg-type]
            event.mime,
            event.schema,
        )
        return (k, event.part, encode_json(item))
    if k is Kind.PART_END:
        return (k, event.part, encode_json(PartEndItem(event.part, event.error)))
    return (k, "", encode_json(EndItem(event.status, event.count, event.error)))  # type: ignore[arg-type]


def to_event(seq: int, kind: int, part: str, enc: bytes) -> Event:
    """Decode a stored record back into an :class:`Event`."""
    k = Kind(kind)
    if k in CHUNK_KINDS:
        return Event(seq, k, part=part, body=_str_decoder.decode(enc))
    if k is Kind.PART_START:
        ps = _start_decoder.decode(enc)
        return Event(seq, k, part=ps.p, part_kind=ps.pk, mime=ps.mime, schema=ps.schema)
    if k is Kind.PART_END:
        pe = _end_part_decoder.decode(enc)
        return Event(seq, k, part=pe.p, error=pe.err)
    en = _end_decoder.decode(enc)
    return Event(seq, k, status=en.st, error=en.err, count=en.n)


def record_payload(record: tuple[int, str, bytes]) -> bytes:
    """Canonical payload bytes of a stored record (for the digest chain)."""
    kind, part, enc = record
    if kind in CHUNK_KINDS:
        return part.encode() + b"\x00" + _str_decoder.decode(enc).encode()
    return payload(to_event(0, kind, part, enc))


def end_batch(seq: int, prev: bytes, status: str, error: str) -> AppendBatch:
    """The ``end`` event at ``seq``, chained on the digest ``prev``, as a batch of one:
    how a store ends a stream its producer cannot (producer lost, log diverged)."""
    ev = end(seq, status, error)  # type: ignore[arg-type]
    kind, part, enc = to_record(ev)
    digest = step(prev, seq, Kind.END, record_payload((kind, part, enc)))
    items = enc + b","
    return AppendBatch(seq, 1, items, array("I", [len(items)]), [Run(seq, kind, part)], [digest])
