"""In-process stream log: an arena of encoded events per stream.

Each stream holds one byte buffer with every event's item encoding followed by a
comma (see :mod:`unbroken.store.base`), one 4-byte end offset per event, a small
table of *runs* (where the kind or part changes: a handful per answer) and a
digest every :data:`CHECKPOINT` events. Nothing is a Python object per event, so
a MB of 20-byte text tokens costs about 1.4 MB, and a read of a run of chunks is
one slice of the buffer. Digests between checkpoints are recomputed when a
resume or a read needs one.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

from ..errors import LogDiverged, LogFull, StaleProducer, StreamTooLarge
from ..protocol.digest import DIGEST_SIZE, Chain, seed
from ..protocol.events import Event, Kind
from ..protocol.items import (
    Segment,
    chain_stored,
    chunk_item,
    decode_one,
    item_run,
    items_array,
)
from .base import (
    AppendBatch,
    Created,
    Listener,
    Push,
    ReadBatch,
    Record,
    Retention,
    StreamMeta,
)
from .batches import end_batch

log = logging.getLogger(__name__)

#: A digest is kept after every CHECKPOINT-th event.
CHECKPOINT: Final = 32
_END: Final = int(Kind.END)
_COMMA: Final = 44


class _Stream:
    __slots__ = (
        "buf",
        "ckpt",
        "created",
        "ended",
        "ends",
        "error",
        "head_digest",
        "listeners",
        "owner",
        "part_index",
        "parts",
        "producer",
        "push",
        "pushes",
        "req",
        "run_kind",
        "run_part",
        "run_seq",
        "scope",
        "seed",
        "status",
        "stream",
    )

    def __init__(
        self, stream: str, owner: str, req: str, epoch: str, now: float, scope: str = ""
    ) -> None:
        self.stream = stream
        self.owner = owner
        self.req = req
        self.scope = scope
        self.status = "running"
        self.created = now
        self.ended: float | None = None
        self.error = ""
        self.producer = secrets.token_hex(8)
        self.seed = seed(stream, epoch)
        self.head_digest = self.seed
        self.buf: bytearray | bytes = bytearray()
        self.ends = array("I")  # max_stream_bytes stays below 4 GiB
        self.run_seq = array("I")
        self.run_kind = bytearray()
        self.run_part = array("H")
        self.parts: list[str] = []
        self.part_index: dict[str, int] = {}
        self.ckpt: bytearray | bytes = bytearray()  # DIGEST_SIZE bytes per checkpoint
        self.listeners: list[Listener] = []
        #: the pushes of the listeners that gave one (:meth:`MemoryStore.subscribe_live`)
        self.pushes: dict[Listener, Push] | None = None
        #: the push of the one listener, when it gave one: a chunk appended alone goes
        #: to it (``None`` while several listen, or none)
        self.push: Push | None = None

    @property
    def head(self) -> int:
        return len(self.ends)

    def run_of(self, seq: int) -> int:
        """Index of the run holding event ``seq``."""
        return bisect_right(self.run_seq, seq) - 1

    def record(self, seq: int) -> Record:
        """Event ``seq`` as a record (item encoding without the comma)."""
        r = self.run_of(seq)
        start = self.ends[seq - 2] if seq > 1 else 0
        return Record(
            self.run_kind[r],
            self.parts[self.run_part[r]],
            bytes(self.buf[start : self.ends[seq - 1] - 1]),
        )

    def digest_at(self, seq: int) -> bytes:
        if seq == 0:
            return self.seed
        if seq == self.head:
            return self.head_digest
        base = seq - seq % CHECKPOINT
        if base:
            i = (base // CHECKPOINT - 1) * DIGEST_SIZE
            h = bytes(self.ckpt[i : i + DIGEST_SIZE])
        else:
            h = self.seed
        chain = Chain(h, base)
        for s in range(base + 1, seq + 1):
            chain_stored(chain, *self.record(s))
        return chain.digest

    def unsubscribe(self, listener: Listener) -> None:
        """Forget ``listener`` (and its push; once more: nothing)."""
        _remove(self.listeners, listener)
        pushes = self.pushes
        if pushes is not None:
            pushes.pop(listener, None)
        self.refresh_push()

    def refresh_push(self) -> None:
        """The listeners changed: the push in force is the only listener's, if any."""
        listeners, pushes = self.listeners, self.pushes
        self.push = pushes.get(listeners[0]) if pushes and len(listeners) == 1 else None

    def add_run(self, seq: int, kind: int, part: str) -> None:
        """Event ``seq`` starts a run of ``kind`` and ``part``."""
        idx = self.part_index.get(part)
        if idx is None:
            idx = self.part_index[part] = len(self.parts)
            self.parts.append(part)
        self.run_seq.append(seq)
        self.run_kind.append(kind)
        self.run_part.append(idx)

    def notify_all(self) -> None:
        listeners = self.listeners
        if not listeners:
            return
        head = len(self.ends)
        # one reader (the usual case) needs no copy: a copy guards the loop over
        # several against a listener that unsubscribes while called
        for cb in listeners if len(listeners) == 1 else list(listeners):
            try:
                cb(self.stream, head)
            except Exception:  # a listener must never break the producer
                log.exception("stream listener failed stream=%s", self.stream)

    def items(self, first: int, last: int) -> tuple[bytes, int]:
        """The ``items`` JSON array of events ``first..last`` and the kind of the last.

        A run of chunks is one slice of the buffer (see
        :func:`~unbroken.protocol.items.items_array`).
        """
        buf, ends, run_seq, run_kind, run_part = (
            self.buf,
            self.ends,
            self.run_seq,
            self.run_kind,
            self.run_part,
        )
        nruns = len(run_seq)
        r = bisect_right(run_seq, first) - 1
        if r + 1 == nruns or run_seq[r + 1] > last:
            # one run (a live stream's read, almost always): no segment list
            a = ends[first - 2] if first > 1 else 0
            return item_run(
                run_kind[r], self.parts[run_part[r]], buf, a, ends[first - 1], ends[last - 1] - 1
            )
        segments: list[Segment] = []
        seq = first
        while seq <= last:
            seg_end = min(run_seq[r + 1] - 1 if r + 1 < nruns else last, last)
            a = ends[seq - 2] if seq > 1 else 0
            part = self.parts[run_part[r]]
            b = ends[seg_end - 1] - (seg_end == last)  # no comma after the last item
            segments.append((run_kind[r], part, buf, a, ends[seq - 1], b))
            seq = seg_end + 1
            r += 1
        return items_array(segments)


def _remove(listeners: list[Listener], listener: Listener) -> None:
    """Unsubscribe ``listener`` (once more: nothing)."""
    with contextlib.suppress(ValueError):
        listeners.remove(listener)


class MemoryStore:
    """A :class:`~unbroken.store.base.StreamLog` in this process's memory.

    A new epoch is drawn every time one is created (every process start), so a
    client that held a stream from a previous process gets ``gone(epoch)``.
    """

    def __init__(self, retention: Retention | None = None) -> None:
        self.retention = retention or Retention()
        # each stream's producer and readers keep these calls: one bound method each
        # for all of them (an instance attribute), not 64 B more per stream and reader
        for name in ("append_nowait", "append_chunk_nowait", "read_nowait"):
            setattr(self, name, getattr(self, name))
        self._epoch = secrets.token_urlsafe(9)
        self._streams: dict[str, _Stream] = {}
        self._by_req: dict[tuple[str, str, str], str] = {}  # (owner, scope, req)
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._tombstones: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending_listeners: dict[str, list[Listener]] = {}
        self.total_bytes = 0
        self._now = 0.0  # the latest time given to create/finish/sweep (for evictions)

    @property
    def epoch(self) -> str:
        return self._epoch

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------ producer side
    async def create(self, owner: str, req: str, now: float, scope: str = "") -> Created:
        self._now = now
        key = (owner, scope, req)
        existing = self._by_req.get(key)
        if existing is not None and existing in self._streams:
            s = self._streams[existing]
            return Created(existing, self._epoch, False, s.producer)
        # a new stream needs room: refused while running streams fill more than
        # 15/16 of the log (they are never evicted; finished ones are, oldest first)
        limit = self.retention.max_total_bytes
        full = limit - limit // 16
        if self.total_bytes > full:
            self._evict(full, now)
            if self.total_bytes > full:
                raise LogFull(self.retention.retry_after)
        stream = secrets.token_urlsafe(16)
        s = _Stream(stream, owner, req, self._epoch, now, scope)
        self._streams[stream] = s
        self._by_req[key] = stream
        s.listeners.extend(self._pending_listeners.pop(stream, []))
        return Created(stream, self._epoch, True, s.producer)

    async def find(self, owner: str, req: str, scope: str = "") -> Created | None:
        existing = self._by_req.get((owner, scope, req))
        s = self._streams.get(existing) if existing is not None else None
        if existing is None or s is None:
            return None
        return Created(existing, self._epoch, False, s.producer)

    async def append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        return self.append_nowait(stream, producer, batch)

    def append_nowait(self, stream: str, producer: str, batch: AppendBatch) -> int:
        """:meth:`append` without a coroutine: the memory log never waits, so the
        producer appends from a loop callback (no task per stream)."""
        # a paced stream appends every token on its own: locals, no property calls
        s = self._streams.get(stream)
        if s is None or s.producer != producer:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        if s.status != "running":
            raise StaleProducer(f"stream {stream} already ended {s.status}")
        log_ends = s.ends
        head = len(log_ends)
        first, count = batch.first, batch.count
        if first > head + 1:
            raise LogDiverged(stream, head, first - 1)
        skip = head + 1 - first
        if skip >= count:
            return head  # a repeated append: idempotent
        items, ends, runs = batch.items, batch.ends, batch.runs
        b0 = batch.base  # ends[i] - b0: offsets in items
        start = ends[skip - 1] - b0 if skip else 0
        add = len(items) - start
        buf = s.buf
        assert isinstance(buf, bytearray)
        size = len(buf)
        if not (count - skip == 1 and runs and runs[-1].kind == _END):  # an end always fits
            self._make_room(stream, size, add)
        shift = size - start - b0  # ends[i] + shift: offsets in the log
        if skip:
            buf += memoryview(items)[start:]
            log_ends.extend(array("I", [e + shift for e in ends[skip:]]))
        else:
            buf += items
            # the producer's ends are the log's when it knew its size (no per-event add)
            log_ends.extend(array("I", map(shift.__add__, ends)) if shift else ends)
        for run in runs:
            if run.seq > head:
                s.add_run(run.seq, run.kind, run.part)
        digests = batch.digests
        last = first + count - 1
        ckpt_seq = (head // CHECKPOINT + 1) * CHECKPOINT
        if ckpt_seq <= last:
            ckpt = s.ckpt
            assert isinstance(ckpt, bytearray)
            for seq in range(ckpt_seq, last + 1, CHECKPOINT):
                ckpt += digests[seq - first]
        s.head_digest = digests[-1]
        self.total_bytes += add
        s.notify_all()
        return last

    def append_chunk_nowait(
        self,
        stream: str,
        producer: str,
        seq: int,
        kind: int,
        part: str,
        new_run: bool,
        body: str,
        digest: bytes,
    ) -> int:
        """:meth:`append_nowait` of one chunk (a paced stream's token): event ``seq``,
        of ``kind`` and ``part`` (``new_run``: it starts a run), ``body`` its text
        (valid Unicode: the producer checked it), ``digest`` the chain digest after
        it. Encoded straight into the log (no batch); then the stream's one reader,
        when it gave a push (:meth:`subscribe_live`), is handed the event, or else
        every listener is told as after any append. Returns the bytes appended (0
        for a repeated append). Raises as :meth:`append_nowait`, changing nothing."""
        s = self._streams.get(stream)
        if s is None or s.producer != producer:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        if s.status != "running":
            raise StaleProducer(f"stream {stream} already ended {s.status}")
        log_ends = s.ends
        head = len(log_ends)
        if seq != head + 1:
            if seq > head + 1:
                raise LogDiverged(stream, head, seq - 1)
            return 0  # a repeated append: idempotent
        buf = s.buf
        if TYPE_CHECKING:  # (a running stream's log: no isinstance call per token)
            assert isinstance(buf, bytearray)
        size = len(buf)
        # encoded apart, then added: the log grows by CPython's margin (~1/8), not
        # by the encoder's (encode_into leaves half of it again spare)
        enc = chunk_item(body)
        add = len(enc) + 1
        retention = self.retention
        if (
            size + add > retention.max_stream_bytes
            or self.total_bytes + add > retention.max_total_bytes
        ):
            self._make_room(stream, size, add)
        buf += enc
        buf.append(_COMMA)
        log_ends.append(size + add)
        if new_run:
            s.add_run(seq, kind, part)
        if not seq % CHECKPOINT:
            ckpt = s.ckpt
            assert isinstance(ckpt, bytearray)
            ckpt += digest
        s.head_digest = digest
        self.total_bytes += add
        push = s.push
        if push is not None:
            try:
                if push(stream, seq, kind, part, enc, digest):
                    return add
            except Exception:  # a reader must never break the producer: told as usual
                log.exception("stream push failed stream=%s", stream)
        s.notify_all()
        return add

    def _make_room(self, stream: str, size: int, add: int) -> None:
        """Raise unless ``add`` more bytes fit in ``stream`` (holding ``size``) and in
        the log (finished streams are evicted, oldest first, to make room)."""
        retention = self.retention
        if size + add > retention.max_stream_bytes:
            raise StreamTooLarge(
                f"stream {stream} would hold {size + add} bytes, more than "
                f"max_stream_bytes={retention.max_stream_bytes}"
            )
        limit = retention.max_total_bytes
        if self.total_bytes + add > limit:  # the cap holds for every append
            self._evict(limit - add, self._now)
            if self.total_bytes + add > limit:
                raise LogFull(retention.retry_after)

    async def finish(self, stream: str, producer: str, status: str, error: str, now: float) -> None:
        s = self._streams.get(stream)
        if s is None or s.producer != producer:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        self._now = now
        s.status, s.error, s.ended = status, error, now
        # a finished stream never grows again: give back what growth over-allocated
        s.buf, s.ckpt = bytes(s.buf), bytes(s.ckpt)
        s.ends = array("I", s.ends)
        self._finished[stream] = now
        s.notify_all()
        if self.total_bytes > self.retention.max_total_bytes:
            # make room now, but give the stream that just ended a chance to be read
            self._evict(self.retention.max_total_bytes, now, keep=stream)

    async def release(self, stream: str, producer: str, now: float) -> None:
        s = self._streams.get(stream)
        if s is None or s.producer != producer or s.status != "running":
            return  # gone, or ended by someone else
        try:
            self.append_nowait(
                stream, producer, end_batch(s.head + 1, s.head_digest, "failed", "producer_lost")
            )
            await self.finish(stream, producer, "failed", "producer_lost", now)
            log.warning("released stream=%s head=%d: ended failed producer_lost", stream, s.head)
        except Exception:  # pragma: no cover - nothing above can fail for a running stream
            log.exception("could not release stream=%s", stream)

    # ------------------------------------------------------------ reader side
    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        return self.read_nowait(stream, after, max_bytes)

    def read_nowait(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        """:meth:`read` without a coroutine (a connection sends from the append's
        notification, in the same tick)."""
        s = self._streams.get(stream)
        if s is None:
            return None
        ends = s.ends
        head = len(ends)
        if after >= head:
            return None
        start_off = ends[after - 1] if after else 0
        if ends[head - 1] - start_off <= max_bytes:
            end = head  # all of it fits (a live stream's read: a token or a few)
            digest = s.head_digest
        else:
            end = max(bisect_right(ends, start_off + max_bytes, after, head), after + 1)
            if end < head:
                # end on a checkpoint when we can, so the digest is known without hashing
                aligned = end - end % CHECKPOINT
                if aligned > after:
                    end = aligned
            digest = s.digest_at(end)
        run_seq = s.run_seq
        r = bisect_right(run_seq, after + 1) - 1
        if r + 1 == len(run_seq) or run_seq[r + 1] > end:
            # one run (a live stream's read): _Stream.items' first case, inlined
            items, last_kind = item_run(
                s.run_kind[r],
                s.parts[s.run_part[r]],
                s.buf,
                start_off,
                ends[after],
                ends[end - 1] - 1,
            )
        else:
            items, last_kind = s.items(after + 1, end)
        return ReadBatch(
            after + 1, end - after, items, digest, ends[end - 1] - start_off, last_kind
        )

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
            scope=s.scope,
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
        if s is not None:
            s.listeners.append(listener)
            s.refresh_push()  # a second reader: no push (each is told)
            # a partial, not a closure over this frame's cells: ~0.3 KB less a reader
            return partial(s.unsubscribe, listener)
        target = self._pending_listeners.setdefault(stream, [])
        target.append(listener)
        return partial(self._unsubscribe_pending, stream, target, listener)

    def _unsubscribe_pending(self, stream: str, target: list[Listener], listener: Listener) -> None:
        _remove(target, listener)
        if not target:
            self._pending_listeners.pop(stream, None)

    def subscribe_live(self, stream: str, listener: Listener, push: Push) -> Callable[[], None]:
        """:meth:`subscribe`, and while ``listener`` is the stream's only one, a chunk
        appended alone (:meth:`append_chunk_nowait`: a paced token) is handed to
        ``push`` first (:data:`~unbroken.store.base.Push`): a reader that is idle
        sends it on at once, with no read of the log. (A reader subscribed before the
        stream exists is told the usual way.)"""
        unsubscribe = self.subscribe(stream, listener)
        s = self._streams.get(stream)
        if s is not None:  # (its unsubscribe forgets the push too)
            if s.pushes is None:
                s.pushes = {}
            s.pushes[listener] = push
            s.refresh_push()
        return unsubscribe

    # ------------------------------------------------------------ inspection
    async def read_all(self, stream: str) -> tuple[str, Sequence[Event]]:
        """The epoch and every event the log holds for ``stream`` (for checks and
        tests: this builds one object per event)."""
        s = self._streams.get(stream)
        if s is None:
            return self._epoch, []
        return self._epoch, [decode_one(seq, *s.record(seq)) for seq in range(1, s.head + 1)]

    async def read_digests(self, stream: str) -> Sequence[bytes]:
        """The chain digest after each event (recomputed between checkpoints)."""
        s = self._streams.get(stream)
        if s is None:
            return []
        chain = Chain(s.seed)
        return [chain_stored(chain, *s.record(seq)) for seq in range(1, s.head + 1)]

    # ------------------------------------------------------------ retention
    def _drop(self, stream: str, now: float) -> None:
        s = self._streams.pop(stream, None)
        self._finished.pop(stream, None)
        if s is None:
            return
        self.total_bytes -= len(s.buf)
        if self._by_req.get((s.owner, s.scope, s.req)) == stream:
            del self._by_req[(s.owner, s.scope, s.req)]
        self._tombstones[stream] = (s.owner, now)
        # tell readers still attached that the stream is gone (head -1)
        listeners = list(s.listeners)
        s.listeners.clear()
        s.push = s.pushes = None
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
        self._now = now
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
