"""Wire frames of protocol v2: binary MessagePack arrays with small integer tags.

The frames mean what v1's mean (:mod:`unbroken.protocol.frames`); only the bytes
differ. Each WebSocket message is a **binary** message holding one MessagePack array
whose first element is the frame's tag; the other elements are the v1 fields in a
fixed order (trailing ones with defaults may be left out). Events go as in v1
(a bare string is a chunk of the frame's current part), but as MessagePack strings
and small arrays, and the server names a stream by a short per-connection
**handle** (a small integer given in ``started``/``resumed``) in ``events``
frames. The digest after a frame (``h``) is 8 bytes, the first half of the chain
value, except in the frame that carries ``end``: the full 16. See
docs/reference/protocol.md §19.

The decoders turn v2 frames into the v1 frame objects (``Hello``, ``Ack``,
``Welcome``…), so the session state machines are the same for both versions; only
``events`` has its own fast path (:class:`EventsV2`). They raise
:class:`~unbroken.errors.ProtocolError` for anything that is not a valid frame and
nothing else.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from ..errors import ProtocolError
from .codes import CloseCode
from .events import Kind
from .frames import (
    MAX_ERROR_TEXT,
    Ack,
    AgentName,
    AnonKey,
    AuthExpiring,
    Cancel,
    Caps,
    ClientFrame,
    Epoch,
    Error,
    Gone,
    Hb,
    Hello,
    Limits,
    List,
    LiveStream,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    ReqId,
    Resume,
    Resumed,
    Resync,
    ServerFrame,
    ShortText,
    Start,
    Started,
    StreamId,
    Streams,
    Token,
    UnixTime,
    Welcome,
    _reject_duplicate_keys,
    excerpt,
)
from .items import Item2, Seq

SUBPROTOCOL: Final = "unbroken.v2"
#: Capability (v2 only): the server MAY send a large message compressed, as the frame
#: ``[13, bin]`` whose bytes are the message deflated (zlib, RFC 1950), each on its own.
CAP_ZLIB: Final = "zlib"
#: messages at least this big are compressed when ``zlib`` is in force (smaller ones,
#: a paced token's frame, gain nothing from compression on their own)
ZLIB_MIN: Final = 2048
#: bytes of ``h`` in an ``events`` frame that does not carry ``end`` (the chain
#: value's first half); the frame that carries ``end`` has all 16
SHORT_DIGEST: Final = 8
DIGEST: Final = 16

# ---------------------------------------------------------------- tags
#: server → client frame tags
T_BATCH: Final = 0
T_EVENTS: Final = 1
T_WELCOME: Final = 2
T_STARTED: Final = 3
T_RESUMED: Final = 4
T_GONE: Final = 5
T_RESYNC: Final = 6
T_ERROR: Final = 7
T_HB: Final = 8
T_PONG: Final = 9
T_AUTH_EXPIRING: Final = 10
T_REFRESHED: Final = 11
T_ZLIB: Final = 13
T_STREAMS: Final = 12
#: client → server frame tags
T_HELLO: Final = 16
T_START: Final = 17
T_RESUME: Final = 18
T_ACK: Final = 19
T_CANCEL: Final = 20
T_REFRESH: Final = 21
T_PING: Final = 22
T_LIST: Final = 23

Handle = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Digest = Annotated[bytes, Meta(min_length=SHORT_DIGEST, max_length=DIGEST)]
FullDigest = Annotated[bytes, Meta(min_length=DIGEST, max_length=DIGEST)]


class _A(Struct, array_like=True, frozen=True):
    pass


class _C(_A, forbid_unknown_fields=True, frozen=True):
    """A client frame: extra elements are a bad frame (§19.1), not skipped."""


# ---------------------------------------------------------------- client -> server
class Hello2(_C, tag=T_HELLO, frozen=True):
    caps: Caps = []
    token: Token | None = None
    anon: AnonKey | None = None


class Start2(_C, tag=T_START, frozen=True):
    req: ReqId
    agent: AgentName
    #: the input as JSON text (the same JSON rules as v1: one value, no repeated key)
    input: Annotated[str, Meta(min_length=1)] = "null"


class Resume2(_C, tag=T_RESUME, frozen=True):
    stream: StreamId
    after: Seq
    epoch: Epoch
    h: FullDigest | None = None


class Ack2(_C, tag=T_ACK, frozen=True):
    stream: StreamId
    seq: Seq


class Cancel2(_C, tag=T_CANCEL, frozen=True):
    stream: StreamId


class Refresh2(_C, tag=T_REFRESH, frozen=True):
    token: Token


class Ping2(_C, tag=T_PING, frozen=True):
    n: Seq = 0


class List2(_C, tag=T_LIST, frozen=True):
    n: Seq = 0


# ---------------------------------------------------------------- server -> client
class EventsV2(_A, tag=T_EVENTS, frozen=True, gc=False):
    """Events ``seq .. seq+len(items)-1`` of the stream of ``handle``; ``h`` is the
    chain value after the last (its first 8 bytes, or all 16 with ``end``)."""

    handle: Handle
    seq: Annotated[int, Meta(ge=1, le=2**53)]
    items: Annotated[list[Item2], Meta(min_length=1)]
    h: Digest

    def __post_init__(self) -> None:
        if len(self.h) not in (SHORT_DIGEST, DIGEST):
            raise ValueError(f"h has {len(self.h)} bytes: 8, or 16 with end")


class Welcome2(_A, tag=T_WELCOME, frozen=True):
    session: Annotated[str, Meta(max_length=64)]
    heartbeat_ms: Annotated[int, Meta(ge=1)]
    epoch: Epoch
    limits: Limits = Limits()
    caps: Caps = []
    anon: AnonKey | None = None
    auth_exp: UnixTime | None = None


class Started2(_A, tag=T_STARTED, frozen=True):
    req: ReqId
    stream: StreamId
    epoch: Epoch
    handle: Handle


class Resumed2(_A, tag=T_RESUMED, frozen=True):
    stream: StreamId
    handle: Handle
    from_: Seq
    head: Seq = 0
    status: Literal["running", "completed", "failed", "cancelled"] = "running"


class Gone2(_A, tag=T_GONE, frozen=True):
    stream: StreamId
    reason: Literal["unknown", "expired", "epoch", "diverged", "forbidden"]
    message: ShortText = ""


class Resync2(_A, tag=T_RESYNC, frozen=True):
    stream: StreamId
    reason: ShortText = ""


class Error2(_A, tag=T_ERROR, frozen=True):
    code: Annotated[str, Meta(max_length=64)]
    message: ShortText = ""
    stream: StreamId | None = None
    req: ReqId | None = None
    retry_after_ms: Annotated[int, Meta(ge=0)] | None = None


class Hb2(_A, tag=T_HB, frozen=True):
    pass


class Pong2(_A, tag=T_PONG, frozen=True):
    n: Seq = 0


class AuthExpiring2(_A, tag=T_AUTH_EXPIRING, frozen=True):
    in_ms: Annotated[int, Meta(ge=0)]


class Refreshed2(_A, tag=T_REFRESHED, frozen=True):
    exp: UnixTime | None = None


class LiveStream2(Struct, array_like=True, frozen=True):
    """An item of ``streams``: ``[stream, agent, epoch, head, h, status]`` (``h`` the
    16 raw bytes of the digest)."""

    stream: StreamId
    agent: AgentName
    epoch: Epoch
    head: Seq
    h: FullDigest
    status: Literal["running"] = "running"


class Streams2(_A, tag=T_STREAMS, frozen=True):
    n: Seq = 0
    items: Annotated[list[LiveStream2], Meta(max_length=10_000)] = []


OneServerFrame2 = (
    EventsV2
    | Welcome2
    | Started2
    | Resumed2
    | Gone2
    | Resync2
    | Error2
    | Hb2
    | Pong2
    | AuthExpiring2
    | Refreshed2
    | Streams2
)


class Batch2(_A, tag=T_BATCH, frozen=True):
    """Several server frames in one message (cap ``batch``)."""

    frames: Annotated[list[OneServerFrame2], Meta(min_length=1)]


ServerFrame2 = OneServerFrame2 | Batch2
ClientFrame2 = Hello2 | Start2 | Resume2 | Ack2 | Cancel2 | Refresh2 | Ping2 | List2

_server_decoder: Final = msgspec.msgpack.Decoder(OneServerFrame2)
_client_decoder: Final = msgspec.msgpack.Decoder(ClientFrame2)
_encoder: Final = msgspec.msgpack.Encoder()
_encode: Final = _encoder.encode
_json_any: Final = msgspec.json.Decoder()
_json_encode: Final = msgspec.json.Encoder().encode


_DEFAULTS: dict[type, tuple[int, tuple[str, ...], tuple[Any, ...]]] = {}


def _compact(frame: Struct) -> bytes:
    """An array-like frame encoded with its trailing fields that hold their default
    left out (a decoder fills them in)."""
    t = type(frame)
    spec = _DEFAULTS.get(t)
    if spec is None:
        fs = msgspec.structs.fields(t)
        spec = _DEFAULTS[t] = (
            int(t.__struct_config__.tag or 0),
            tuple(f.name for f in fs),
            tuple(
                f.default
                if f.default is not msgspec.NODEFAULT
                else (f.default_factory() if f.default_factory is not msgspec.NODEFAULT else _REQ)
                for f in fs
            ),
        )
    tag, names, defaults = spec
    values = [getattr(frame, n) for n in names]
    n = len(values)
    while n and defaults[n - 1] is not _REQ and values[n - 1] == defaults[n - 1]:
        n -= 1
    return _encode((tag, *values[:n]))


_REQ: Final = object()


def _decode(decoder: Any, data: bytes | str, max_size: int) -> Any:
    if isinstance(data, str):
        raise ProtocolError("text frames are not part of protocol v2", CloseCode.BAD_FRAME)
    if len(data) > max_size:
        raise ProtocolError(
            f"frame of {len(data)} bytes exceeds the limit of {max_size} bytes",
            CloseCode.TOO_BIG,
        )
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(excerpt(f"invalid frame: {exc}"), CloseCode.BAD_FRAME) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(excerpt(f"malformed frame: {exc}"), CloseCode.BAD_FRAME) from None
    except Exception as exc:  # defensive: nothing but ProtocolError may escape
        raise ProtocolError(excerpt(f"undecodable frame: {exc!r}"), CloseCode.BAD_FRAME) from None


# ---------------------------------------------------------------- client frames
def encode_client(frame: ClientFrame) -> bytes:
    """A client frame (a v1 frame object) as the bytes of a v2 binary message."""
    t = type(frame)
    if t is Ack:
        assert isinstance(frame, Ack)
        return _encode((T_ACK, frame.stream, frame.seq))
    if t is Ping:
        assert isinstance(frame, Ping)
        return _encode((T_PING, frame.n))
    if t is Hello:
        assert isinstance(frame, Hello)
        return _compact(Hello2(frame.caps, frame.token, frame.anon))
    if t is Start:
        assert isinstance(frame, Start)
        return _compact(Start2(frame.req, frame.agent, _json_encode(frame.input).decode()))
    if t is Resume:
        assert isinstance(frame, Resume)
        h = bytes.fromhex(frame.h) if frame.h is not None else None
        return _compact(Resume2(frame.stream, frame.after, frame.epoch, h))
    if t is Cancel:
        assert isinstance(frame, Cancel)
        return _encode((T_CANCEL, frame.stream))
    if t is Refresh:
        assert isinstance(frame, Refresh)
        return _encode((T_REFRESH, frame.token))
    if t is List:
        assert isinstance(frame, List)
        return _compact(List2(frame.n))
    raise TypeError(f"not a client frame: {t.__name__}")


def peek_tag(data: bytes | str, max_size: int) -> int:
    """The tag of a frame without decoding the rest: the first bytes of a MessagePack
    array whose first element is a positive fixint. Raises :class:`ProtocolError` for
    anything else (text, too big, not an array, no tag)."""
    if isinstance(data, str):
        raise ProtocolError("text frames are not part of protocol v2", CloseCode.BAD_FRAME)
    if len(data) > max_size:
        raise ProtocolError(
            f"frame of {len(data)} bytes exceeds the limit of {max_size} bytes",
            CloseCode.TOO_BIG,
        )
    if len(data) < 2 or not 0x91 <= data[0] <= 0x9F or data[1] > 0x7F:
        raise ProtocolError(
            "malformed frame: not a MessagePack array starting with a tag", CloseCode.BAD_FRAME
        )
    return data[1]


def decode_client(data: bytes | str, max_size: int) -> ClientFrame:
    """Decode a v2 client frame to its v1 frame object or raise :class:`ProtocolError`.

    ``start``'s input is JSON text, held to v1's rules (one JSON value; no key
    repeated in any object)."""
    f = _decode(_client_decoder, data, max_size)
    t = type(f)
    if t is Ack2:
        return Ack(f.stream, f.seq)
    if t is Ping2:
        return Ping(f.n)
    if t is Hello2:
        return Hello(f.caps, f.token, f.anon)
    if t is Start2:
        try:
            value = _json_any.decode(f.input)
        except (msgspec.DecodeError, RecursionError) as exc:
            # (nested past msgspec's depth: RecursionError, not a DecodeError)
            raise ProtocolError(
                excerpt(f"invalid frame: start input is not JSON: {exc}"), CloseCode.BAD_FRAME
            ) from None
        _reject_duplicate_keys(f.input)
        return Start(f.req, f.agent, value)
    if t is Resume2:
        return Resume(f.stream, f.after, f.epoch, None if f.h is None else f.h.hex())
    if t is Cancel2:
        return Cancel(f.stream)
    if t is List2:
        return List(f.n)
    assert t is Refresh2
    return Refresh(f.token)


# ---------------------------------------------------------------- server frames
class ServerCodec:
    """Encodes one connection's server frames in v2 and keeps its stream handles.

    A stream gets a handle when ``started`` or ``resumed`` is encoded (a stream
    attached again gets a new one); handles are never reused on a connection, so a
    late frame cannot name the wrong stream. :meth:`detached` forgets a stream."""

    __slots__ = ("_current", "_handles", "_next")

    version: Final = "v2"
    #: frames go as binary messages
    binary: Final = True
    #: the ``hb`` frame
    hb: Final = _encode((T_HB,))

    def __init__(self) -> None:
        self._handles: dict[str, int] = {}
        self._next = 0
        #: the state of :meth:`events` calls made without one, per stream
        self._current: dict[str, list[Any]] = {}

    def _bind(self, stream: str) -> int:
        handle = self._handles[stream] = self._next
        self._next += 1
        self._current.pop(stream, None)
        return handle

    def attached(self, stream: str) -> list[Any]:
        """The state one attachment of ``stream`` keeps for :meth:`events`: the handle
        its ``started``/``resumed`` gave and the current part after its last frame
        (``(kind, part)`` of v1's items, ``None`` when none is). Call it once the
        ``started``/``resumed`` is encoded."""
        return [self._handles[stream], None]

    def detached(self, stream: str) -> None:
        """``stream`` is no longer attached: its handle is retired."""
        self._handles.pop(stream, None)
        self._current.pop(stream, None)

    def encode(self, frame: ServerFrame) -> bytes:
        """A server frame (a v1 frame object) as v2 bytes (``started`` and ``resumed``
        give the stream its handle)."""
        t = type(frame)
        if t is Pong:
            assert isinstance(frame, Pong)
            return _encode((T_PONG, frame.n))
        if t is Started:
            assert isinstance(frame, Started)
            h = self._bind(frame.stream)
            return _encode((T_STARTED, frame.req, frame.stream, frame.epoch, h))
        if t is Resumed:
            assert isinstance(frame, Resumed)
            h = self._bind(frame.stream)
            return _compact(Resumed2(frame.stream, h, frame.from_, frame.head, frame.status))
        return encode_server(frame)

    def events(
        self,
        stream: str,
        first: int,
        items: bytes,
        digest: bytes,
        last_kind: int,
        state: list[Any] | None = None,
    ) -> bytes:
        """An ``events`` frame from a log read: ``items`` is the v1 items array the
        stores lay out (:func:`unbroken.protocol.items.items_array`). ``state``
        (:meth:`attached`) is the attachment's own, so a read that ends after its
        stream was attached again leaves the new attachment's state alone; without
        it the codec keeps one per stream."""
        if state is None:
            state = self._current.get(stream)
            if state is None:
                state = self._current[stream] = self.attached(stream)
        frame, state[1] = _events_frame(
            state[0], first, items, digest, last_kind == Kind.END, state[1]
        )
        return frame

    @staticmethod
    def compress(message: bytes) -> bytes:
        """``message`` (a frame or a batch) as the ``zlib`` frame, when that is smaller
        (cap ``zlib``; the caller sends messages of at least :data:`ZLIB_MIN` bytes)."""
        packed = _encode((T_ZLIB, zlib.compress(message, 1)))
        return packed if len(packed) < len(message) else message

    def batch(self, frames: list[bytes]) -> bytes:
        """Several encoded frames as one message (cap ``batch``)."""
        n = len(frames)
        head = bytes((0x92, T_BATCH)) + _array_header(n)
        return head + b"".join(frames)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_server(frame: ServerFrame) -> bytes:
    """A server frame other than ``events``, ``started`` and ``resumed`` (which need
    the connection's handles: :class:`ServerCodec`) as v2 bytes."""
    if isinstance(frame, Welcome):
        return _compact(
            Welcome2(
                frame.session,
                frame.heartbeat_ms,
                frame.epoch,
                frame.limits,
                frame.caps,
                frame.anon,
                frame.auth_exp,
            )
        )
    if isinstance(frame, Error):
        return _compact(
            Error2(frame.code, frame.message, frame.stream, frame.req, frame.retry_after_ms)
        )
    if isinstance(frame, Gone):
        return _compact(Gone2(frame.stream, frame.reason, frame.message))
    if isinstance(frame, Hb):
        return _encode((T_HB,))
    if isinstance(frame, Pong):
        return _encode((T_PONG, frame.n))
    if isinstance(frame, AuthExpiring):
        return _encode((T_AUTH_EXPIRING, frame.in_ms))
    if isinstance(frame, Refreshed):
        return _compact(Refreshed2(frame.exp))
    if isinstance(frame, Resync):
        return _compact(Resync2(frame.stream, frame.reason))
    if isinstance(frame, Streams):
        items = [
            LiveStream2(i.stream, i.agent, i.epoch, i.head, bytes.fromhex(i.h), i.status)
            for i in frame.items
        ]
        return _compact(Streams2(frame.n, items))
    raise TypeError(f"{type(frame).__name__} needs a ServerCodec (stream handles)")


_ITEM_KIND: Final[dict[str, int]] = {
    "text": int(Kind.TEXT),
    "json": int(Kind.JSON),
    "data": int(Kind.DATA),
}


def _item(item: dict[str, Any]) -> tuple[Any, ...]:
    """A v1 explicit item (a JSON object) as its v2 array."""
    k = item["k"]
    if k in _ITEM_KIND:
        return (_ITEM_KIND[k], item["p"], item["d"])
    if k == "part_start":
        mime, schema = item.get("mime", ""), item.get("schema", "")
        if schema:
            return (int(Kind.PART_START), item["p"], item["pk"], mime, schema)
        if mime:
            return (int(Kind.PART_START), item["p"], item["pk"], mime)
        return (int(Kind.PART_START), item["p"], item["pk"])
    if k == "part_end":
        err = item.get("err", "")
        return (int(Kind.PART_END), item["p"], err) if err else (int(Kind.PART_END), item["p"])
    err = item.get("err", "")
    if err:
        return (int(Kind.END), item["st"], item["n"], err)
    return (int(Kind.END), item["st"], item["n"])


def events_frame(handle: int, first: int, items: bytes, digest: bytes, final: bool) -> bytes:
    """The v2 ``events`` frame of a v1 ``items`` array (JSON, as the stores keep it),
    the first frame of its stream on the connection (no current part before it):
    every chunk string and explicit item carried over, ``h`` cut to 8 bytes unless
    ``final`` (the frame carries ``end``)."""
    return _events_frame(handle, first, items, digest, final, None)[0]


def _events_frame(
    handle: int,
    first: int,
    items: bytes,
    digest: bytes,
    final: bool,
    current: tuple[str, str] | None,
) -> tuple[bytes, tuple[str, str] | None]:
    """:func:`events_frame` after a frame that left ``current`` (the chunk kind and
    part of v1's items) as the stream's current part: a first chunk of that part
    goes bare. Also returns the current part after this frame."""
    decoded: list[Any] = _json_any.decode(items)
    start = 0
    first_item = decoded[0]
    if (
        current is not None
        and type(first_item) is dict
        and (first_item.get("k"), first_item.get("p")) == current
    ):
        decoded[0] = first_item["d"]
        start = 1
    for i in range(start, len(decoded)):
        it = decoded[i]
        if type(it) is not str:
            decoded[i] = _item(it)
            k = it["k"]
            if k in _ITEM_KIND:
                current = (k, it["p"])
            elif k == "part_start":
                current = (it["pk"], it["p"])
            elif k == "part_end":
                if current is not None and current[1] == it["p"]:
                    current = None
            else:
                current = None
    h = digest if final else digest[:SHORT_DIGEST]
    return _encode((T_EVENTS, handle, first, decoded, h)), current


def encode_events(
    handle: int, first: int, events_items: list[Any], digest: bytes, final: bool
) -> bytes:
    """A v2 ``events`` frame from items already in v2 form (tests, vectors)."""
    return _encode(
        (T_EVENTS, handle, first, events_items, digest if final else digest[:SHORT_DIGEST])
    )


# ---------------------------------------------------------------- client side
def _to_v1(f: Any) -> ServerFrame:
    t = type(f)
    if t is Hb2:
        return Hb()
    if t is Pong2:
        return Pong(f.n)
    if t is Welcome2:
        return Welcome(f.session, f.heartbeat_ms, f.epoch, f.limits, f.caps, f.anon, f.auth_exp)
    if t is Started2:
        return Started(f.req, f.stream, f.epoch)
    if t is Resumed2:
        return Resumed(f.stream, f.from_, f.head, f.status)
    if t is Gone2:
        return Gone(f.stream, f.reason, f.message)
    if t is Error2:
        return Error(f.code, f.message, f.stream, f.req, f.retry_after_ms)
    if t is AuthExpiring2:
        return AuthExpiring(f.in_ms)
    if t is Refreshed2:
        return Refreshed(f.exp)
    if t is Streams2:
        return Streams(
            f.n, [LiveStream(i.stream, i.agent, i.epoch, i.head, i.h.hex()) for i in f.items]
        )
    assert t is Resync2
    return Resync(f.stream, f.reason)


class _RawBatch(_A, tag=T_BATCH, frozen=True):
    frames: Annotated[list[msgspec.Raw], Meta(min_length=1)]


_batch_decoder: Final = msgspec.msgpack.Decoder(_RawBatch)
_BATCH_HEAD: Final = bytes((0x92, T_BATCH))
_ZLIB_HEAD: Final = bytes((0x92, T_ZLIB))


class _Zlib(_A, tag=T_ZLIB, frozen=True):
    data: bytes


_zlib_decoder: Final = msgspec.msgpack.Decoder(_Zlib)


def _inflate(message: bytes, max_size: int) -> bytes:
    """The message a ``zlib`` frame holds, at most ``max_size`` bytes."""
    packed: _Zlib = _decode(_zlib_decoder, message, max_size)
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(packed.data, max_size + 1)
    except zlib.error as exc:
        raise ProtocolError(excerpt(f"malformed frame: zlib: {exc}"), CloseCode.BAD_FRAME) from None
    if len(out) > max_size:
        raise ProtocolError(
            f"compressed frame inflates past the limit of {max_size} bytes", CloseCode.TOO_BIG
        )
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError("malformed frame: zlib data incomplete or followed by more", 4000)
    if out[:2] == _ZLIB_HEAD:
        raise ProtocolError("malformed frame: a zlib frame inside a zlib frame", 4000)
    return out


class ClientCodec:
    """Decodes one connection's server frames in v2 and follows its stream handles."""

    __slots__ = ("_streams",)

    version: Final = "v2"

    def __init__(self) -> None:
        #: handle -> stream id, from ``started`` and ``resumed``
        self._streams: dict[int, str] = {}

    @staticmethod
    def split(message: bytes | str, max_size: int, inflate: bool = False) -> list[bytes | str]:
        """The frames of one message: itself, or the frames of a batch (tag 0), once
        inflated if it came compressed (tag 12; only with ``inflate``, the cap ``zlib``
        in force: inflated to at most ``max_size`` bytes, else :class:`ProtocolError`
        1009)."""
        if isinstance(message, bytes) and message[:2] == _ZLIB_HEAD:
            if not inflate:
                raise ProtocolError("compressed frame without the zlib cap", CloseCode.BAD_FRAME)
            message = _inflate(message, max_size)
        if isinstance(message, bytes) and message[:2] == _BATCH_HEAD:
            batch: _RawBatch = _decode(_batch_decoder, message, max_size)
            return [bytes(raw) for raw in batch.frames]
        return [message]

    def decode(self, data: bytes | str, max_size: int) -> Any:
        """One frame: ``events`` as :class:`EventsV2`, any other as its v1 object (the
        handles of ``started``/``resumed`` noted). Raises :class:`ProtocolError`."""
        f = _decode(_server_decoder, data, max_size)
        t = type(f)
        if t is EventsV2:
            return f
        if t is Started2 or t is Resumed2:
            self._streams[f.handle] = f.stream
        return _to_v1(f)

    def stream_of(self, handle: int) -> str:
        """The stream of ``handle`` (:class:`ProtocolError` if none was given)."""
        stream = self._streams.get(handle)
        if stream is None:
            raise ProtocolError(f"events for unknown stream handle {handle}", CloseCode.BAD_FRAME)
        return stream


__all__ = [
    "DIGEST",
    "MAX_ERROR_TEXT",
    "SHORT_DIGEST",
    "SUBPROTOCOL",
    "ClientCodec",
    "EventsV2",
    "ServerCodec",
    "decode_client",
    "encode_client",
    "encode_events",
    "encode_server",
    "events_frame",
    "peek_tag",
]
