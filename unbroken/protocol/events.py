"""Events: what an agent's answer is made of, and their canonical bytes.

An answer is a sequence of events numbered ``1..N``. Parts group events: a
``part_start`` opens a part of kind ``text``, ``json`` or ``data``; chunks of
that kind (``text`` deltas, ``json`` fragments, ``data`` pieces) append to it;
``part_end`` closes it. The last event is always ``end``.

The digest chain (see :mod:`unbroken.protocol.digest`) is defined over
:func:`payload` bytes, never over frames, so any coalescing of events into
frames yields the same digests.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final, Literal

import msgspec

PartKind = Literal["text", "json", "data"]
Status = Literal["completed", "failed", "cancelled"]

PART_KINDS: Final[frozenset[str]] = frozenset({"text", "json", "data"})
END_STATUSES: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})

#: Part ids: short, printable, no separators that could make payloads ambiguous.
PART_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}\Z")


class Kind(IntEnum):
    """Event kinds; the value is the byte hashed into the digest chain."""

    TEXT = 1
    JSON = 2
    DATA = 3
    PART_START = 4
    PART_END = 5
    END = 6


CHUNK_KINDS: Final[frozenset[Kind]] = frozenset({Kind.TEXT, Kind.JSON, Kind.DATA})
KIND_BY_NAME: Final[dict[str, Kind]] = {
    "text": Kind.TEXT,
    "json": Kind.JSON,
    "data": Kind.DATA,
    "part_start": Kind.PART_START,
    "part_end": Kind.PART_END,
    "end": Kind.END,
}
NAME_BY_KIND: Final[dict[Kind, str]] = {v: k for k, v in KIND_BY_NAME.items()}
CHUNK_KIND_OF_PART: Final[dict[str, Kind]] = {
    "text": Kind.TEXT,
    "json": Kind.JSON,
    "data": Kind.DATA,
}


class Event(msgspec.Struct, frozen=True, gc=False):
    """One event of a stream (immutable).

    A msgspec ``Struct`` rather than a frozen dataclass: a client builds one per
    event received, and a Struct is created about ten times faster.

    Fields used per kind:

    * chunks (``TEXT``/``JSON``/``DATA``): ``part``, ``body``
    * ``PART_START``: ``part``, ``part_kind``, ``mime``, ``schema`` (JSON text or "")
    * ``PART_END``: ``part``, ``error`` ("" when the part is fine)
    * ``END``: ``status``, ``error``, ``count`` (= this event's seq)
    """

    seq: int
    kind: Kind
    part: str = ""
    body: str = ""
    part_kind: str = ""
    mime: str = ""
    schema: str = ""
    status: str = ""
    error: str = ""
    count: int = 0


# Plain ints: comparing an int is much cheaper than hashing or looking up an enum member.
_DATA: Final = int(Kind.DATA)
_PART_START: Final = int(Kind.PART_START)
_PART_END: Final = int(Kind.PART_END)


def payload(event: Event) -> bytes:
    """Canonical payload bytes of an event (hashed into the chain).

    Fields are UTF-8 and joined by NUL; part ids, part kinds, statuses and (on the
    wire) mime types cannot contain NUL, so the layout is unambiguous. Raises
    ``UnicodeEncodeError`` for strings that are not valid Unicode scalar values.
    """
    k = event.kind
    if k <= _DATA:  # text, json, data chunks: the hot path
        return f"{event.part}\x00{event.body}".encode()
    if k == _PART_START:
        return "\x00".join((event.part, event.part_kind, event.mime, event.schema)).encode()
    if k == _PART_END:
        return (event.part + "\x00" + event.error).encode()
    return (event.status + "\x00" + event.error + "\x00" + str(event.count)).encode()


def chunk(seq: int, kind: Kind, part: str, body: str) -> Event:
    """A text delta, JSON fragment or data piece."""
    return Event(seq, kind, part=part, body=body)


def part_start(seq: int, part: str, part_kind: PartKind, mime: str = "", schema: str = "") -> Event:
    """Open a part."""
    return Event(seq, Kind.PART_START, part=part, part_kind=part_kind, mime=mime, schema=schema)


def part_end(seq: int, part: str, error: str = "") -> Event:
    """Close a part (``error`` says why it is invalid, e.g. schema validation)."""
    return Event(seq, Kind.PART_END, part=part, error=error)


def end(seq: int, status: Status, error: str = "") -> Event:
    """The final event of every stream."""
    return Event(seq, Kind.END, status=status, error=error, count=seq)
