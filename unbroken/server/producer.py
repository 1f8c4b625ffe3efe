"""The producer: turns an agent's writes into digested, batched log appends.

Writes are cheap and synchronous: the event's item encoding is computed at once,
into one growing buffer (no Python object per event), and its UTF-8 body kept for
the chain digest, computed for the whole batch when it is appended (one call per
batch, :meth:`~unbroken.protocol.digest.Chain.chunks`, not one per token). The
first pending write schedules one loop callback that appends whatever is pending
by then, so a tight loop of tokens becomes a few large appends and a paced stream
one small append per token. A store that never waits (``append_nowait``, the
memory store) is appended to inside that callback, with no task, event or lock
per stream; a store with I/O (Redis) gets a task per append, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from array import array
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add
from typing import Final, cast

from ..errors import LogFull, StreamTooLarge
from ..protocol.digest import Chain
from ..protocol.events import Event, Kind, end
from ..protocol.items import chunk_array, chunk_into, encode_one, run_part
from ..store.base import AppendBatch, EventRun, StreamLog

log = logging.getLogger(__name__)

_COMMA: Final = 44
_BACKSLASH: Final = b"\\"
#: Longest error text an ``end`` or ``part_end`` event carries (the wire's short-text).
MAX_ERROR: Final = 4096


def safe_text(text: str, limit: int = MAX_ERROR) -> str:
    """``text`` as an event can always carry it: valid Unicode (a lone surrogate,
    which UTF-8 cannot encode, becomes U+FFFD) and at most ``limit`` characters
    (cut, ending with an ellipsis). Ending a stream must not be able to fail."""
    try:
        text.encode()
    except UnicodeEncodeError:  # surrogates: pairs joined, lone ones replaced
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


class _Due:
    """The producers written to in this loop tick: one loop callback (:meth:`run`)
    flushes them all (a paced stream writes a token a tick; a callback each cost more
    than its append). A producer joins by appending itself to :attr:`producers`,
    scheduling :meth:`run` when it is the first (:meth:`Producer._pend`)."""

    __slots__ = ("producers",)

    def __init__(self) -> None:
        self.producers: list[Producer] = []

    def run(self) -> None:
        producers, self.producers = self.producers, []
        for p in producers:  # in the order they were written to
            try:
                p._tick()
            except Exception:  # pragma: no cover - _tick keeps its errors
                log.exception("flush failed stream=%s", p.stream)


_dues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Due] = weakref.WeakKeyDictionary()


def _due_of(loop: asyncio.AbstractEventLoop) -> _Due:
    due = _dues.get(loop)
    if due is None:
        due = _dues[loop] = _Due()
    return due


class Producer:
    """Single writer of one stream."""

    __slots__ = (
        "_append_chunk",
        "_append_nowait",
        "_base",
        "_buf",
        "_chain",
        "_closed",
        "_digests",
        "_due",
        "_ends",
        "_flushed_at",
        "_head",
        "_head_digest",
        "_hot",
        "_limit",
        "_lock",
        "_loop",
        "_npend",
        "_run_kind",
        "_run_part",
        "_runs",
        "_scheduled",
        "_tasks",
        "_texts",
        "coalesce",
        "error",
        "max_batch",
        "store",
        "stream",
        "token",
    )

    def __init__(
        self,
        store: StreamLog,
        stream: str,
        epoch: str,
        token: str,
        *,
        max_batch: int = 512,
        coalesce: float = 0.0,
    ) -> None:
        self.store = store
        self.stream = stream
        self.token = token
        #: the digest after the last event digested: the events written since are
        #: chunks of the current run (``_run_kind``, ``_run_part``) whose bodies wait
        #: in ``_texts``: encoded and digested at the append (one call each for the
        #: run), or when anything else needs them
        self._chain = Chain.of(stream, epoch)
        self._texts: list[str] = []
        self._head = 0  # what the log holds
        self._head_digest = self._chain.digest
        self.max_batch = max_batch
        self.coalesce = coalesce
        self._flushed_at = 0.0
        self.error: BaseException | None = None
        #: events written but not appended yet, but those in ``_texts``
        self._npend = 0
        #: the part whose text chunks (``Kind.TEXT``) may be appended to ``_texts``
        #: while ``len(_texts) < _limit`` (``Output.text``'s fast path; the first of
        #: a batch then calls :meth:`_pend`): the current run's, while no error is
        #: kept and nothing but that run's chunks is pending; it stays across a
        #: paced token's append (``None`` when a write must come through
        #: :meth:`add_chunk`)
        self._hot: str | None = None
        self._limit = max_batch
        self._buf = bytearray()
        self._ends = array("I")
        self._runs: list[EventRun] = []
        self._digests: list[bytes] = []
        # the run the last event belongs to: (kind, part)
        self._run_kind = 0
        self._run_part = ""
        self._loop = asyncio.get_running_loop()
        self._due = _due_of(self._loop)  # the loop's flushes of this tick
        self._lock: asyncio.Lock | None = None  # orders appends to a store with I/O
        self._closed = False
        self._scheduled = False  # a flush callback is pending
        self._tasks: set[asyncio.Task[None]] | None = None  # appends to a store with I/O
        nowait = getattr(store, "append_nowait", None)
        self._append_nowait = cast(Callable[[str, str, AppendBatch], int] | None, nowait)
        #: the store's append of one chunk without a batch (the memory log's
        #: :meth:`~unbroken.store.memory.MemoryStore.append_chunk_nowait`)
        self._append_chunk = cast(
            Callable[[str, str, int, int, str, bool, str, bytes], int] | None,
            getattr(store, "append_chunk_nowait", None) if nowait is not None else None,
        )
        #: where ``_buf`` starts in the log, for a log appended to at once (the
        #: batch's ``base``: its ``ends`` are then the log's own); 0 for the others
        self._base = 0

    # ---- writes (synchronous; the agent awaits only when a batch is full)
    @property
    def seq(self) -> int:
        """The last event written (appended or pending)."""
        return self._chain.seq + len(self._texts)

    @property
    def pending(self) -> int:
        """Events written but not appended yet."""
        return self._npend + len(self._texts)

    @property
    def digest(self) -> bytes:
        """The chain digest after event :attr:`seq`."""
        self._digest_pending()
        return self._chain.digest

    def _digest_pending(self) -> None:
        """Encode and chain the chunks written but not digested yet: their items join
        the batch's buffer, their digests its digests."""
        self._hot = None  # (the pending count moves out of _texts)
        texts = self._texts
        if len(texts) <= 2:  # a paced agent's: item by item costs less than the set-up
            if texts:
                self._npend += len(texts)
                buf, ends, digests, chain = self._buf, self._ends, self._digests, self._chain
                kind, part, base = self._run_kind, self._run_part, self._base
                for text in texts:
                    data = text.encode()  # (never fails: checked when written)
                    chunk_into(text, buf, -1)
                    buf.append(_COMMA)
                    ends.append(base + len(buf))
                    digests.append(chain.chunk(kind, part, data))
                texts.clear()
            return
        self._npend += len(texts)
        # every item as one JSON array, ``["a","b"]``: when no body needed an escape
        # (every escape has a backslash, and a body's backslash is escaped) it is the
        # items with their commas, and each body's UTF-8 is what lies between quotes
        enc = chunk_array(texts)
        buf, ends = self._buf, self._ends
        if _BACKSLASH not in enc:
            datas = enc[2:-2].split(b'","')  # (no body holds '"': it would be escaped)
            # each item is its body, two quotes and a comma (extended past the offset
            # the run starts at, taken out after)
            k = len(ends)
            ends.extend(
                accumulate(map(add, map(len, datas), repeat(3)), initial=self._base + len(buf))
            )
            del ends[k]
            n = len(buf)
            buf += enc
            del buf[n]  # "[" out, "]" becomes the last item's comma
            buf[-1] = _COMMA
        else:
            datas = list(map(str.encode, texts))  # (each was checked when written)
            base = self._base
            for text in texts:
                chunk_into(text, buf, -1)
                buf.append(_COMMA)
                ends.append(base + len(buf))
        self._chain.chunks(self._run_kind, self._run_part, datas, self._digests)
        texts.clear()

    @property
    def logged(self) -> tuple[int, bytes]:
        """The last event the log holds and the chain digest after it (a resume point)."""
        return self._head, self._head_digest

    def add_chunk(self, kind: int, part: str, body: str) -> None:
        """Append a text/json/data chunk to the pending batch.

        The hot path of every token: keep it free of avoidable calls.
        """
        if self.error is not None:
            raise self.error
        if type(body) is not str:  # (checked here: the batch is encoded at the append)
            if not isinstance(body, str):
                raise TypeError(
                    f"a text, JSON or data delta must be a str, not {type(body).__name__}"
                    " (decode bytes first)"
                )
            body = str(body)  # a str subclass (markupsafe.Markup, numpy.str_): its text
        if not body.isascii():  # a write that fails (lone surrogate) changes nothing
            body.encode()
        texts = self._texts
        if kind != self._run_kind or part != self._run_part:
            part.encode()  # (its digest is computed later: fail now, changing nothing)
            if texts:  # the chunks waiting for their digests are of the run before
                self._digest_pending()
            self._hot = None
            self._runs.append(EventRun(self._chain.seq + 1, kind, part))
            self._run_kind, self._run_part = kind, part
        if not texts and not self._npend:  # the first event pending
            self._pend()
        texts.append(body)  # encoded and digested with the others at the append
        if kind == 1 and self._hot is None:  # Kind.TEXT: Output.text may go straight on
            self._hot = part
            self._limit = self.max_batch - self._npend

    def _pend(self) -> None:
        """An event is written while nothing is pending: its append is scheduled,
        within this tick (after the agent's other writes of the tick), or, when the
        last append is less than ``coalesce`` seconds old (a fast, paced agent), once
        that interval is over, so the tokens written meanwhile share an append (and a
        notification of every reader). A paced agent's every token comes this way,
        from ``Output.text``'s fast path."""
        if not self._scheduled and not self._closed:
            self._scheduled = True
            loop = self._loop
            gap = self._flushed_at + self.coalesce - loop.time() if self.coalesce else 0.0
            if gap > 0:
                loop.call_later(gap, self._tick)
            else:  # this tick's flush
                due = self._due
                producers = due.producers
                if not producers:
                    loop.call_soon(due.run)
                producers.append(self)

    def add(self, event: Event) -> None:
        """Append any event (its ``seq`` is replaced by the next one)."""
        if self.error is not None:
            raise self.error
        if event.kind in (Kind.TEXT, Kind.JSON, Kind.DATA):
            self.add_chunk(event.kind, event.part, event.body)
            return
        self._digest_pending()  # (never fails) this event chains after those
        chain = self._chain
        seq = chain.seq + 1
        ev = Event(
            seq,
            event.kind,
            part=event.part,
            part_kind=event.part_kind,
            mime=event.mime,
            schema=event.schema,
            status=event.status,
            error=event.error,
            count=seq if event.kind is Kind.END else event.count,
        )
        # everything that can fail (encoding) before anything changes
        enc = encode_one(ev)
        digest = chain.event(ev)  # changes nothing if it fails
        self._runs.append(EventRun(seq, ev.kind, run_part(ev)))
        self._run_kind = 0  # the next chunk starts a run of its own
        buf = self._buf
        buf += enc
        buf.append(_COMMA)
        self._ends.append(self._base + len(buf))
        self._digests.append(digest)
        if not self._npend:
            self._pend()
        self._npend += 1

    async def flush(self) -> None:
        """Append everything pending to the log now.

        Raises the error of an earlier failed append (for example
        :class:`~unbroken.store.base.StreamTooLarge` met by the background
        flusher), so an agent never returns "completed" over dropped events.
        """
        if self._append_nowait is not None:
            self._flush_nowait()
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.error is not None:
                raise self.error
            if not self.pending:
                return
            batch = self._take()
            try:
                await self.store.append(self.stream, self.token, batch)
            except Exception as exc:
                self._failed(batch.first, batch.base, exc)
                raise
            self._appended(batch)

    def _flush_nowait(self) -> None:
        assert self._append_nowait is not None
        if self.error is not None:
            raise self.error
        if not self.pending:
            return
        batch = self._take()
        try:
            self._append_nowait(self.stream, self.token, batch)
        except Exception as exc:
            self._failed(batch.first, batch.base, exc)
            raise
        self._appended(batch)

    def _take(self) -> AppendBatch:
        self._digest_pending()
        npend = self._npend
        # every pending event is digested now, and they are the chain's last
        first = self._chain.seq - npend + 1
        batch = AppendBatch(
            first, npend, self._buf, self._ends, self._runs, self._digests, self._base
        )
        if self._append_nowait is not None:  # the next batch follows this one in the log
            self._base += len(self._buf)
        self._buf, self._ends, self._runs, self._digests = bytearray(), array("I"), [], []
        self._npend = 0
        return batch

    def _appended(self, batch: AppendBatch) -> None:
        self._head = batch.first + batch.count - 1
        self._head_digest = batch.digests[-1]

    def _failed(self, first: int, base: int, exc: BaseException) -> None:
        """The append of the events from ``first`` on failed (``base``: where they were
        to start in the log)."""
        log.warning("append failed stream=%s seq=%d error=%r", self.stream, first, exc)
        # what was not appended is dropped: roll back to the log's head, with the
        # events written meanwhile (they follow the failed batch: a gap otherwise)
        self._chain.reset(self._head, self._head_digest)
        self._texts.clear()
        self._run_kind = 0
        self._hot = None
        self._base = base  # (a log in memory is left as it was)
        self._buf, self._ends, self._runs, self._digests = bytearray(), array("I"), [], []
        self._npend = 0
        self.error = exc

    def _tick(self) -> None:
        self._scheduled = False
        if self._closed or self.error is not None:
            return
        texts = self._texts
        append_chunk = self._append_chunk
        if len(texts) == 1 and not self._npend and append_chunk is not None:
            # one chunk (a paced stream's token), appended with the store's
            # append_chunk_nowait: digested and handed over as it is, no batch (its
            # reader, when idle, sends it on from the store's push in the same call)
            self._flushed_at = self._loop.time()
            try:  # an error is kept in self.error; the agent sees it on its next write
                body = texts[0]
                chain = self._chain
                kind, part = self._run_kind, self._run_part
                digest = chain.chunk(kind, part, body.encode())  # (checked when written)
                seq = chain.seq
                texts.clear()  # (the run stays hot: its next chunk calls _pend)
                runs = self._runs
                try:
                    new_run = True if runs else False  # noqa: SIM210 - bool() is a call a token
                    add = append_chunk(
                        self.stream, self.token, seq, kind, part, new_run, body, digest
                    )
                except Exception as exc:
                    self._failed(seq, self._base, exc)
                    raise
                if runs:
                    runs.clear()
                self._base += add
                self._head, self._head_digest = seq, digest
            except Exception:
                pass
            return
        if not self.pending:
            return
        self._flushed_at = self._loop.time()
        if self._append_nowait is not None:
            # an error is kept in self.error; the agent sees it on its next write
            try:  # noqa: SIM105 - no contextlib.suppress: this runs per paced token
                self._flush_nowait()
            except Exception:
                pass
            return
        task = self._loop.create_task(self._flush_quietly(), name=f"unbroken-flush-{self.stream}")
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(Exception):  # kept in self.error, raised by the next flush
            await self.flush()

    async def finish(self, status: str, error: str, now: float) -> tuple[str, str]:
        """Append the ``end`` event, flush and mark the stream ended.

        Returns the status and error actually written: a run that was about to
        end ``completed`` ends ``failed: stream_too_large`` when its last events
        did not fit in the log. The error text is made safe to write
        (:func:`safe_text`): only the store can fail this.
        """
        error = safe_text(error)
        self._closed = True
        if self.error is None:
            try:
                await self.flush()
            except StreamTooLarge as exc:
                if status == "completed":
                    status, error = "failed", f"stream_too_large: {exc}"
            except LogFull as exc:
                if status == "completed":
                    status, error = "failed", f"log_full: {exc}"
            except Exception:  # logged by flush; the end event below says what happened
                pass
        self.error = None
        self.add(end(0, status, error))  # type: ignore[arg-type]
        await self.flush()
        await self.store.finish(self.stream, self.token, status, error, now)
        return status, error

    def abandon(self) -> None:
        """Stop without writing (fenced out or store gone)."""
        self._closed = True
        self._hot = None
        for task in list(self._tasks or ()):
            task.cancel()
