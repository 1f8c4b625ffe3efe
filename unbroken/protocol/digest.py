"""The integrity chain: ``h_n = BLAKE2b-128(h_{n-1} || seq || kind || payload)``.

``h_0`` comes from the stream id and epoch, so the same events in another stream
or another storage generation hash differently. ``seq`` is 8 bytes big-endian,
``kind`` one byte (:class:`~unbroken.protocol.events.Kind`), ``payload`` the
canonical bytes of :func:`~unbroken.protocol.events.payload`.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable
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


def _head_packer(prefix: bytes) -> Callable[[bytes, int, int, bytes], bytes]:
    """``pack(h_prev, seq, kind, prefix)``: the 16-byte digest before, ``seq`` and
    ``kind`` as :data:`_HEADER`, then ``prefix`` (``part NUL``), in one call: a chunk's
    hash input but its body."""
    return _packer_for(len(prefix))


@functools.lru_cache(maxsize=256)
def _packer_for(n: int) -> Callable[[bytes, int, int, bytes], bytes]:
    # one Struct per prefix length, shared by every chain (not one per stream)
    return struct.Struct(f">{DIGEST_SIZE}sQB{n}s").pack


def seed(stream: str, epoch: str) -> bytes:
    """``h_0`` of a stream."""
    h = _new_hasher()
    h.update(_SEED_PREFIX + stream.encode() + b"\x00" + epoch.encode())
    return h.digest()


def step(prev: bytes, seq: int, kind: int, data: bytes) -> bytes:
    """One link of the chain: the digest after event ``seq`` (``data`` its payload)."""
    h = _new_hasher()  # four updates: cheaper than one of the concatenation
    h.update(prev)
    h.update(_HEADER(seq, kind))
    h.update(data)
    return h.digest()


def step_event(prev: bytes, event: Event) -> bytes:
    """:func:`step` for an :class:`Event`."""
    return step(prev, event.seq, event.kind, payload(event))


def chain(stream: str, epoch: str, events: Iterable[Event]) -> list[bytes]:
    """Digests after each event, in order."""
    c = Chain.of(stream, epoch)
    return [c.event(ev) for ev in events]


class Chain:
    """The running digest of one stream: :attr:`digest` is ``h_seq`` after event :attr:`seq`.

    The one implementation of the chain: the producer feeds each chunk it writes
    (:meth:`chunk`) and each other event (:meth:`event`), a client extends it by a
    frame's events at a time (:meth:`extend`), a store recomputes digests from what
    it holds (:meth:`chunk`, :meth:`link`). Every method chains event ``seq + 1``;
    the chunk path keeps the part's ``part NUL`` prefix encoded between calls.
    """

    __slots__ = ("_head", "_part", "_prefix", "digest", "seq")

    def __init__(self, digest: bytes, seq: int = 0) -> None:
        self.digest = digest
        self.seq = seq
        self._part = ""
        self._prefix = b"\x00"
        self._head = _head_packer(self._prefix)

    @classmethod
    def of(cls, stream: str, epoch: str) -> Chain:
        """The chain of a stream before its first event (``h_0``)."""
        return cls(seed(stream, epoch))

    def reset(self, seq: int, digest: bytes) -> None:
        """Go back (or forward) to ``digest`` after event ``seq``."""
        self.seq, self.digest = seq, digest

    def link(self, kind: int, data: bytes) -> bytes:
        """Chain event ``seq + 1`` of ``kind`` whose canonical payload is ``data``."""
        seq = self.seq + 1
        self.digest = h = step(self.digest, seq, kind, data)
        self.seq = seq
        return h

    def chunk(self, kind: int, part: str, body: bytes) -> bytes:
        """Chain a text/json/data chunk of ``part`` (``body`` its UTF-8 bytes) as event
        ``seq + 1``: :meth:`link` with the payload ``part NUL body``, without building it.

        The hot path of every token written. Raises ``UnicodeEncodeError`` (and changes
        nothing) when ``part`` is not valid Unicode.
        """
        if part != self._part:
            self._set_part(part)
        seq = self.seq + 1
        prev = self.digest
        h = _new_hasher()  # as step(), with the payload in two pieces
        if len(prev) == DIGEST_SIZE:  # h_prev, seq, kind and "part NUL" in one piece
            h.update(self._head(prev, seq, kind, self._prefix))
        else:
            h.update(prev)
            h.update(_HEADER(seq, kind))
            h.update(self._prefix)
        h.update(body)
        self.digest = digest = h.digest()
        self.seq = seq
        return digest

    def _set_part(self, part: str) -> None:
        prefix = part.encode() + b"\x00"  # fails (changing nothing) for a lone surrogate
        self._prefix, self._part, self._head = prefix, part, _head_packer(prefix)

    def chunks(self, kind: int, part: str, bodies: list[bytes], out: list[bytes]) -> bytes:
        """:meth:`chunk` for several chunks of one ``kind`` and ``part`` (their UTF-8
        bodies) in one call, as events ``seq + 1 ..``; each digest is appended to
        ``out``. Returns the last (the current digest when ``bodies`` is empty).

        How the producer digests what an agent wrote in a loop tick: one call per
        batch, not one per token. Raises ``UnicodeEncodeError`` (and changes
        nothing) when ``part`` is not valid Unicode.
        """
        if part != self._part:
            self._set_part(part)
        seq, h = self.seq, self.digest
        if len(h) != DIGEST_SIZE:  # (a chain started from a foreign digest) the long way
            for body in bodies:
                h = self.chunk(kind, part, body)
                out.append(h)
            return h
        # h_prev, seq, kind and "part NUL" packed in one call, then the body: two
        # updates per chunk, ~15 % fewer instructions than four
        head, prefix, new, append = self._head, self._prefix, _new_hasher, out.append
        for seq, body in enumerate(bodies, self.seq + 1):  # (seq: the last one, after)
            hasher = new()
            hasher.update(head(h, seq, kind, prefix))
            hasher.update(body)
            h = hasher.digest()
            append(h)
        self.seq, self.digest = seq, h
        return h

    def event(self, event: Event) -> bytes:
        """Chain ``event``, which must be event ``seq + 1`` (else :class:`ChainMismatch`).

        Raises ``UnicodeEncodeError`` (and changes nothing) for a payload that is not
        valid Unicode.
        """
        if event.seq != self.seq + 1:
            raise ChainMismatch(event.seq, f"expected seq {self.seq + 1}, got {event.seq}")
        if event.kind <= _DATA:
            return self.chunk(event.kind, event.part, event.body.encode())
        return self.link(event.kind, payload(event))

    def extend(self, events: Iterable[Event], expected: bytes | None = None) -> bytes:
        """Chain a frame's worth of events, then compare the last digest with ``expected``.

        Each event must be the next one (a drop, duplicate or reorder is a
        :class:`ChainMismatch` at that event), every payload valid Unicode (else a
        ``ChainMismatch``), and the digest after the last ``expected`` when given (an
        ``events`` frame's ``h``). All or nothing: on ``ChainMismatch`` the chain is
        left where it was. Returns the new digest.
        """
        # The client's hot path: the chunk case of event() inlined, and the
        # "part NUL" prefix encoded once per run of chunks.
        seq, h = self.seq, self.digest
        part, prefix = self._part, self._prefix
        try:
            for ev in events:
                seq += 1
                if ev.seq != seq:
                    raise ChainMismatch(ev.seq, f"expected seq {seq}, got {ev.seq}")
                k = ev.kind
                hasher = _new_hasher()
                hasher.update(h)
                hasher.update(_HEADER(seq, k))
                if k <= _DATA:
                    if ev.part != part:
                        prefix = ev.part.encode() + b"\x00"
                        part = ev.part
                    hasher.update(prefix)
                    hasher.update(ev.body.encode())
                else:
                    hasher.update(payload(ev))
                h = hasher.digest()
        except UnicodeEncodeError as exc:
            raise ChainMismatch(seq, "payload is not valid Unicode") from exc
        # a v2 frame may carry the first 8 bytes only (docs/reference/protocol.md §19)
        if expected is not None and (
            h != expected
            if len(expected) == 16
            else not (len(expected) >= 8 and h.startswith(expected))
        ):
            raise ChainMismatch(seq, "digest mismatch")
        self.seq, self.digest = seq, h
        self._part, self._prefix = part, prefix
        return h


class ChainVerifier(Chain):
    """Incremental verifier: feed events in order, check digests where known.

    A dropped, duplicated or reordered event fails the sequence check at once;
    an altered one fails at the first digest checked after it (every event, when
    digests are given per event).
    """

    __slots__ = ()

    def __init__(self, stream: str, epoch: str, seq: int = 0, digest: bytes | None = None) -> None:
        h0 = seed(stream, epoch) if digest is None or seq == 0 else digest
        if seq == 0 and digest is not None and digest != h0:
            raise ChainMismatch(0, "starting digest is not the stream's seed")
        super().__init__(h0, seq)

    def feed(self, event: Event, expected: bytes | None = None) -> bytes:
        """Chain one event; compare with ``expected`` when given. Returns the new digest.

        The checks of :meth:`~Chain.extend` (all or nothing).
        """
        return self.extend((event,), expected)

    def check(self, expected: bytes) -> None:
        """Compare the digest after the last fed event with ``expected``."""
        if expected != self.digest:
            raise ChainMismatch(self.seq, "digest mismatch")
