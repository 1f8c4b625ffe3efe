"""Wire frames of protocol v1: types, strict decoding, compact encoding.

Every frame is one JSON text message with a ``t`` field naming its type. The
decoders accept bytes or str and raise :class:`~unbroken.errors.ProtocolError`
(carrying the close code to use) for anything that is not a valid frame:
unknown type, missing or wrong-typed field, oversized frame, bad UTF-8, and (in
a client frame) a key repeated in any object. No other exception escapes them.

Error texts are logged and sent as close reasons, and may quote what the peer
sent: every one is a single printable line of at most :data:`MAX_ERROR_TEXT`
characters (see :func:`excerpt`), so a frame cannot forge a log line.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

from ..errors import ProtocolError
from .codes import CloseCode
from .events import (
    CHUNK_KIND_OF_PART,
    END_STATUSES,
    NAME_BY_KIND,
    PART_KINDS,
    Event,
    Kind,
)

#: Subprotocols this implementation speaks, most preferred first.
SUBPROTOCOLS: Final[tuple[str, ...]] = ("unbroken.v1",)
#: Default maximum frame size, as uvicorn's ``ws_max_size`` (16 MiB).
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
#: Default largest frame a client may send once it is authenticated (1 MiB): client
#: frames are small (acks, starts); a server holds every one in memory while it arrives.
DEFAULT_MAX_CLIENT_FRAME: Final = 1024 * 1024
#: Largest frame a client may send before its ``hello`` is accepted (64 KiB: a hello
#: with a large JWT fits), so an unauthenticated peer cannot make the server hold or
#: decode much.
DEFAULT_MAX_HELLO_FRAME: Final = 64 * 1024
#: Longest error text a decoder produces (it may quote the peer; see :func:`excerpt`).
MAX_ERROR_TEXT: Final = 240
#: Capability: the server may send several frames in one WebSocket message, one per
#: line (frames are compact JSON: no raw line feed inside one). See docs/protocol.md.
CAP_BATCH: Final = "batch"

# Patterns end in \Z, not $: msgspec matches with re.search, and $ also matches
# before a trailing newline ("abc\n" would pass as a stream id).
StreamId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
Epoch = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
ReqId = Annotated[str, Meta(pattern=r"^[\x21-\x7e]{1,128}\Z")]
AgentName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}\Z")]
PartId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}\Z")]
Hex16 = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
Token = Annotated[str, Meta(max_length=16384)]
#: an anonymous client's key (server-issued, URL-safe base64; scopes its request ids)
AnonKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
Caps = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=32)]
ShortText = Annotated[str, Meta(max_length=4096)]
# No NUL: the digest payload of part_start joins part, kind, mime and schema with NUL.
Mime = Annotated[str, Meta(max_length=4096, pattern=r"^[^\x00]*\Z")]
Positive = Annotated[int, Meta(ge=1)]


class _Frame(Struct, tag_field="t", omit_defaults=True, frozen=True):
    pass


# ---------------------------------------------------------------- client -> server
class Hello(_Frame, tag="hello", frozen=True):
    """First frame of every connection."""

    caps: Caps = []
    token: Token | None = None
    #: anonymous mode: the key the server issued in an earlier ``welcome``
    anon: AnonKey | None = None


class Start(_Frame, tag="start", frozen=True):
    """Start an agent run; ``req`` makes a retried start idempotent."""

    req: ReqId
    agent: AgentName
    input: Any = None


class Resume(_Frame, tag="resume", frozen=True):
    """Continue a stream after event ``after`` whose digest is ``h``."""

    stream: StreamId
    after: Seq
    epoch: Epoch
    h: Hex16 | None = None


class Ack(_Frame, tag="ack", frozen=True):
    """Cumulative acknowledgement: every event up to ``seq`` arrived."""

    stream: StreamId
    seq: Seq


class Cancel(_Frame, tag="cancel", frozen=True):
    """Stop the agent run of a stream."""

    stream: StreamId


class Refresh(_Frame, tag="refresh", frozen=True):
    """Replace the connection's token (reserved for protocol wave 2)."""

    token: Token


class Ping(_Frame, tag="ping", frozen=True):
    """Liveness probe; the server answers ``pong`` with the same ``n``."""

    n: Seq = 0


# ---------------------------------------------------------------- server -> client
class Limits(Struct, frozen=True, omit_defaults=True):
    """Limits the server enforces on this connection."""

    max_frame: Positive = DEFAULT_MAX_FRAME
    window: Positive = 1024 * 1024
    max_streams: Positive = 1000
    max_chunk: Positive = 1024 * 1024
    #: largest frame the client may send (at most ``max_frame``); larger closes 1009
    max_client_frame: Positive = DEFAULT_MAX_CLIENT_FRAME


class Welcome(_Frame, tag="welcome", frozen=True):
    """Answer to ``hello``."""

    session: Annotated[str, Meta(max_length=64)]
    heartbeat_ms: Annotated[int, Meta(ge=1)]
    epoch: Epoch
    limits: Limits = Limits()
    caps: Caps = []
    #: anonymous mode: the client's key, to present in every later ``hello``
    anon: AnonKey | None = None


class Started(_Frame, tag="started", frozen=True):
    """Answer to ``start``: the stream that carries the run."""

    req: ReqId
    stream: StreamId
    epoch: Epoch


class TextItem(Struct, tag_field="k", tag="text", frozen=True):
    p: PartId
    d: str


class JsonItem(Struct, tag_field="k", tag="json", frozen=True):
    p: PartId
    d: str


class DataItem(Struct, tag_field="k", tag="data", frozen=True):
    p: PartId
    d: str


class PartStartItem(Struct, tag_field="k", tag="part_start", frozen=True, omit_defaults=True):
    p: PartId
    pk: Literal["text", "json", "data"]
    mime: Mime = ""
    schema: str = ""


class PartEndItem(Struct, tag_field="k", tag="part_end", frozen=True, omit_defaults=True):
    p: PartId
    err: str = ""


class EndItem(Struct, tag_field="k", tag="end", frozen=True, omit_defaults=True):
    st: Literal["completed", "failed", "cancelled"]
    n: Seq
    err: str = ""


Item = str | TextItem | JsonItem | DataItem | PartStartItem | PartEndItem | EndItem


class Events(_Frame, tag="events", frozen=True):
    """Events ``seq .. seq+len(items)-1`` of a stream; ``h`` is the digest after the last."""

    stream: StreamId
    seq: Annotated[int, Meta(ge=1, le=2**53)]
    items: Annotated[list[Item], Meta(min_length=1)]
    h: Hex16


class Resumed(_Frame, tag="resumed", frozen=True):
    """Resume accepted: events after ``from_`` follow; ``head`` is the log's head now."""

    stream: StreamId
    from_: Seq = field(name="from")
    head: Seq = 0
    status: Literal["running", "completed", "failed", "cancelled"] = "running"


class Resync(_Frame, tag="resync", frozen=True):
    """Reserved: the server will replay the stream from the start."""

    stream: StreamId
    reason: ShortText = ""


class Gone(_Frame, tag="gone", frozen=True):
    """Resume refused; ``reason`` is one of unknown, expired, epoch, diverged, forbidden."""

    stream: StreamId
    reason: Literal["unknown", "expired", "epoch", "diverged", "forbidden"]
    message: ShortText = ""


class Error(_Frame, tag="error", frozen=True):
    """A request failed; the connection stays open."""

    code: Annotated[str, Meta(max_length=64)]
    message: ShortText = ""
    stream: StreamId | None = None
    req: ReqId | None = None
    retry_after_ms: Annotated[int, Meta(ge=0)] | None = None


class Hb(_Frame, tag="hb", frozen=True):
    """Heartbeat: the server is alive and has nothing to send."""


class Pong(_Frame, tag="pong", frozen=True):
    """Answer to ``ping``."""

    n: Seq = 0


ClientFrame = Hello | Start | Resume | Ack | Cancel | Refresh | Ping
ServerFrame = Welcome | Started | Events | Resumed | Resync | Gone | Error | Hb | Pong

_client_decoder: Final = msgspec.json.Decoder(ClientFrame)
_server_decoder: Final = msgspec.json.Decoder(ServerFrame)
_encoder: Final = msgspec.json.Encoder()
encode_json: Final = _encoder.encode


_BYTES: Final = (bytes, bytearray)


def excerpt(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` made safe for one log line: every character that is not printable
    (line breaks, other control characters, format characters such as bidi
    overrides, separators) escaped as in a Python literal (``\\n``, ``\\x1b``,
    ``\\u2028``), then cut to ``limit`` characters (ending in ``…`` when cut)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _check_size(data: bytes | str, max_size: int) -> None:
    if len(data) * 4 > max_size:  # might be too big: a str holds up to 4 UTF-8 bytes a char
        size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
        if size > max_size:
            raise ProtocolError(
                f"frame of {size} bytes exceeds the limit of {max_size} bytes",
                CloseCode.TOO_BIG,
            )


def _decode(decoder: Any, data: bytes | str, max_size: int) -> Any:
    _check_size(data, max_size)
    try:
        if isinstance(data, _BYTES) and not data.isascii():
            # msgspec skips unknown fields without checking them: check UTF-8 here
            # (cheap: only for non-ASCII frames).
            str(data, "utf-8")
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(excerpt(f"invalid frame: {exc}"), CloseCode.BAD_FRAME) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(excerpt(f"malformed frame: {exc}"), CloseCode.BAD_FRAME) from None
    except UnicodeDecodeError:
        # RFC 6455 8.1: a text message that is not UTF-8 fails the connection, 1007
        raise ProtocolError("frame is not valid UTF-8", CloseCode.INVALID_DATA) from None
    except Exception as exc:  # defensive: nothing but ProtocolError may escape
        raise ProtocolError(excerpt(f"undecodable frame: {exc!r}"), CloseCode.BAD_FRAME) from None


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({k for k, _ in pairs}) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)


# Builds no objects: the hook only checks each object's keys (json calls it
# innermost first, so the first repeat found is the innermost one).
_pairs_checker: Final = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def _reject_duplicate_keys(data: bytes | str) -> None:
    """Raise :class:`ProtocolError` if any JSON object in ``data`` repeats a key.

    Run after msgspec accepted the frame (so ``data`` is valid JSON of a bounded
    size): msgspec, like most JSON parsers, lets the last repeat win silently, and
    a frame that means one thing to one parser and another to the next is how
    requests get smuggled past a check. About 1 µs for an ``ack``.
    """
    text = data if isinstance(data, str) else str(data, "utf-8")
    if text.count(":") < 2:  # a key needs a colon: fewer than two keys, no repeat
        return
    try:
        _pairs_checker.decode(text)
    except _DuplicateKey as exc:
        raise ProtocolError(
            excerpt(f"invalid frame: duplicate key {exc.args[0]!r} in an object"),
            CloseCode.BAD_FRAME,
        ) from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - msgspec accepted it
        raise ProtocolError(excerpt(f"malformed frame: {exc}"), CloseCode.BAD_FRAME) from None


def decode_client(data: bytes | str, max_size: int = DEFAULT_MAX_FRAME) -> ClientFrame:
    """Decode a client→server frame or raise :class:`ProtocolError`.

    Stricter than :func:`decode_server`: a key repeated in any object (even in
    ``start.input``) is a bad frame (4000).
    """
    frame: ClientFrame = _decode(_client_decoder, data, max_size)
    _reject_duplicate_keys(data)
    return frame


def decode_server(data: bytes | str, max_size: int = DEFAULT_MAX_FRAME) -> ServerFrame:
    """Decode a server→client frame or raise :class:`ProtocolError`."""
    frame: ServerFrame = _decode(_server_decoder, data, max_size)
    return frame


class _TypeOnly(Struct):
    t: str


_type_decoder: Final = msgspec.json.Decoder(_TypeOnly)


def peek_type(data: bytes | str, max_size: int = DEFAULT_MAX_FRAME) -> str:
    """The frame's type (its ``t``), without decoding the rest: the other fields
    are only scanned, never built, so a server can refuse a frame it does not
    accept now (anything but ``hello`` before the hello) whatever the body
    holds. Raises :class:`ProtocolError` when ``data`` is too big, is not a JSON
    object or has no string ``t``. The type is not checked against the known ones.
    """
    frame: _TypeOnly = _decode(_type_decoder, data, max_size)
    return frame.t


def encode(frame: ClientFrame | ServerFrame) -> bytes:
    """Encode a frame to the bytes of one WebSocket text message."""
    return _encoder.encode(frame)


# ---------------------------------------------------------------- events <-> items
_CHUNK_ITEM: Final[dict[int, type[TextItem | JsonItem | DataItem]]] = {
    Kind.TEXT: TextItem,
    Kind.JSON: JsonItem,
    Kind.DATA: DataItem,
}
_CHUNK_ITEM_TYPES: Final = (TextItem, JsonItem, DataItem)
_KIND_OF_ITEM: Final[dict[type, Kind]] = {
    TextItem: Kind.TEXT,
    JsonItem: Kind.JSON,
    DataItem: Kind.DATA,
}
_DATA: Final = int(Kind.DATA)
_PART_START: Final = int(Kind.PART_START)
_PART_END: Final = int(Kind.PART_END)


def encode_items(events: list[Event]) -> bytes:
    """Compact JSON array of events for an ``events`` frame.

    A chunk of the frame's current part is a bare JSON string; the current part is
    set by a ``part_start`` or an explicit chunk earlier in the same frame, so every
    frame decodes on its own. The items are gathered, then encoded in one call.
    """
    items: list[Item] = []
    append = items.append
    current = ""
    current_kind = 0
    for ev in events:
        k = ev.kind
        if k <= _DATA:  # chunks: the hot path
            if k == current_kind and ev.part == current:
                append(ev.body)
            else:
                append(_CHUNK_ITEM[k](ev.part, ev.body))
                current, current_kind = ev.part, k
        elif k == _PART_START:
            append(PartStartItem(ev.part, ev.part_kind, ev.mime, ev.schema))  # type: ignore[arg-type]
            current = ev.part
            current_kind = CHUNK_KIND_OF_PART.get(ev.part_kind, 0)
        elif k == _PART_END:
            append(PartEndItem(ev.part, ev.error))
            if current == ev.part:
                current, current_kind = "", 0
        else:
            append(EndItem(ev.status, ev.count, ev.error))  # type: ignore[arg-type]
    return _encoder.encode(items)


def encode_events_frame(stream: str, first_seq: int, items: bytes, digest: bytes) -> bytes:
    """Bytes of an ``events`` frame from :func:`encode_items` output and the last digest."""
    return (
        b'{"t":"events","stream":"'
        + stream.encode()
        + b'","seq":'
        + str(first_seq).encode()
        + b',"items":'
        + items
        + b',"h":"'
        + digest.hex().encode()
        + b'"}'
    )


def events_of(frame: Events, part_kinds: dict[str, str] | None = None) -> list[Event]:
    """Turn an ``events`` frame's items into :class:`Event` objects.

    ``part_kinds`` (part id → part kind) is updated with parts started here and
    used to check that each chunk matches its part's kind; pass the dict kept for
    the stream so far. Raises :class:`ProtocolError` on structural errors.
    """
    kinds = part_kinds if part_kinds is not None else {}
    out: list[Event] = []
    append = out.append
    seq = frame.seq
    last = seq + len(frame.items) - 1
    current = ""
    current_kind: Kind | None = None
    for item in frame.items:
        if type(item) is str:  # a chunk of the current part: the hot path
            if current_kind is None:
                raise ProtocolError(
                    f"seq {seq}: bare chunk with no current part in this frame",
                    CloseCode.BAD_FRAME,
                )
            append(Event(seq, current_kind, current, item))
        elif isinstance(item, _CHUNK_ITEM_TYPES):
            kind = _KIND_OF_ITEM[type(item)]
            known = kinds.get(item.p)
            if known is not None and CHUNK_KIND_OF_PART[known] is not kind:
                raise ProtocolError(
                    f"seq {seq}: {NAME_BY_KIND[kind]} chunk for {known} part {item.p!r}",
                    CloseCode.BAD_FRAME,
                )
            current, current_kind = item.p, kind
            append(Event(seq, kind, item.p, item.d))
        elif isinstance(item, PartStartItem):
            if item.pk not in PART_KINDS:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad part kind", CloseCode.BAD_FRAME)
            kinds[item.p] = item.pk
            current, current_kind = item.p, CHUNK_KIND_OF_PART[item.pk]
            append(
                Event(
                    seq,
                    Kind.PART_START,
                    part=item.p,
                    part_kind=item.pk,
                    mime=item.mime,
                    schema=item.schema,
                )
            )
        elif isinstance(item, PartEndItem):
            if current == item.p:
                current, current_kind = "", None
            append(Event(seq, Kind.PART_END, part=item.p, error=item.err))
        else:
            assert isinstance(item, EndItem)
            if item.st not in END_STATUSES:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad status", CloseCode.BAD_FRAME)
            if item.n != seq:
                raise ProtocolError(
                    f"seq {seq}: end says {item.n} events, but it is event {seq}",
                    CloseCode.BAD_FRAME,
                )
            if seq != last:
                raise ProtocolError(
                    f"seq {seq}: end is not the last event of the frame", CloseCode.BAD_FRAME
                )
            append(Event(seq, Kind.END, status=item.st, error=item.err, count=item.n))
        seq += 1
    return out


# ---------------------------------------------------------------- versions
def negotiate_subprotocol(offered: list[str] | tuple[str, ...]) -> str | None:
    """Pick the newest protocol both sides speak (server side); ``None`` if none."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None
