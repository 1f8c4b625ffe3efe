"""The producer: turns an agent's writes into digested, batched log appends.

Writes are cheap and synchronous (digest + encode); a flusher task appends
whatever is pending once per event-loop tick, so a tight loop of tokens becomes
a few large appends and a paced stream one small append per token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from ..protocol.digest import seed, step
from ..protocol.events import Event, Kind, end, payload
from ..protocol.frames import encode_json
from ..store.base import Record, StaleProducer, StreamLog, StreamTooLarge
from ..store.records import to_record

log = logging.getLogger(__name__)

_TEXT: Final = int(Kind.TEXT)


class Producer:
    """Single writer of one stream."""

    def __init__(
        self,
        store: StreamLog,
        stream: str,
        epoch: str,
        token: str,
        *,
        max_batch: int = 512,
    ) -> None:
        self.store = store
        self.stream = stream
        self.token = token
        self.seq = 0
        self.digest = seed(stream, epoch)
        self._head = 0  # what the log holds
        self._head_digest = self.digest
        self.max_batch = max_batch
        self.error: BaseException | None = None
        self._records: list[Record] = []
        self._digests: list[bytes] = []
        self._first = 1
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(
            self._flusher(), name=f"unbroken-flush-{stream}"
        )

    # ---- writes (synchronous; the agent awaits only when a batch is full)
    def add_chunk(self, kind: int, part: str, body: str) -> None:
        """Append a text/json/data chunk to the pending batch."""
        if self.error is not None:
            raise self.error
        seq = self.seq + 1
        self.digest = step(self.digest, seq, kind, part.encode() + b"\x00" + body.encode())
        self.seq = seq
        if not self._records:
            self._first = seq
            self._wake.set()
        self._records.append(Record(kind, part, encode_json(body)))
        self._digests.append(self.digest)

    def add(self, event: Event) -> None:
        """Append any event (its ``seq`` is replaced by the next one)."""
        if self.error is not None:
            raise self.error
        seq = self.seq + 1
        ev = Event(
            seq,
            event.kind,
            part=event.part,
            body=event.body,
            part_kind=event.part_kind,
            mime=event.mime,
            schema=event.schema,
            status=event.status,
            error=event.error,
            count=seq if event.kind is Kind.END else event.count,
        )
        self.digest = step(self.digest, seq, ev.kind, payload(ev))
        self.seq = seq
        if not self._records:
            self._first = seq
            self._wake.set()
        self._records.append(Record(*to_record(ev)))
        self._digests.append(self.digest)

    @property
    def pending(self) -> int:
        return len(self._records)

    async def flush(self) -> None:
        """Append everything pending to the log now.

        Raises the error of an earlier failed append (for example
        :class:`~unbroken.store.base.StreamTooLarge` met by the background
        flusher), so an agent never returns "completed" over dropped events.
        """
        async with self._lock:
            if self.error is not None:
                raise self.error
            if not self._records:
                return
            records, digests, first = self._records, self._digests, self._first
            self._records, self._digests = [], []
            self._wake.clear()
            try:
                await self.store.append(self.stream, self.token, first, records, digests)
            except Exception as exc:
                log.warning("append failed stream=%s seq=%d error=%r", self.stream, first, exc)
                # what was not appended is dropped: roll back to the log's head
                self.seq, self.digest = self._head, self._head_digest
                self._records, self._digests = [], []
                self.error = exc
                raise
            self._head, self._head_digest = first + len(records) - 1, digests[-1]

    async def _flusher(self) -> None:
        while not self._closed:
            await self._wake.wait()
            # let the agent add more in this tick before appending
            await asyncio.sleep(0)
            try:
                await self.flush()
            except StaleProducer:
                return
            except Exception:
                return

    async def finish(self, status: str, error: str, now: float) -> tuple[str, str]:
        """Append the ``end`` event, flush and mark the stream ended.

        Returns the status and error actually written: a run that was about to
        end ``completed`` ends ``failed: stream_too_large`` when its last events
        did not fit in the log.
        """
        self._closed = True
        self._wake.set()
        if self.error is None:
            try:
                await self.flush()
            except StreamTooLarge as exc:
                if status == "completed":
                    status, error = "failed", f"stream_too_large: {exc}"
            except Exception:  # logged by flush; the end event below says what happened
                pass
        self.error = None
        self.add(end(0, status, error))  # type: ignore[arg-type]
        await self.flush()
        await self.store.finish(self.stream, self.token, status, error, now)
        self._task.cancel()
        return status, error

    def abandon(self) -> None:
        """Stop without writing (fenced out or store gone)."""
        self._closed = True
        self._task.cancel()
