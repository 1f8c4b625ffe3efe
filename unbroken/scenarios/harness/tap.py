"""The wire tap: ASGI middleware keeping every WebSocket frame the server sends and
receives, per connection (the sequence trace, and what was re-sent after a resume)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...errors import ProtocolError
from ...protocol.frames_v2 import ClientCodec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


@dataclass(slots=True)
class TapFrame:
    """One WebSocket message as the server saw it.

    ``out`` is True for server → client. ``seq`` is an events frame's first seq, a
    resume's ``after``, a resumed's ``from`` or an ack's seq; ``count`` the events in a
    frame (or a resumed's ``head``).
    """

    t: float
    conn: int
    out: bool
    kind: str
    nbytes: int
    stream: str = ""
    seq: int = 0
    count: int = 0
    req: str = ""

    @property
    def last(self) -> int:
        """Last seq of an events frame."""
        return self.seq + self.count - 1

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (empty fields left out)."""
        out: dict[str, object] = {
            "t": round(self.t, 6),
            "conn": self.conn,
            "dir": "out" if self.out else "in",
            "kind": self.kind,
            "bytes": self.nbytes,
        }
        if self.stream:
            out["stream"] = self.stream
        if self.kind in ("events", "resume", "resumed", "ack"):
            out["seq"] = self.seq
        if self.count:
            out["count" if self.kind == "events" else "head"] = self.count
        if self.req:
            out["req"] = self.req
        return out


class _Frame(msgspec.Struct):
    t: str
    stream: str = ""
    seq: int = 0
    req: str = ""
    after: int = 0
    head: int = 0
    from_: int = msgspec.field(default=0, name="from")
    items: list[msgspec.Raw] = msgspec.field(default_factory=list)


_decode_frame = msgspec.json.Decoder(_Frame).decode

#: protocol v2's frame tags (docs/reference/protocol.md §19), by direction
_V2_OUT: dict[int, str] = {
    1: "events",
    2: "welcome",
    3: "started",
    4: "resumed",
    5: "gone",
    6: "resync",
    7: "error",
    8: "hb",
    9: "pong",
    10: "auth_expiring",
    11: "refreshed",
    12: "streams",
}
_V2_IN: dict[int, str] = {
    16: "hello",
    17: "start",
    18: "resume",
    19: "ack",
    20: "cancel",
    21: "refresh",
    22: "ping",
    23: "list",
}


def _split_v2(message: bytes) -> list[bytes]:
    """The frames of a v2 server message (a batch holds several)."""
    try:
        parts = ClientCodec.split(message, 1 << 40, inflate=True)
        return [b for b in parts if isinstance(b, bytes)]
    except ProtocolError:
        return [message]


@dataclass(slots=True)
class TapConnection:
    """One WebSocket connection the server served."""

    id: int
    client: str
    opened: float
    closed: float | None = None
    raw: list[tuple[float, bool, str | bytes]] = field(default_factory=list)
    _frames: list[TapFrame] | None = None
    _decoded: int = 0

    @property
    def frames(self) -> list[TapFrame]:
        """Decoded frames (decoded once, on first use, so the server's hot path only
        appends a reference). A message of several frames (the ``batch`` cap) gives
        one frame per line."""
        if self._frames is None or self._decoded != len(self.raw):
            out: list[TapFrame] = []
            handles: dict[int, str] = {}  # protocol v2: stream handles, from started/resumed
            for t, is_out, msg in self.raw:
                if isinstance(msg, bytes):  # protocol v2: MessagePack
                    parts = _split_v2(msg) if is_out else [msg]
                    out += [self._decode_v2(t, is_out, one, handles) for one in parts]
                    continue
                for line in msg.split("\n") if is_out else (msg,):
                    out.append(self._decode(t, is_out, line.encode()))
            self._frames = out
            self._decoded = len(self.raw)
        return self._frames

    def _decode_v2(self, t: float, is_out: bool, data: bytes, handles: dict[int, str]) -> TapFrame:
        try:
            f = msgspec.msgpack.decode(data)
            tag = f[0]
            kind = (_V2_OUT if is_out else _V2_IN)[tag]
        except (msgspec.DecodeError, TypeError, KeyError, IndexError):
            return TapFrame(t, self.id, is_out, "?", len(data))
        frame = TapFrame(t, self.id, is_out, kind, len(data))
        n = len(f)
        if kind == "events":
            frame.stream = handles.get(f[1], "")
            frame.seq, frame.count = f[2], len(f[3])
        elif kind == "started":
            frame.req, frame.stream = f[1], f[2]
            handles[f[4]] = f[2]
        elif kind == "resumed":
            frame.stream = f[1]
            handles[f[2]] = f[1]
            frame.seq, frame.count = f[3], f[4] if n > 4 else 0
        elif kind in ("resume", "ack"):
            frame.stream, frame.seq = f[1], f[2]
        elif kind == "start":
            frame.req = f[1]
        elif kind in ("gone", "cancel", "resync") and n > 1:
            frame.stream = f[1]
        return frame

    def _decode(self, t: float, is_out: bool, data: bytes) -> TapFrame:
        try:
            f = _decode_frame(data)
        except msgspec.DecodeError:
            return TapFrame(t, self.id, is_out, "?", len(data))
        frame = TapFrame(t, self.id, is_out, f.t, len(data), f.stream, req=f.req)
        if f.t == "events":
            frame.seq, frame.count = f.seq, len(f.items)
        elif f.t == "resume":
            frame.seq = f.after
        elif f.t == "resumed":
            frame.seq, frame.count = f.from_, f.head
        elif f.t == "ack":
            frame.seq = f.seq
        return frame

    @property
    def bytes_out(self) -> int:
        return sum(f.nbytes for f in self.frames if f.out)


class WireTap:
    """ASGI middleware recording every WebSocket message of the app it wraps."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.connections: list[TapConnection] = []
        self._lock = threading.Lock()

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        with self._lock:
            conn = TapConnection(
                len(self.connections) + 1,
                f"{client[0]}:{client[1]}" if client else "",
                self.clock(),
            )
            self.connections.append(conn)
        raw = conn.raw
        clock = self.clock

        async def tapped_receive() -> Message:
            msg = await receive()
            text = msg.get("text")
            if text is not None:
                raw.append((clock(), False, str(text)))
            elif msg.get("bytes") is not None:
                raw.append((clock(), False, bytes(msg["bytes"])))
            return msg

        async def tapped_send(msg: Message) -> None:
            if msg["type"] == "websocket.send":
                text = msg.get("text")
                if text is not None:
                    raw.append((clock(), True, str(text)))
                elif msg.get("bytes") is not None:
                    raw.append((clock(), True, bytes(msg["bytes"])))
            await send(msg)

        try:
            await self.app(scope, tapped_receive, tapped_send)
        finally:
            conn.closed = clock()

    def frames(self) -> list[TapFrame]:
        """Every frame of every connection, in time order."""
        with self._lock:
            conns = list(self.connections)
        return sorted((f for c in conns for f in c.frames), key=lambda f: f.t)

    def events_frames(self, stream: str) -> list[TapFrame]:
        """The ``events`` frames the server sent for ``stream``, in time order."""
        return [f for f in self.frames() if f.out and f.kind == "events" and f.stream == stream]
