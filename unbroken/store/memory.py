"""In-process stream log: an arena of encoded events per stream.

Events are held as bytes (one ``bytearray`` per stream plus small arrays of end
offsets, kinds and part indexes), never as Python objects per event, so a MB of
text costs about 1.5 MB. Digests are kept at checkpoints every
:data:`CHECKPOINT` events and recomputed in between when a resume needs one.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable

from ..protocol.digest import seed, step
from .base import (
    Created,
    Listener,
    LogFull,
    ReadBatch,
    Record,
    Retention,
    StaleProducer,
    StreamMeta,
    StreamTooLarge,
)
from .records import record_payload

log = logging.getLogger(__name__)

#: A digest is kept after every CHECKPOINT-th event.
CHECKPOINT = 32


class _Stream:
    __slots__ = (
        "buf",
        "ckpt",
        "created",
        "ended",
        "ends",
        "error",
        "head_digest",
        "kinds",
        "listeners",
        "owner",
        "part_idx",
        "part_index",
        "parts",
        "producer",
        "req",
        "seed",
        "status",
        "stream",
    )

    def __init__(self, stream: str, owner: str, req: str, epoch: str, now: float) -> None:
        self.stream = stream
        self.owner = owner
        self.req = req
        self.status = "running"
        self.created = now
        self.ended: float | None = None
        self.error = ""
        self.producer = secrets.token_hex(8)
        self.seed = seed(stream, epoch)
        self.head_digest = self.seed
        self.buf = bytearray()
        self.ends = array("I")  # max_stream_bytes stays below 4 GiB
        self.kinds = bytearray()
        self.part_idx = array("H")
        self.parts: list[str] = []
        self.part_index: dict[str, int] = {}
        self.ckpt: list[bytes] = []
        self.listeners: list[Listener] = []

    @property
    def head(self) -> int:
        return len(self.kinds)

    def record(self, i: int) -> Record:
        """Record of event ``i + 1``."""
        start = self.ends[i - 1] if i else 0
        return Record(
            self.kinds[i], self.parts[self.part_idx[i]], bytes(self.buf[start : self.ends[i]])
        )

    def digest_at(self, seq: int) -> bytes:
        if seq == 0:
            return self.seed
        if seq == self.head:
            return self.head_digest
        base = seq - seq % CHECKPOINT
        h = self.ckpt[base // CHECKPOINT - 1] if base else self.seed
        for s in range(base + 1, seq + 1):
            rec = self.record(s - 1)
            h = step(h, s, rec.kind, record_payload(rec))
        return h

    def notify(self) -> None:
        head = self.head
        for cb in list(self.listeners):
            try:
                cb(self.stream, head)
            except Exception:  # a listener must never break the producer
                log.exception("stream listener failed stream=%s", self.stream)


class MemoryStore:
    """A :class:`~unbroken.store.base.StreamLog` in this process's memory.

    A new epoch is drawn every time one is created (every process start), so a
    client that held a stream from a previous process gets ``gone(epoch)``.
    """

    def __init__(self, retention: Retention | None = None) -> None:
        self.retention = retention or Retention()
        self._epoch = secrets.token_urlsafe(9)
        self._streams: dict[str, _Stream] = {}
        self._by_req: dict[tuple[str, str], str] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._tombstones: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending_listeners: dict[str, list[Listener]] = {}
        self.total_bytes = 0

    @property
    def epoch(self) -> str:
        return self._epoch

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------ producer side
    async def create(self, owner: str, req: str, now: float) -> Created:
        key = (owner, req)
        existing = self._by_req.get(key)
        if existing is not None and existing in self._streams:
            s = self._streams[existing]
            return Created(existing, self._epoch, False, s.producer)
        if self.total_bytes > self.retention.max_total_bytes:
            self._evict(self.retention.max_total_bytes, now)
            if self.total_bytes > self.retention.max_total_bytes:
                raise LogFull(self.retention.retry_after)
        stream = secrets.token_urlsafe(16)
        s = _Stream(stream, owner, req, self._epoch, now)
        self._streams[stream] = s
        self._by_req[key] = stream
        s.listeners.extend(self._pending_listeners.pop(stream, []))
        return Created(stream, self._epoch, True, s.producer)

    async def append(
        self,
        stream: str,
        producer: str,
        first_seq: int,
        records: list[Record],
        digests: list[bytes],
    ) -> int:
        s = self._streams.get(stream)
        if s is None or s.producer != producer:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        if s.status != "running":
            raise StaleProducer(f"stream {stream} already ended {s.status}")
        head = s.head
        if first_seq > head + 1:
            raise ValueError(f"gap: stream {stream} head is {head}, append starts at {first_seq}")
        skip = head + 1 - first_seq
        if skip >= len(records):
            return head
        add = sum(len(r.enc) for r in records[skip:])
        only_end = len(records) - skip == 1 and records[-1].kind == 6
        if len(s.buf) + add > self.retention.max_stream_bytes and not only_end:
            raise StreamTooLarge(
                f"stream {stream} would hold {len(s.buf) + add} bytes, more than "
                f"max_stream_bytes={self.retention.max_stream_bytes}"
            )
        buf, ends, kinds, pidx, pindex = s.buf, s.ends, s.kinds, s.part_idx, s.part_index
        seq = first_seq + skip
        for i in range(skip, len(records)):
            kind, part, enc = records[i]
            buf += enc
            ends.append(len(buf))
            kinds.append(kind)
            idx = pindex.get(part)
            if idx is None:
                idx = pindex[part] = len(s.parts)
                s.parts.append(part)
            pidx.append(idx)
            if seq % CHECKPOINT == 0:
                s.ckpt.append(digests[i])
            seq += 1
        s.head_digest = digests[-1]
        self.total_bytes += add
        s.notify()
        return s.head

    async def finish(self, stream: str, producer: str, status: str, error: str, now: float) -> None:
        s = self._streams.get(stream)
        if s is None or s.producer != producer:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        s.status, s.error, s.ended = status, error, now
        self._finished[stream] = now
        s.notify()
        if self.total_bytes > self.retention.max_total_bytes:
            # make room now, but give the stream that just ended a chance to be read
            self._evict(self.retention.max_total_bytes, now, keep=stream)

    # ------------------------------------------------------------ reader side
    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        s = self._streams.get(stream)
        if s is None:
            return None
        head = s.head
        if after >= head:
            return None
        ends = s.ends
        start_off = ends[after - 1] if after else 0
        end = max(bisect_right(ends, start_off + max_bytes, after, head), after + 1)
        if end < head:
            # end on a checkpoint when we can, so the digest is known without hashing
            aligned = end - end % CHECKPOINT
            if aligned > after:
                end = aligned
        buf, kinds, parts, pidx = s.buf, s.kinds, s.parts, s.part_idx
        records: list[Record] = []
        prev = start_off
        for i in range(after, end):
            e = ends[i]
            records.append(Record(kinds[i], parts[pidx[i]], bytes(buf[prev:e])))
            prev = e
        return ReadBatch(after + 1, records, s.digest_at(end), prev - start_off)

    async def meta(self, stream: str) -> StreamMeta | None:
        s = self._streams.get(stream)
        if s is None:
            return None
        return StreamMeta(
            stream=s.stream,
            owner=s.owner,
            req=s.req,
            status=s.status,
            head=s.head,
            digest=s.head_digest,
            nbytes=len(s.buf),
            created=s.created,
            ended=s.ended,
            error=s.error,
            producer=s.producer,
        )

    async def tombstone(self, stream: str) -> str | None:
        t = self._tombstones.get(stream)
        return t[0] if t else None

    async def digest_at(self, stream: str, seq: int) -> bytes | None:
        s = self._streams.get(stream)
        if s is None or seq < 0 or seq > s.head:
            return None
        return s.digest_at(seq)

    def subscribe(self, stream: str, listener: Listener) -> Callable[[], None]:
        s = self._streams.get(stream)
        target = s.listeners if s is not None else self._pending_listeners.setdefault(stream, [])
        target.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                target.remove(listener)
            if s is None and not target:
                self._pending_listeners.pop(stream, None)

        return unsubscribe

    # ------------------------------------------------------------ retention
    def _drop(self, stream: str, now: float) -> None:
        s = self._streams.pop(stream, None)
        self._finished.pop(stream, None)
        if s is None:
            return
        self.total_bytes -= len(s.buf)
        if self._by_req.get((s.owner, s.req)) == stream:
            del self._by_req[(s.owner, s.req)]
        self._tombstones[stream] = (s.owner, now)
        # tell readers still attached that the stream is gone (head -1)
        listeners = list(s.listeners)
        s.listeners.clear()
        for cb in listeners:
            try:
                cb(stream, -1)
            except Exception:
                log.exception("stream listener failed stream=%s", stream)
        log.info("stream dropped stream=%s status=%s bytes=%d", stream, s.status, len(s.buf))

    def _evict(self, target: int, now: float, keep: str | None = None) -> None:
        """Drop finished streams, oldest first, until ``total_bytes <= target``."""
        for stream in list(self._finished):
            if self.total_bytes <= target:
                return
            if stream != keep:
                log.info("evicting stream=%s total_bytes=%d", stream, self.total_bytes)
                self._drop(stream, now)

    async def sweep(self, now: float) -> int:
        dropped = 0
        ttl = self.retention.ttl
        while self._finished:
            stream, ended = next(iter(self._finished.items()))
            if ended + ttl > now:
                break
            self._drop(stream, now)
            dropped += 1
        t_ttl = self.retention.tombstone_ttl
        while self._tombstones:
            stream, (_, when) = next(iter(self._tombstones.items()))
            if when + t_ttl > now:
                break
            del self._tombstones[stream]
        return dropped

    async def close(self) -> None:
        self._streams.clear()
        self._by_req.clear()
        self._finished.clear()
        self.total_bytes = 0
