"""An attachment is a cursor: it pumps one stream's log to one connection.

It replays after the client's seq, then follows the log's head; it keeps at most
``window`` unacked bytes in flight and coalesces whatever is ready into one
``events`` frame of at most ``frame_cap`` bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from ..protocol.events import Kind
from ..protocol.frames import encode_events_frame
from ..store.base import ReadBatch, StreamLog


class Attachment:
    """State of one stream on one connection."""

    __slots__ = (
        "acked",
        "ended",
        "frame_cap",
        "head_hint",
        "inflight",
        "inflight_bytes",
        "read_nowait",
        "sent",
        "sent_bytes",
        "store",
        "stream",
        "unsubscribe",
        "window",
    )

    def __init__(
        self, store: StreamLog, stream: str, after: int, *, window: int, frame_cap: int
    ) -> None:
        self.store = store
        self.stream = stream
        self.sent = after
        self.acked = after
        self.window = window
        self.frame_cap = frame_cap
        # (last seq of frame, bytes) per frame in flight; a list: a deque costs ~760 B
        # per attachment, and a cumulative ack removes its prefix in one slice
        self.inflight: list[tuple[int, int]] = []
        self.inflight_bytes = 0
        self.sent_bytes = 0
        self.ended = False
        self.head_hint = 0  # the log's head as last heard (for coalescing)
        self.unsubscribe: Callable[[], None] | None = None
        nowait = getattr(store, "read_nowait", None)
        #: the store's synchronous read, when it has one (the memory log)
        self.read_nowait = cast(Callable[[str, int, int], ReadBatch | None] | None, nowait)

    def budget(self) -> int:
        """Bytes this attachment may send now (0 = wait for an ack)."""
        if self.inflight_bytes == 0:
            return self.frame_cap
        return min(self.frame_cap, self.window - self.inflight_bytes)

    async def next_frame(self) -> bytes | None:
        """The next ``events`` frame to send, or ``None`` if nothing is ready or allowed."""
        budget = self.budget()
        if budget <= 0 or self.ended:
            return None
        batch = await self.store.read(self.stream, self.sent, budget)
        return None if batch is None else self._frame(batch)

    def next_frame_nowait(self) -> bytes | None:
        """:meth:`next_frame` for a store that reads without waiting (``read_nowait``)."""
        budget = self.budget()
        if budget <= 0 or self.ended:
            return None
        assert self.read_nowait is not None
        batch = self.read_nowait(self.stream, self.sent, budget)
        return None if batch is None else self._frame(batch)

    def _frame(self, batch: ReadBatch) -> bytes:
        frame = encode_events_frame(self.stream, batch.first, batch.items, batch.digest)
        last = batch.first + batch.count - 1
        self.sent = last
        self.inflight.append((last, len(frame)))
        self.inflight_bytes += len(frame)
        self.sent_bytes += len(frame)
        if batch.last_kind == Kind.END:
            self.ended = True
        return frame

    def ack(self, seq: int) -> bool:
        """Apply a cumulative ack; ``False`` if it acks events never sent."""
        if seq > self.sent:
            return False
        if seq > self.acked:
            self.acked = seq
        q = self.inflight
        k = 0
        while k < len(q) and q[k][0] <= seq:
            self.inflight_bytes -= q[k][1]
            k += 1
        if k:
            del q[:k]
        return True

    @property
    def finished(self) -> bool:
        """The end event was sent and acknowledged."""
        return self.ended and self.acked >= self.sent
