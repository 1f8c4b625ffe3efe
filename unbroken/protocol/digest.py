"""The integrity chain: ``h_n = BLAKE2b-128(h_{n-1} || seq || kind || payload)``.

``h_0`` comes from the stream id and epoch, so the same events in another stream
or another storage generation hash differently. ``seq`` is 8 bytes big-endian,
``kind`` one byte (:class:`~unbroken.protocol.events.Kind`), ``payload`` the
canonical bytes of :func:`~unbroken.protocol.events.payload`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import ChainMismatch
from .events import Event, Kind, payload

DIGEST_SIZE: Final = 16
_TEMPLATE: Final = hashlib.blake2b(digest_size=DIGEST_SIZE)
_new_hasher: Final = _TEMPLATE.copy  # copying a template is faster than blake2b(...)
_SEED_PREFIX: Final = b"unbroken.v1\x00"
#: ``seq`` as uint64 big-endian then ``kind`` as one byte, in one call.
_HEADER: Final = struct.Struct(">QB").pack
_DATA: Final = int(Kind.DATA)


def seed(stream: str, epoch: str) -> bytes:
    """``h_0`` of a stream."""
    h = _new_hasher()
    h.update(_SEED_PREFIX + stream.encode() + b"\x00" + epoch.encode())
    return h.digest()


def step(prev: bytes, seq: int, kind: int, data: bytes) -> bytes:
    """One link of the chain: the digest after event ``seq``."""
    h = _new_hasher()
    h.update(prev + _HEADER(seq, kind) + data)
    return h.digest()


def step_event(prev: bytes, event: Event) -> bytes:
    """:func:`step` for an :class:`Event`."""
    return step(prev, event.seq, event.kind, payload(event))


def chain(stream: str, epoch: str, events: Iterable[Event]) -> list[bytes]:
    """Digests after each event, in order."""
    h = seed(stream, epoch)
    out: list[bytes] = []
    for ev in events:
        h = step_event(h, ev)
        out.append(h)
    return out


class ChainVerifier:
    """Incremental verifier: feed events in order, check digests where known.

    A dropped, duplicated or reordered event fails the sequence check at once;
    an altered one fails at the first digest checked after it (every event, when
    digests are given per event).
    """

    __slots__ = ("digest", "seq")

    def __init__(self, stream: str, epoch: str, seq: int = 0, digest: bytes | None = None) -> None:
        self.seq = seq
        self.digest = digest if digest is not None else seed(stream, epoch)
        if seq == 0 and digest is not None and digest != seed(stream, epoch):
            raise ChainMismatch(0, "starting digest is not the stream's seed")

    def feed(self, event: Event, expected: bytes | None = None) -> bytes:
        """Chain one event; compare with ``expected`` when given. Returns the new digest."""
        if event.seq != self.seq + 1:
            raise ChainMismatch(event.seq, f"expected seq {self.seq + 1}, got {event.seq}")
        try:
            data = payload(event)
        except UnicodeEncodeError as exc:
            raise ChainMismatch(event.seq, "payload is not valid Unicode") from exc
        h = step(self.digest, event.seq, event.kind, data)
        if expected is not None and h != expected:
            raise ChainMismatch(event.seq, "digest mismatch")
        self.seq = event.seq
        self.digest = h
        return h

    def extend(self, events: Sequence[Event], expected: bytes | None = None) -> bytes:
        """Chain a frame's worth of events, then compare the last digest with ``expected``.

        The same checks as :meth:`feed` on each event, with the digest known only
        after the last one (an ``events`` frame's ``h``). All or nothing: on
        :class:`ChainMismatch` the verifier is left where it was. Returns the new digest.
        """
        # This loop is the client's hot path: step() and, for chunks, payload() are
        # inlined, and the "part NUL" prefix is encoded once per run of chunks.
        seq, h = self.seq, self.digest
        part: str | None = None
        prefix = b""
        try:
            for ev in events:
                seq += 1
                if ev.seq != seq:
                    raise ChainMismatch(ev.seq, f"expected seq {seq}, got {ev.seq}")
                k = ev.kind
                if k <= _DATA:
                    if ev.part is not part:
                        part = ev.part
                        prefix = part.encode() + b"\x00"
                    data = prefix + ev.body.encode()
                else:
                    data = payload(ev)
                hasher = _new_hasher()
                hasher.update(h + _HEADER(seq, k) + data)
                h = hasher.digest()
        except UnicodeEncodeError as exc:
            raise ChainMismatch(seq, "payload is not valid Unicode") from exc
        if expected is not None and h != expected:
            raise ChainMismatch(seq, "digest mismatch")
        self.seq, self.digest = seq, h
        return h

    def check(self, expected: bytes) -> None:
        """Compare the digest after the last fed event with ``expected``."""
        if expected != self.digest:
            raise ChainMismatch(self.seq, "digest mismatch")
