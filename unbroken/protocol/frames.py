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
from binascii import hexlify
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

from ..errors import ProtocolError
from .codes import CloseCode
from .events import Event

# The items of an ``events`` frame have their own module; their names stay importable here.
from .items import DataItem as DataItem
from .items import EndItem as EndItem
from .items import Item, Seq
from .items import JsonItem as JsonItem
from .items import PartEndItem as PartEndItem
from .items import PartStartItem as PartStartItem
from .items import TextItem as TextItem
from .items import decode as decode_items
from .items import encode as _encode_items

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
#: line (frames are compact JSON: no raw line feed inside one). See docs/reference/protocol.md.
CAP_BATCH: Final = "batch"
#: Capability: in-band token refresh (``auth_expiring``, ``refresh``, ``refreshed``):
#: the client offers it when it can get a new token; the server lists it when it
#: can verify one. See docs/reference/protocol.md.
CAP_REFRESH: Final = "refresh"
#: Capability: "list my live streams" (``list`` answered by ``streams``): the client
#: offers it, the server lists it. See docs/reference/protocol.md.
CAP_STREAMS: Final = "streams"
#: Capability: the client takes ``error unavailable`` about one stream (its log is
#: unreachable for now) and resumes it after ``retry_after_ms``; without it the
#: server closes the connection 1011 instead (every client reconnects and resumes).
CAP_UNAVAILABLE: Final = "unavailable"

# Patterns end in \Z, not $: msgspec matches with re.search, and $ also matches
# before a trailing newline ("abc\n" would pass as a stream id).
StreamId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
Epoch = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
ReqId = Annotated[str, Meta(pattern=r"^[\x21-\x7e]{1,128}\Z")]
AgentName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}\Z")]
Hex16 = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")]
Token = Annotated[str, Meta(max_length=16384)]
#: an anonymous client's key (server-issued, URL-safe base64; scopes its request ids)
AnonKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}\Z")]
Caps = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=32)]
ShortText = Annotated[str, Meta(max_length=4096)]
Positive = Annotated[int, Meta(ge=1)]
#: unix seconds (a JWT ``NumericDate``: an integer, or a number with a fraction)
UnixTime = Annotated[int, Meta(ge=0)] | Annotated[float, Meta(ge=0)]


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
    """Replace the connection's token in-band (cap ``refresh``): the server answers
    ``refreshed``, or ``error`` ``auth_failed``, or closes 4003 when the token names
    another principal."""

    token: Token


class Ping(_Frame, tag="ping", frozen=True):
    """Liveness probe; the server answers ``pong`` with the same ``n``."""

    n: Seq = 0


class List(_Frame, tag="list", frozen=True):
    """List this principal's live streams (cap ``streams``); answered by ``streams``
    with the same ``n``."""

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
    #: when the connection's credentials expire (unix seconds); ``None``: never
    auth_exp: UnixTime | None = None


class Started(_Frame, tag="started", frozen=True):
    """Answer to ``start``: the stream that carries the run."""

    req: ReqId
    stream: StreamId
    epoch: Epoch


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


class AuthExpiring(_Frame, tag="auth_expiring", frozen=True):
    """The connection's credentials expire in ``in_ms`` milliseconds: send ``refresh``
    (only to a client that offered the ``refresh`` cap)."""

    in_ms: Annotated[int, Meta(ge=0)]


class Refreshed(_Frame, tag="refreshed", frozen=True):
    """Answer to ``refresh``: the new credentials expire at ``exp`` (unix seconds;
    ``None``: they do not expire)."""

    exp: UnixTime | None = None


class LiveStream(Struct, frozen=True, omit_defaults=False):
    """One item of ``streams``: a run of the principal that has not ended, the last
    event the log holds (``head``) and the chain digest after it (``h``)."""

    stream: StreamId
    agent: AgentName
    epoch: Epoch
    head: Seq
    h: Hex16
    status: Literal["running"] = "running"


#: Most items one ``streams`` frame carries (a principal's runs are bounded far below it).
MAX_LIVE_STREAMS: Final = 10_000


class Streams(_Frame, tag="streams", frozen=True):
    """Answer to ``list`` (with its ``n``): the principal's live streams, oldest first."""

    n: Seq = 0
    items: Annotated[list[LiveStream], Meta(max_length=MAX_LIVE_STREAMS)] = []


def unix_time(value: float) -> int | float:
    """``value`` as it goes on the wire: an integer when it is one (``1700000000``,
    never ``1700000000.0``, so every encoder writes the same text)."""
    return int(value) if float(value).is_integer() else float(value)


ClientFrame = Hello | Start | Resume | Ack | Cancel | Refresh | Ping | List
ServerFrame = (
    Welcome
    | Started
    | Events
    | Resumed
    | Resync
    | Gone
    | Error
    | Hb
    | Pong
    | AuthExpiring
    | Refreshed
    | Streams
)

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
#: The ``items`` array of ``events`` (:func:`unbroken.protocol.items.encode`).
encode_items: Final = _encode_items


def encode_events_frame(stream: str, first_seq: int, items: bytes, digest: bytes) -> bytes:
    """Bytes of an ``events`` frame from :func:`encode_items` output and the last digest."""
    # one formatting call (every frame sent): not nine concatenations
    return _EVENTS_FRAME % (stream.encode(), first_seq, items, hexlify(digest))


_EVENTS_FRAME: Final = b'{"t":"events","stream":"%b","seq":%d,"items":%b,"h":"%b"}'


def events_of(frame: Events, part_kinds: dict[str, str] | None = None) -> list[Event]:
    """Turn an ``events`` frame's items into :class:`Event` objects
    (:func:`unbroken.protocol.items.decode`).

    ``part_kinds`` (part id → part kind) is updated with parts started here and
    used to check that each chunk matches its part's kind; pass the dict kept for
    the stream so far. Raises :class:`ProtocolError` on structural errors.
    """
    return decode_items(frame.seq, frame.items, part_kinds)


class ServerCodec:
    """Encodes one connection's server frames in v1 (the interface of
    :class:`unbroken.protocol.frames_v2.ServerCodec`: the server's frames go
    through whichever the connection's version needs)."""

    __slots__ = ()

    version: Final = "v1"
    #: frames go as text messages
    binary: Final = False
    #: the ``hb`` frame
    hb: Final = b'{"t":"hb"}'

    def encode(self, frame: ServerFrame) -> bytes:
        """A server frame as the bytes of one text message."""
        return _encoder.encode(frame)

    def attached(self, stream: str) -> None:
        """An attachment's state for :meth:`events` (v1 needs none)."""
        return None

    def events(
        self,
        stream: str,
        first: int,
        items: bytes,
        digest: bytes,
        last_kind: int,
        state: object = None,
    ) -> bytes:
        """An ``events`` frame from a log read (:func:`encode_events_frame`, inlined:
        every frame sent)."""
        return _EVENTS_FRAME % (stream.encode(), first, items, hexlify(digest))

    def batch(self, frames: list[bytes]) -> bytes:
        """Several frames as one message (cap ``batch``): one per line."""
        return b"\n".join(frames)

    def detached(self, stream: str) -> None:
        """``stream`` is no longer attached (v1 names streams by id: nothing to do)."""

    @staticmethod
    def compress(message: bytes) -> bytes:
        """v1 has no compression of its own (the ``zlib`` cap is v2's)."""
        return message


# ---------------------------------------------------------------- versions
def negotiate_subprotocol(offered: list[str] | tuple[str, ...]) -> str | None:
    """Pick the newest protocol both sides speak (server side); ``None`` if none."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None
