"""The StreamLog protocol: what the hub and attachments need from a log backend.

The log is the buffer: agents append, connections read. Two backends implement
it: :class:`~unbroken.store.memory.MemoryStore` (one process) and, later, a
Redis Streams store (any node). The hub never knows which one it talks to.

Events travel encoded, never as Python objects per event. A producer appends an
:class:`AppendBatch`: the *item* encoding of each event (a JSON string for a
chunk, the whole item object for the other kinds, as in an ``events`` frame's
``items``) each followed by a comma, the end offset of each, the points where a
*run* starts (consecutive chunks of one kind and part form a run; every other
event is a run of its own) and the digest after each event. A reader gets a
:class:`ReadBatch` whose ``items`` is the ready JSON array of an ``events``
frame, so a catch-up of thousands of events costs a few memory copies.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, runtime_checkable


class Record(NamedTuple):
    """One stored event: ``enc`` is its stored item (no trailing comma; see
    :mod:`unbroken.protocol.items`), ``kind`` and ``part`` its run's."""

    kind: int
    part: str
    enc: bytes


class EventRun(NamedTuple):
    """Event ``seq`` starts a run of events of one ``kind`` and ``part``: consecutive
    chunks of one kind and part, or any other event alone (not an agent run: that is
    :class:`unbroken.server.hub.Run`)."""

    seq: int
    kind: int
    part: str


@dataclass(slots=True)
class AppendBatch:
    """Events ``first .. first+count-1``, encoded (see the module docstring).

    Built per append (a paced stream: per token), so not frozen: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    three times the cost. Treat it as read-only once built.

    ``items`` holds each event's item encoding followed by ``b","``; ``ends[i] - base``
    is the offset in ``items`` just after event ``first+i``'s comma (``base``: where
    the producer expects ``items`` to start in the stream's log, so that a log that
    holds exactly that many bytes takes ``ends`` as they are; 0 when it does not
    know: then ``ends`` are offsets in ``items``); ``runs``
    lists where runs start (a batch continuing the log's last run lists none
    for it); ``digests[i]`` is the chain digest after event ``first+i``.
    """

    first: int
    count: int
    items: bytes | bytearray
    ends: array[int]
    runs: list[EventRun]
    digests: list[bytes]
    base: int = 0

    def rebased(self) -> AppendBatch:
        """This batch with ``base`` 0 (``ends`` offsets in ``items``)."""
        if not self.base:
            return self
        b = self.base
        ends = array("I", [e - b for e in self.ends])
        return AppendBatch(self.first, self.count, self.items, ends, self.runs, self.digests)


@dataclass(slots=True)
class ReadBatch:
    """Events ``first .. first+count-1`` ready for an ``events`` frame (built per
    read, so not frozen, as :class:`AppendBatch`; read-only once built).

    ``items`` is the frame's JSON ``items`` array, ``digest`` the chain digest
    after the last event, ``nbytes`` the stored bytes read, ``last_kind`` the
    kind of the last event (``Kind.END`` once the stream is complete).
    """

    first: int
    count: int
    items: bytes
    digest: bytes
    nbytes: int
    last_kind: int


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """A stream's metadata."""

    stream: str
    owner: str
    req: str
    status: str  # running | completed | failed | cancelled
    head: int
    digest: bytes
    nbytes: int
    created: float
    ended: float | None
    error: str = ""
    producer: str = ""
    scope: str = ""  # the request-id scope it was started in ("" = the owner's own)


@dataclass(frozen=True, slots=True)
class Created:
    """Result of :meth:`StreamLog.create`: ``created`` is False for a repeated request."""

    stream: str
    epoch: str
    created: bool
    producer: str


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how much a log keeps.

    ``ttl`` seconds after a stream ends its events are dropped (a tombstone says
    ``expired`` for ``tombstone_ttl`` more). A running stream may hold at most
    ``max_stream_bytes``; beyond that its run fails with ``stream_too_large``.
    When all streams together exceed ``max_total_bytes`` the oldest finished
    streams are evicted; running streams never are, and while the log is still
    full new starts are refused (``overloaded``, retry after ``retry_after``).
    """

    ttl: float = 600.0
    tombstone_ttl: float = 3600.0
    max_stream_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    retry_after: float = 1.0


Listener = Callable[[str, int], None]
"""Called with ``(stream, head)`` after every append or status change, and with a
negative ``head`` when readers must give the stream up (they then answer ``gone``):
:data:`DROPPED` when retention drops it, :data:`DIVERGED` when the log lost events
readers may already hold."""

Push = Callable[[str, int, int, str, bytes, bytes], bool]
"""A reader's taker of one chunk just appended (the memory log's
:meth:`~unbroken.store.memory.MemoryStore.subscribe_live`): called with ``(stream,
seq, kind, part, enc, digest)``, where ``enc`` is event ``seq``'s stored item
(:data:`~unbroken.protocol.items.chunk_item`) and ``digest`` the chain digest after
it; ``True`` when the reader took it (it was sent on), ``False`` to be told the usual
way (its :data:`Listener`)."""

#: ``head`` given to listeners of a stream retention dropped: ``gone(expired)``.
DROPPED: Final = -1
#: ``head`` given to listeners of a stream whose log lost events it had acknowledged
#: (a Redis back from an older snapshot): ``gone(diverged)``. A listener that knows
#: only :data:`DROPPED` treats every negative head as dropped.
DIVERGED: Final = -2


class LiveEntry(NamedTuple):
    """A running stream of a principal, as the log holds it: its ``head`` and the
    chain digest after it."""

    stream: str
    agent: str
    head: int
    digest: bytes


@runtime_checkable
class LiveIndex(Protocol):
    """A log that lists a principal's running streams itself, whichever node runs
    them (RedisStore): ``list`` is then answered the same on every node."""

    async def create(
        self, owner: str, req: str, now: float, scope: str = "", *, agent: str = ""
    ) -> Created:
        """As :meth:`StreamLog.create`, remembering the run's ``agent`` for the list."""
        ...

    async def live_streams(self, owner: str, scope: str = "") -> list[LiveEntry]:
        """The running streams of ``(owner, scope)``, oldest first."""
        ...


class StreamLog(Protocol):
    """A log of streams; see the module docstring."""

    @property
    def epoch(self) -> str:
        """Storage generation; changes whenever stored events may have been lost."""
        ...

    async def create(self, owner: str, req: str, now: float, scope: str = "") -> Created:
        """Create a stream for ``(owner, scope, req)``, or return the one already created.

        Raises :class:`LogFull` when no room can be made.
        """
        ...

    async def find(self, owner: str, req: str, scope: str = "") -> Created | None:
        """The stream already created for ``(owner, scope, req)``, or ``None``: how
        a repeated start is answered while new runs are refused (admission)."""
        ...

    async def append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        """Append a batch of events; returns the new head.

        Fenced: raises :class:`StaleProducer` unless ``producer`` owns the stream.
        Idempotent: events at or below the head are skipped, not duplicated.
        """
        ...

    async def finish(self, stream: str, producer: str, status: str, error: str, now: float) -> None:
        """Mark a stream ended (its ``end`` event must already be appended)."""
        ...

    async def release(self, stream: str, producer: str, now: float) -> None:
        """Give up a stream whose ``end`` its producer could not write.

        The store ends it ``failed: producer_lost`` itself if it can; else it stops
        vouching for it (a Redis lease lapses) so that any node ends it so later.
        Never raises: it is the last thing a run does.
        """
        ...

    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        """Events after ``after`` (at least one if any, up to about ``max_bytes``)."""
        ...

    async def meta(self, stream: str) -> StreamMeta | None:
        """A stream's metadata, or ``None`` if unknown or expired."""
        ...

    async def tombstone(self, stream: str) -> str | None:
        """Owner of an expired stream still remembered, else ``None``."""
        ...

    async def digest_at(self, stream: str, seq: int) -> bytes | None:
        """Digest after event ``seq`` (the seed for 0), or ``None`` if not held."""
        ...

    def subscribe(self, stream: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change of ``stream``; returns an unsubscribe."""
        ...

    async def sweep(self, now: float) -> int:
        """Apply retention; returns how many streams were dropped."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...
