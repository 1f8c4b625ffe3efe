"""An attachment is a cursor: it pumps one stream's log to one connection.

It replays after the client's seq, then follows the log's head, and coalesces
whatever is ready into one ``events`` frame. How much it may send (the flow window,
``frame_cap``) and what was sent and acked is the session's
(:class:`~unbroken.protocol.server_session.StreamFlow`): the attachment asks its
flow for a budget and tells it about each frame it built.
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Callable
from typing import Final, cast

from ..observe.counts import Counts
from ..protocol.events import Kind
from ..protocol.frames import _EVENTS_FRAME, ServerCodec
from ..protocol.frames_v2 import ServerCodec as ServerCodecV2
from ..protocol.items import _OPENED, _open_chunk, chunk_items
from ..protocol.server_session import StreamFlow
from ..store.base import ReadBatch, StreamLog

_END: Final = int(Kind.END)
#: a v1 ``events`` frame of one chunk: its items array (``chunk_items``) formatted in
_CHUNK_FRAME: Final = _EVENTS_FRAME.replace(b'"items":%b', b'"items":[%b%b}]')


class Attachment:
    """One stream's log read for one connection."""

    __slots__ = (
        "codec",
        "codec_state",
        "counts",
        "flow",
        "head_hint",
        "read_nowait",
        "store",
        "stream",
        "stream_id",
        "unsubscribe",
    )

    def __init__(
        self,
        store: StreamLog,
        stream: str,
        flow: StreamFlow,
        counts: Counts | None = None,
        codec: ServerCodec | ServerCodecV2 | None = None,
    ) -> None:
        #: where events sent are counted (the app's metrics)
        self.counts = counts if counts is not None else Counts()
        self.store = store
        #: encodes the frames in the connection's protocol version
        self.codec = codec if codec is not None else ServerCodec()
        #: what the codec keeps for this attachment (v2: its handle, the current part)
        self.codec_state = self.codec.attached(stream)
        self.stream = stream
        #: the stream id's bytes when the codec is v1's (its ``events`` frame is formatted
        #: here, one call less per frame); ``None`` for v2
        self.stream_id: bytes | None = None if self.codec.binary else stream.encode()
        #: the session's record of this stream on this connection
        self.flow = flow
        self.head_hint = 0  # the log's head as last heard (for coalescing)
        self.unsubscribe: Callable[[], None] | None = None
        nowait = getattr(store, "read_nowait", None)
        #: the store's synchronous read, when it has one (the memory log)
        self.read_nowait = cast(Callable[[str, int, int], ReadBatch | None] | None, nowait)

    @property
    def sent(self) -> int:
        """Last seq sent."""
        return self.flow.sent

    @property
    def acked(self) -> int:
        """Highest seq the client acked."""
        return self.flow.acked

    @property
    def inflight_bytes(self) -> int:
        """Unacked bytes in flight."""
        return self.flow.inflight_bytes

    @property
    def ended(self) -> bool:
        """The end event was sent."""
        return self.flow.ended

    async def next_frame(self) -> bytes | None:
        """The next ``events`` frame to send, or ``None`` if nothing is ready or allowed."""
        flow = self.flow
        budget = flow.budget()
        if budget <= 0 or flow.ended:
            return None
        batch = await self.store.read(self.stream, flow.sent, budget)
        return None if batch is None else self._frame(batch)

    def next_frame_nowait(self) -> bytes | None:
        """:meth:`next_frame` for a store that reads without waiting (``read_nowait``).

        Such a log tells its readers every append's head in the same tick, so once
        the cursor reached :attr:`head_hint` there is nothing to read (a paced
        stream's second read per token, which found nothing, is not made)."""
        flow = self.flow
        if flow.sent >= self.head_hint or flow.ended:
            return None
        budget = flow.budget()
        if budget <= 0:
            return None
        assert self.read_nowait is not None
        stream = self.stream
        batch = self.read_nowait(stream, flow.sent, budget)
        if batch is None:
            return None
        return self.frame(batch.first, batch.count, batch.items, batch.digest, batch.last_kind)

    def _frame(self, batch: ReadBatch) -> bytes:
        return self.frame(batch.first, batch.count, batch.items, batch.digest, batch.last_kind)

    def chunk_frame(self, seq: int, kind: int, part: str, enc: bytes, digest: bytes) -> bytes:
        """:meth:`frame` of one chunk, event ``seq`` of ``kind`` and ``part`` whose
        stored item is ``enc`` (a live stream's token pushed by the log), the same
        bytes as ``frame(seq, 1, chunk_items(kind, part, enc), digest, kind)``: in
        v1 its items array is formatted into the frame (no join, no call). (v1's is
        inlined in :meth:`~unbroken.server.connection.Connection._push`: change both.)"""
        sid = self.stream_id
        if sid is not None:
            head = _OPENED[kind].get(part)
            if head is None:
                head = _open_chunk(kind, part)
            frame = _CHUNK_FRAME % (sid, seq, head, enc, hexlify(digest))
        else:
            frame = self.codec.events(
                self.stream, seq, chunk_items(kind, part, enc), digest, kind, self.codec_state
            )
        self.counts.events_out += 1
        self.flow.sent_frame(seq, len(frame), False)  # (a chunk: never the end)
        return frame

    def frame(self, first: int, count: int, items: bytes, digest: bytes, last_kind: int) -> bytes:
        """The ``events`` frame of events ``first .. first+count-1`` (``items``: their
        items array as the log lays it out, ``digest``: the chain digest after the
        last, of kind ``last_kind``), counted as sent."""
        sid = self.stream_id
        if sid is not None:  # v1's ServerCodec.events, inlined: every token comes this way
            frame = _EVENTS_FRAME % (sid, first, items, hexlify(digest))
        else:
            frame = self.codec.events(
                self.stream, first, items, digest, last_kind, self.codec_state
            )
        self.counts.events_out += count
        self.flow.sent_frame(first + count - 1, len(frame), last_kind == _END)
        return frame
