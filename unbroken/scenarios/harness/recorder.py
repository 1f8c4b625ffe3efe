"""The client side of a run: :class:`StreamRecorder` consumes a client
:class:`~unbroken.client.Stream`, keeping each event (as a protocol
:class:`~unbroken.protocol.events.Event`) and when it arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable

from ...chaos import GeneratedAnswer
from ...client import (
    Answer,
    DataChunk,
    JsonFragment,
    PartEnded,
    PartStarted,
    Stream,
    StreamEnded,
    StreamEvent,
    TextDelta,
)
from ...errors import UnbrokenError
from ...protocol.events import Event, Kind


def event_of(ev: StreamEvent) -> Event:
    """The protocol :class:`Event` a typed client event was made from."""
    if isinstance(ev, TextDelta):
        return Event(ev.seq, Kind.TEXT, part=ev.part, body=ev.text)
    if isinstance(ev, JsonFragment):
        return Event(ev.seq, Kind.JSON, part=ev.part, body=ev.fragment)
    if isinstance(ev, DataChunk):
        return Event(ev.seq, Kind.DATA, part=ev.part, body=ev.body)
    if isinstance(ev, PartStarted):
        schema = json.dumps(ev.schema, sort_keys=True, separators=(",", ":")) if ev.schema else ""
        return Event(
            ev.seq, Kind.PART_START, part=ev.part, part_kind=ev.kind, mime=ev.mime, schema=schema
        )
    if isinstance(ev, PartEnded):
        return Event(ev.seq, Kind.PART_END, part=ev.part, error=ev.error)
    assert isinstance(ev, StreamEnded)
    return Event(ev.seq, Kind.END, status=ev.status, error=ev.error, count=ev.seq)


class StreamRecorder:
    """Consumes a client stream and keeps every event with its arrival time.

    ``events`` are the events as the user saw them, ``times`` their monotonic arrival
    times, ``answer`` the verified answer (or ``error`` the exception that ended the
    stream). ``on_event`` is called after each event (for progress triggers).
    """

    def __init__(
        self,
        stream: Stream,
        expected: GeneratedAnswer | None = None,
        *,
        key: str = "",
        started_at: float | None = None,
        on_event: Callable[[StreamRecorder], None] | None = None,
    ) -> None:
        self.stream = stream
        self.expected = expected
        self.key = key
        self.started_at = started_at if started_at is not None else time.monotonic()
        self.on_event = on_event
        self.events: list[Event] = []
        self.times = array("d")
        self.body_bytes = 0
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.part_starts: Counter[str] = Counter()
        self.settled_at: float | None = None
        """When the client's session had the whole answer (or gave up): the user may read
        the last events a little later (:attr:`ended_at`)."""
        self._task: asyncio.Task[None] | None = None
        self._settle: asyncio.Task[None] | None = None

    def run(self) -> asyncio.Task[None]:
        """Start consuming (once); returns the task."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._consume())
            self._settle = loop.create_task(self._settled())
        return self._task

    async def _settled(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.wait()
        self.settled_at = time.monotonic()

    async def done(self) -> None:
        """Wait until the stream ended (completed or failed)."""
        await asyncio.shield(self.run())

    async def _consume(self) -> None:
        clock = time.monotonic
        try:
            async for ev in self.stream:
                self.times.append(clock())
                event = event_of(ev)
                self.events.append(event)
                if event.kind <= Kind.DATA:
                    self.body_bytes += len(event.body)
                elif event.kind == Kind.PART_START:
                    self.part_starts[event.part] += 1
                if self.on_event is not None:
                    self.on_event(self)
            self.answer = await self.stream.wait()
        except UnbrokenError as exc:
            self.error = exc
        finally:
            self.ended_at = clock()

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def count_at(self, t: float) -> int:
        """How many events the user had at monotonic time ``t``."""
        return bisect_right(self.times, t)

    def first_event_after(self, t: float) -> float | None:
        """Arrival time of the first event after monotonic time ``t``."""
        k = self.count_at(t)
        return self.times[k] if k < len(self.times) else None

    def seq_at(self, t: float) -> int:
        """The last seq the user had received at monotonic time ``t``."""
        k = self.count_at(t)
        return self.events[k - 1].seq if k else 0
