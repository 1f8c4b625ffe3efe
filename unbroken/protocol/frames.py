"""Wire frames of protocol v1: types, strict decoding, compact encoding.

Every frame is one JSON text message with a ``t`` field naming its type. The
decoders accept bytes or str and raise :class:`~unbroken.errors.ProtocolError`
(carrying the close code to use) for anything that is not a valid frame:
unknown type, missing or wrong-typed field, oversized frame, bad UTF-8. No other
exception escapes them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

from ..errors import ProtocolError
from .codes import CloseCode
from .events import (
    CHUNK_KIND_OF_PART,
    CHUNK_KINDS,
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

StreamId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
Epoch = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
ReqId = Annotated[str, Meta(pattern=r"^[\x21-\x7e]{1,128}$")]
AgentName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
PartId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
Hex16 = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}$")]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
Token = Annotated[str, Meta(max_length=16384)]
Caps = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=32)]
ShortText = Annotated[str, Meta(max_length=4096)]


class _Frame(Struct, tag_field="t", omit_defaults=True, frozen=True):
    pass


# ---------------------------------------------------------------- client -> server
class Hello(_Frame, tag="hello", frozen=True):
    """First frame of every connection."""

    caps: Caps = []
    token: Token | None = None


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

    max_frame: int = DEFAULT_MAX_FRAME
    window: int = 1024 * 1024
    max_streams: int = 1000
    max_chunk: int = 1024 * 1024


class Welcome(_Frame, tag="welcome", frozen=True):
    """Answer to ``hello``."""

    session: Annotated[str, Meta(max_length=64)]
    heartbeat_ms: Annotated[int, Meta(ge=1)]
    epoch: Epoch
    limits: Limits = Limits()
    caps: Caps = []


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
    mime: ShortText = ""
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


def _decode(decoder: Any, data: bytes | str, max_size: int) -> Any:
    if len(data) > max_size:
        raise ProtocolError(
            f"frame of {len(data)} bytes exceeds the limit of {max_size} bytes",
            CloseCode.TOO_BIG,
        )
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid frame: {exc}", CloseCode.BAD_FRAME) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed frame: {exc}", CloseCode.BAD_FRAME) from None
    except UnicodeDecodeError:
        raise ProtocolError("frame is not valid UTF-8", CloseCode.BAD_FRAME) from None
    except Exception as exc:  # defensive: nothing but ProtocolError may escape
        raise ProtocolError(f"undecodable frame: {exc!r}", CloseCode.BAD_FRAME) from None


def decode_client(data: bytes | str, max_size: int = DEFAULT_MAX_FRAME) -> ClientFrame:
    """Decode a client→server frame or raise :class:`ProtocolError`."""
    frame: ClientFrame = _decode(_client_decoder, data, max_size)
    return frame


def decode_server(data: bytes | str, max_size: int = DEFAULT_MAX_FRAME) -> ServerFrame:
    """Decode a server→client frame or raise :class:`ProtocolError`."""
    frame: ServerFrame = _decode(_server_decoder, data, max_size)
    return frame


def encode(frame: ClientFrame | ServerFrame) -> bytes:
    """Encode a frame to the bytes of one WebSocket text message."""
    return _encoder.encode(frame)


# ---------------------------------------------------------------- events <-> items
def encode_items(events: list[Event]) -> bytes:
    """Compact JSON array of events for an ``events`` frame.

    A chunk of the frame's current part is a bare JSON string; the current part is
    set by a ``part_start`` or an explicit chunk earlier in the same frame, so every
    frame decodes on its own.
    """
    out: list[bytes] = []
    current = ""
    for ev in events:
        k = ev.kind
        if k in CHUNK_KINDS:
            body = _encoder.encode(ev.body)
            if ev.part == current:
                out.append(body)
            else:
                out.append(
                    b'{"k":"'
                    + NAME_BY_KIND[k].encode()
                    + b'","p":'
                    + _encoder.encode(ev.part)
                    + b',"d":'
                    + body
                    + b"}"
                )
                current = ev.part
        elif k is Kind.PART_START:
            out.append(
                _encoder.encode(PartStartItem(ev.part, ev.part_kind, ev.mime, ev.schema))  # type: ignore[arg-type]
            )
            current = ev.part
        elif k is Kind.PART_END:
            out.append(_encoder.encode(PartEndItem(ev.part, ev.error)))
            if current == ev.part:
                current = ""
        else:
            out.append(_encoder.encode(EndItem(ev.status, ev.count, ev.error)))  # type: ignore[arg-type]
    return b"[" + b",".join(out) + b"]"


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
    seq = frame.seq
    current = ""
    current_kind: Kind | None = None
    for item in frame.items:
        if isinstance(item, str):
            if current_kind is None:
                raise ProtocolError(
                    f"seq {seq}: bare chunk with no current part in this frame",
                    CloseCode.BAD_FRAME,
                )
            out.append(Event(seq, current_kind, part=current, body=item))
        elif isinstance(item, TextItem | JsonItem | DataItem):
            kind = (
                Kind.TEXT
                if isinstance(item, TextItem)
                else (Kind.JSON if isinstance(item, JsonItem) else Kind.DATA)
            )
            known = kinds.get(item.p)
            if known is not None and CHUNK_KIND_OF_PART[known] is not kind:
                raise ProtocolError(
                    f"seq {seq}: {NAME_BY_KIND[kind]} chunk for {known} part {item.p!r}",
                    CloseCode.BAD_FRAME,
                )
            current, current_kind = item.p, kind
            out.append(Event(seq, kind, part=item.p, body=item.d))
        elif isinstance(item, PartStartItem):
            if item.pk not in PART_KINDS:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad part kind", CloseCode.BAD_FRAME)
            kinds[item.p] = item.pk
            current, current_kind = item.p, CHUNK_KIND_OF_PART[item.pk]
            out.append(
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
            out.append(Event(seq, Kind.PART_END, part=item.p, error=item.err))
        else:
            if item.st not in END_STATUSES:  # pragma: no cover - Literal enforces this
                raise ProtocolError(f"seq {seq}: bad status", CloseCode.BAD_FRAME)
            if item.n != seq:
                raise ProtocolError(
                    f"seq {seq}: end says {item.n} events, but it is event {seq}",
                    CloseCode.BAD_FRAME,
                )
            out.append(Event(seq, Kind.END, status=item.st, error=item.err, count=item.n))
        seq += 1
    return out


# ---------------------------------------------------------------- versions
def negotiate_subprotocol(offered: list[str] | tuple[str, ...]) -> str | None:
    """Pick the newest protocol both sides speak (server side); ``None`` if none."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None
