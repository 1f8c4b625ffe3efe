"""The ``items`` of an ``events`` frame: how events are laid out on the wire.

An ``events`` frame carries events ``seq .. seq+len(items)-1`` as a JSON array.
Each event is one *item*:

* a chunk (``text``/``json``/``data``) of the frame's *current part* is a bare JSON
  string, its body; any other chunk is explicit, ``{"k":"text","p":part,"d":body}``,
  and makes its part (and kind) current;
* ``{"k":"part_start","p":…,"pk":…,"mime":…,"schema":…}`` opens a part and makes
  it current (its chunks may follow bare);
* ``{"k":"part_end","p":…,"err":…}`` closes a part (no part is current after the
  current one ends);
* ``{"k":"end","st":…,"n":…,"err":…}``, the last event of the stream.

The current part starts empty in every frame, so every frame decodes on its own.
The stores keep each event's *stored item*: a chunk's body as a JSON string (the
bare form), any other event's whole item, and the kind and part of the *run* it
belongs to; :func:`items_array` lays a read out again as a frame's ``items``.
This module is the only place that knows the layout.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from ..errors import ProtocolError
from .codes import CloseCode
from .digest import Chain
from .events import (
    CHUNK_KIND_OF_PART,
    CHUNK_KINDS,
    END_STATUSES,
    NAME_BY_KIND,
    PART_KINDS,
    Event,
    Kind,
    payload,
)

PartId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}\Z")]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
# No NUL: the digest payload of part_start joins part, kind, mime and schema with NUL.
Mime = Annotated[str, Meta(max_length=4096, pattern=r"^[^\x00]*\Z")]


class TextItem(Struct, tag_field="k", tag="text", frozen=True):
    p: PartId
    d: str


class JsonItem(Struct, tag_field="k", tag="json", frozen=True):
    p: PartId
    d: str


class DataItem(Struct, tag_field="k", tag="data", frozen=True):
    p: PartId
    d: str


class PartStartItem(Struct, tag_field="k", tag="part_start", frozen=True, omit_defaults=True):
    p: PartId
    pk: Literal["text", "json", "data"]
    mime: Mime = ""
    schema: str = ""


class PartEndItem(Struct, tag_field="k", tag="part_end", frozen=True, omit_defaults=True):
    p: PartId
    err: str = ""


class EndItem(Struct, tag_field="k", tag="end", frozen=True, omit_defaults=True):
    st: Literal["completed", "failed", "cancelled"]
    n: Seq
    err: str = ""


Item = str | TextItem | JsonItem | DataItem | PartStartItem | PartEndItem | EndItem


# v2 (docs/reference/protocol.md §19): the same items as MessagePack arrays whose first
# element is the event's kind byte; a bare string is a chunk of the current part.
class _A(Struct, array_like=True, frozen=True):
    pass


class TextItem2(_A, tag=int(Kind.TEXT), frozen=True):
    p: PartId
    d: str


class JsonItem2(_A, tag=int(Kind.JSON), frozen=True):
    p: PartId
    d: str


class DataItem2(_A, tag=int(Kind.DATA), frozen=True):
    p: PartId
    d: str


class PartStartItem2(_A, tag=int(Kind.PART_START), frozen=True):
    p: PartId
    pk: Literal["text", "json", "data"]
    mime: Mime = ""
    schema: str = ""


class PartEndItem2(_A, tag=int(Kind.PART_END), frozen=True):
    p: PartId
    err: str = ""


class EndItem2(_A, tag=int(Kind.END), frozen=True):
    st: Literal["completed", "failed", "cancelled"]
    n: Seq
    err: str = ""


Item2 = str | TextItem2 | JsonItem2 | DataItem2 | PartStartItem2 | PartEndItem2 | EndItem2


_encoder: Final = msgspec.json.Encoder()
_encode: Final = _encoder.encode
#: ``chunk_into(body, buf, -1)`` appends a chunk's stored item (its body as a JSON
#: string) to ``buf``: the producer's hot path, so the encoder's own method.
chunk_into: Final = _encoder.encode_into
#: ``chunk_item(body)``: a chunk's stored item (its body as a JSON string), as bytes.
chunk_item: Final = _encoder.encode
#: ``chunk_array(bodies)``: several chunks' bodies as one JSON array, ``["a","b"]``
#: (the producer writes a run's items from it in one call).
chunk_array: Final = _encoder.encode
_str_decoder: Final = msgspec.json.Decoder(str)
_start_decoder: Final = msgspec.json.Decoder(PartStartItem)
_end_part_decoder: Final = msgspec.json.Decoder(PartEndItem)
_end_decoder: Final = msgspec.json.Decoder(EndItem)

_CHUNK_ITEM: Final[dict[int, type[TextItem | JsonItem | DataItem]]] = {
    Kind.TEXT: TextItem,
    Kind.JSON: JsonItem,
    Kind.DATA: DataItem,
}
_CHUNK_ITEM_TYPES: Final = (TextItem, JsonItem, DataItem, TextItem2, JsonItem2, DataItem2)
_KIND_OF_ITEM: Final[dict[type, Kind]] = {
    TextItem: Kind.TEXT,
    JsonItem: Kind.JSON,
    DataItem: Kind.DATA,
    TextItem2: Kind.TEXT,
    JsonItem2: Kind.JSON,
    DataItem2: Kind.DATA,
}
_PART_START_TYPES: Final = (PartStartItem, PartStartItem2)
_PART_END_TYPES: Final = (PartEndItem, PartEndItem2)
#: an explicit chunk's item up to its body: ``{"k":"text","p":`` then the part
_CHUNK_OPEN: Final[dict[int, bytes]] = {
    Kind.TEXT: b'{"k":"text","p":',
    Kind.JSON: b'{"k":"json","p":',
    Kind.DATA: b'{"k":"data","p":',
}
# Plain ints: comparing an int is much cheaper than hashing or looking up an enum member.
_DATA: Final = int(Kind.DATA)
_PART_START: Final = int(Kind.PART_START)
_PART_END: Final = int(Kind.PART_END)


# ---------------------------------------------------------------- frames
def encode(events: list[Event]) -> bytes:
    """The compact JSON ``items`` array of ``events`` (see the module docstring).

    The items are gathered, then encoded in one call.
    """
    items: list[Item] = []
    append = items.append
    current = ""
    current_kind = 0
    for ev in events:
        k = ev.kind
        if k <= _DATA:  # chunks: the hot path
            if k == current_kind and ev.part == current:
                append(ev.body)
            else:
                append(_CHUNK_ITEM[k](ev.part, ev.body))
                current, current_kind = ev.part, k
        elif k == _PART_START:
            append(PartStartItem(ev.part, ev.part_kind, ev.mime, ev.schema))  # type: ignore[arg-type]
            current = ev.part
            current_kind = CHUNK_KIND_OF_PART.get(ev.part_kind, 0)
        elif k == _PART_END:
            append(PartEndItem(ev.part, ev.error))
            if current == ev.part:
                current, current_kind = "", 0
        else:
            append(EndItem(ev.status, ev.count, ev.error))  # type: ignore[arg-type]
    return _encode(items)


def decode(
    seq: int,
    items: list[Item] | list[Item2],
    part_kinds: dict[str, str] | None = None,
    carried: list[Any] | None = None,
) -> list[Event]:
    """The events of a frame's decoded ``items``, the first being event ``seq``.

    ``part_kinds`` (part id → part kind) is updated with parts started here and
    used to check that each chunk matches its part's kind; pass the dict kept for
    the stream so far. ``carried`` (v2): ``[part, kind]``, the stream's current part
    before this frame (``["", None]``: none), updated to the one after it; v1
    frames start with no current part. Raises :class:`ProtocolError` on
    structural errors.
    """
    kinds = part_kinds if part_kinds is not None else {}
    out: list[Event] = []
    append = out.append
    last = seq + len(items) - 1
    current: str = "" if carried is None else carried[0]
    current_kind: Kind | None = None if carried is None else carried[1]
    for item in items:
        if type(item) is str:  # a chunk of the current part: the hot path
            if current_kind is None:
                raise ProtocolError(
                    f"seq {seq}: bare chunk with no current part",
                    CloseCode.BAD_FRAME,
                )
            append(Event(seq, current_kind, current, item))
        elif isinstance(item, _CHUNK_ITEM_TYPES):
            kind = _KIND_OF_ITEM[type(item)]
            known = kinds.get(item.p)
            if known is not None and CHUNK_KIND_OF_PART[known] is not kind:
                raise ProtocolError(
                    f"seq {seq}: {NAME_BY_KIND[kind]} chunk for {known} part {item.p!r}",
                    CloseCode.BAD_FRAME,
                )
            current, current_kind = item.p, kind
            append(Event(seq, kind, item.p, item.d))
        elif isinstance(item, _PART_START_TYPES):
            if item.pk not in PART_KINDS:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad part kind", CloseCode.BAD_FRAME)
            kinds[item.p] = item.pk
            current, current_kind = item.p, CHUNK_KIND_OF_PART[item.pk]
            append(
                Event(
                    seq,
                    Kind.PART_START,
                    part=item.p,
                    part_kind=item.pk,
                    mime=item.mime,
                    schema=item.schema,
                )
            )
        elif isinstance(item, _PART_END_TYPES):
            if current == item.p:
                current, current_kind = "", None
            append(Event(seq, Kind.PART_END, part=item.p, error=item.err))
        else:
            assert isinstance(item, (EndItem, EndItem2))
            if item.st not in END_STATUSES:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad status", CloseCode.BAD_FRAME)
            if item.n != seq:
                raise ProtocolError(
                    f"seq {seq}: end says {item.n} events, but it is event {seq}",
                    CloseCode.BAD_FRAME,
                )
            if seq != last:
                raise ProtocolError(
                    f"seq {seq}: end is not the last event of the frame", CloseCode.BAD_FRAME
                )
            append(Event(seq, Kind.END, status=item.st, error=item.err, count=item.n))
        seq += 1
    if carried is not None:
        carried[0], carried[1] = current, current_kind
    return out


# ---------------------------------------------------------------- stored items
def run_part(event: Event) -> str:
    """The part of the run ``event`` belongs to ("" for ``end``)."""
    return "" if event.kind is Kind.END else event.part


def encode_one(event: Event) -> bytes:
    """An event's stored item: a chunk's body as a JSON string, else its whole item."""
    k = event.kind
    if k in CHUNK_KINDS:
        return _encode(event.body)
    if k is Kind.PART_START:
        item: object = PartStartItem(
            event.part,
            event.part_kind,  # type: ignore[arg-type]
            event.mime,
            event.schema,
        )
        return _encode(item)
    if k is Kind.PART_END:
        return _encode(PartEndItem(event.part, event.error))
    return _encode(EndItem(event.status, event.count, event.error))  # type: ignore[arg-type]


def decode_one(seq: int, kind: int, part: str, enc: bytes) -> Event:
    """Event ``seq`` from its stored item ``enc`` and its run's ``kind`` and ``part``."""
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


def payload_of(kind: int, part: str, enc: bytes) -> bytes:
    """The canonical payload (see :func:`~unbroken.protocol.events.payload`) of a
    stored item, for the digest chain."""
    if kind <= _DATA:
        return part.encode() + b"\x00" + _str_decoder.decode(enc).encode()
    return payload(decode_one(0, kind, part, enc))


def chain_stored(chain: Chain, kind: int, part: str, enc: bytes) -> bytes:
    """Feed ``chain`` the event whose stored item is ``enc`` (of a run of ``kind`` and
    ``part``): how a store recomputes digests from what it holds."""
    if kind <= _DATA:
        return chain.chunk(kind, part, _str_decoder.decode(enc).encode())
    return chain.link(kind, payload(decode_one(0, kind, part, enc)))


#: ``{"k":<kind>,"p":<part>,"d":``, the start of an explicit chunk, by kind then part:
#: a stream has a handful of parts, and each read of a live stream starts with one.
_OPENED: Final[tuple[dict[str, bytes], ...]] = ({}, {}, {}, {})


def _open_chunk(kind: int, part: str) -> bytes:
    opened = _OPENED[kind]
    if len(opened) >= 4096:
        opened.clear()
    head = opened[part] = _CHUNK_OPEN[kind] + _encode(part) + b',"d":'
    return head


#: Events stored in ``buf[a:b]``, each stored item followed by a comma (but for the
#: last segment of a read, whose ``b`` stops before its last comma), all of one run of
#: ``kind`` and ``part``; ``first_end`` is the end of the first one (just after its
#: comma): ``(kind, part, buf, a, first_end, b)``.
Segment = tuple[int, str, bytes | bytearray, int, int, int]


def item_run(
    kind: int, part: str, buf: bytes | bytearray, a: int, first_end: int, b: int
) -> tuple[bytes, int]:
    """:func:`items_array` of one segment (``items_array([(kind, part, buf, a,
    first_end, b)])``): a read within one run, as a live stream's read of its last
    token or few, without the segment list."""
    if kind > _DATA:
        return b"[" + buf[a:b] + b"]", kind
    if b == first_end - 1:  # one chunk
        return chunk_items(kind, part, buf[a:b]), kind
    head = _OPENED[kind].get(part)
    if head is None:
        head = _open_chunk(kind, part)
    return b"".join((b"[", head, buf[a : first_end - 1], b"},", buf[first_end:b], b"]")), kind


def chunk_items(kind: int, part: str, enc: bytes | bytearray) -> bytes:
    """The ``items`` array of one chunk of ``kind`` and ``part`` whose stored item is
    ``enc`` (:data:`chunk_item`): a live stream's token, as :func:`item_run` reads it."""
    head = _OPENED[kind].get(part)
    if head is None:
        head = _open_chunk(kind, part)
    return b"".join((b"[", head, enc, b"}]"))


def items_array(segments: list[Segment]) -> tuple[bytes, int]:
    """Stored items laid out as an ``events`` frame's ``items`` array, and the kind of
    the last event (``Kind.END`` once a stream is complete).

    A store hands over a read as *segments*, in order (see :data:`Segment`). The
    first chunk of a segment is written explicit, unless its run continues the run
    of the segment before (same chunk kind and part), and the rest go bare, so a
    read of thousands of chunks is a few slices of the store's buffer.
    """
    out: list[bytes | bytearray] = [b"["]
    current_kind, current_part = 0, ""
    kind = 0
    for kind, part, buf, a, first_end, b in segments:
        if kind <= _DATA:
            if kind != current_kind or part != current_part:
                head = _OPENED[kind].get(part)
                out.append(head if head is not None else _open_chunk(kind, part))
                out.append(buf[a : first_end - 1])
                # the last segment's b stops before its comma
                out.append(b"}" if b == first_end - 1 else b"},")
                a = first_end
                current_kind, current_part = kind, part
            if b > a:
                out.append(buf[a:b])
        else:
            out.append(buf[a:b])
            current_kind = 0
    out.append(b"]")
    return b"".join(out), kind
