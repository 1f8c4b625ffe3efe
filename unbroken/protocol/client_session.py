"""The client's session state machine (sans-I/O): what a server frame means, what to send.

``IDLE → AWAIT_WELCOME → READY → IDLE`` (connection lost) ``… → CLOSED``.
Per stream: ``STARTING → ATTACHED → ENDED``, or ``DETACHED``/``RESUMING`` across
a reconnect, or ``GONE``. It raises on illegal transitions; the I/O layer only moves
bytes and time. Time is always an argument.

The session decides, the client carries out: which frames to send (it builds every
one: hello, starts and their retries, resumes, acks, pings), what an ``error`` means
for a request (:meth:`ClientSession.server_error` → :class:`RetryStart` at a time, or
:class:`FailStream` with a typed error), whether the link is alive
(:class:`~unbroken.protocol.liveness.Liveness`, checked by :meth:`ClientSession.check`
→ dead, ping, or wake at a time), and how far a consumer read (:class:`ConsumedCursor`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgspec

from ..errors import (
    ChainMismatch,
    ConfigError,
    IntegrityError,
    LogUnavailable,
    Overloaded,
    ProtocolError,
    RequestRefused,
    StreamFailed,
    UnbrokenError,
)
from .backoff import Backoff, BackoffPolicy
from .codes import CloseCode, ErrorCode
from .digest import ChainVerifier, seed, step_event
from .events import Event, Kind
from .frames import (
    CAP_BATCH,
    CAP_REFRESH,
    CAP_STREAMS,
    DEFAULT_MAX_FRAME,
    Ack,
    AuthExpiring,
    Cancel,
    ClientFrame,
    Error,
    Events,
    Gone,
    Hb,
    Hello,
    List,
    LiveStream,
    Pong,
    Refresh,
    Refreshed,
    Resume,
    Resumed,
    Resync,
    ServerFrame,
    Start,
    Started,
    Streams,
    Welcome,
    decode_server,
    encode,
    events_of,
    excerpt,
)
from .frames_v2 import CAP_ZLIB, DIGEST, ClientCodec, EventsV2, encode_client
from .items import decode as decode_items
from .liveness import Check, Liveness
from .retry import HARMLESS_ERROR, REFRESH_ATTEMPTS, RETRYABLE_START, refresh_delay


# ===================================================================== client
class ClientState(Enum):
    IDLE = "idle"
    AWAIT_WELCOME = "await_welcome"
    READY = "ready"
    CLOSED = "closed"


class StreamState(Enum):
    STARTING = "starting"
    ATTACHED = "attached"
    DETACHED = "detached"
    RESUMING = "resuming"
    ENDED = "ended"
    GONE = "gone"


_CURSOR_TAG = "ub1"
_CURSOR_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}\Z")
_CURSOR_DIGEST = re.compile(r"[0-9a-f]{32}\Z")
_CURSOR_SEQ = re.compile(r"(0|[1-9][0-9]{0,15})\Z")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a client is in a stream: enough to resume it later, anywhere.

    ``str(cursor)`` is a compact, URL-safe string (``ub1.<stream>.<seq>.<digest>.<epoch>``,
    under 100 characters) to keep in a cookie, ``localStorage`` or a database;
    :meth:`parse` turns it back into the same cursor.
    """

    stream: str
    seq: int
    digest: str
    epoch: str

    def __str__(self) -> str:
        return f"{_CURSOR_TAG}.{self.stream}.{self.seq}.{self.digest}.{self.epoch}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor ``str(cursor)`` gave; :class:`~unbroken.errors.ConfigError`
        when ``text`` is not one (the message says which field is wrong)."""
        if not isinstance(text, str):
            raise ConfigError(f"a cursor is a string, got {type(text).__name__}")
        fields = text.split(".")
        if len(fields) != 5 or fields[0] != _CURSOR_TAG:
            raise ConfigError(
                f"not a cursor: {excerpt(text, 80)!r} (expected "
                f"'{_CURSOR_TAG}.<stream>.<seq>.<digest>.<epoch>', as str(cursor) gives)"
            )
        _, stream, seq, digest, epoch = fields
        for name, value, pattern in (
            ("stream id", stream, _CURSOR_ID),
            ("seq", seq, _CURSOR_SEQ),
            ("digest", digest, _CURSOR_DIGEST),
            ("epoch", epoch, _CURSOR_ID),
        ):
            if pattern.match(value) is None:
                raise ConfigError(f"cursor {excerpt(text, 80)!r}: bad {name} {value!r}")
        n = int(seq)
        if n > 2**53:
            raise ConfigError(f"cursor {excerpt(text, 80)!r}: seq {n} is out of range")
        return cls(stream, n, digest, epoch)


@dataclass(slots=True)
class ClientStream:
    """Client-side state of one stream (or of a start not yet answered)."""

    req: str
    agent: str = ""
    input: Any = None
    stream: str = ""
    epoch: str = ""
    state: StreamState = StreamState.STARTING
    verifier: ChainVerifier | None = None
    part_kinds: dict[str, str] = field(default_factory=dict)
    #: v2: the current part ``[part, kind]`` carried from frame to frame (reset when
    #: the stream is started or resumed on a connection)
    carried: list[Any] = field(default_factory=lambda: ["", None])
    acked: int = 0
    unacked_bytes: int = 0
    acked_at: float = 0.0  # when the last ack was taken (the caller's clock)
    start_attempts: int = 0  # starts refused as overloaded, rate limited or shutting down
    #: its log unreachable (``error unavailable``): the resumes' backoff since the first
    #: such answer (cleared by the next events)
    outage: Backoff | None = None
    #: a start the server asked to be sent again later (refused for load, its log
    #: unreachable): nothing is due from the server for it until then
    resend_due: bool = False

    @property
    def seq(self) -> int:
        return self.verifier.seq if self.verifier else 0

    def cursor(self) -> Cursor | None:
        if not self.stream or self.verifier is None:
            return None
        return Cursor(self.stream, self.verifier.seq, self.verifier.digest.hex(), self.epoch)


class ConsumedCursor:
    """How far a consumer has read a stream: the last verified digest it passed (an
    anchor, from a frame's end) and the events consumed since, so the cursor of any
    event is computed only when asked for (pure; it outlives the session's state)."""

    __slots__ = ("_anchor", "_since", "epoch", "stream")

    def __init__(self) -> None:
        self.stream = ""
        self.epoch = ""
        self._anchor: tuple[int, bytes] | None = None
        self._since: list[Event] = []

    def began(self, stream: str, epoch: str, seq: int = 0, digest: bytes | None = None) -> None:
        """The stream is known (started: at its seed; resumed: at a saved cursor)."""
        self.stream, self.epoch = stream, epoch
        if self._anchor is None:
            self._anchor = (seq, seed(stream, epoch) if digest is None else digest)

    def verified(self, seq: int, digest: bytes) -> None:
        """Every event up to ``seq`` (its frame's last) was consumed; ``digest`` after it."""
        self._anchor = (seq, digest)
        self._since.clear()

    def consumed(self, event: Event) -> None:
        self._since.append(event)

    def cursor(self) -> Cursor | None:
        """The position after the last consumed event; ``None`` before the start."""
        if self._anchor is None:
            return None
        seq, digest = self._anchor
        for ev in self._since:
            digest = step_event(digest, ev)
            seq = ev.seq
        return Cursor(self.stream, seq, digest.hex(), self.epoch)


def end_error(stream: str, status: str, error: str, cancelled: bool) -> StreamFailed | None:
    """What an ``end`` event with ``status`` means to the user: success
    (``completed``, or ``cancelled`` after the user's own cancel), else the failure."""
    if status == "completed" or (status == "cancelled" and cancelled):
        return None
    return StreamFailed(stream, status, error)


# Actions of ClientSession.server_error
@dataclass(frozen=True, slots=True)
class RetryStart:
    """Send the start of ``req`` again at ``at`` (ask :meth:`ClientSession.resend_start`)."""

    req: str
    at: float


@dataclass(frozen=True, slots=True)
class RetryResume:
    """Resume ``req`` again at ``at`` (its log was unreachable; ask
    :meth:`ClientSession.resend_resume`)."""

    req: str
    at: float


@dataclass(frozen=True, slots=True)
class FailStream:
    """The request ``req`` ends with ``error`` (the session forgot it)."""

    req: str
    error: UnbrokenError


@dataclass(frozen=True, slots=True)
class AskToken:
    """Ask the token provider at ``at`` (0: at once) and hand its token to
    :meth:`ClientSession.refresh` with this ``connection`` number (an answer for a
    connection that is gone by then is dropped). ``attempt`` counts from 1."""

    at: float
    attempt: int
    connection: int


# Outputs of ClientSession.receive
@dataclass(frozen=True, slots=True)
class Welcomed:
    welcome: Welcome


@dataclass(frozen=True, slots=True)
class StreamStarted:
    req: str
    stream: str
    epoch: str


class StreamEvents(msgspec.Struct, frozen=True):
    """Events received for a stream, verified (a Struct: one is made per frame)."""

    stream: str
    events: list[Event]
    digest: bytes
    nbytes: int


@dataclass(frozen=True, slots=True)
class StreamResumed:
    stream: str
    from_seq: int
    head: int
    status: str


@dataclass(frozen=True, slots=True)
class StreamGoneOut:
    stream: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerError:
    error: Error


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class PongOut:
    n: int


@dataclass(frozen=True, slots=True)
class AuthExpiringOut:
    """The server said the credentials expire in ``in_ms``; ``ask``: get a new token
    (``None``: this client cannot refresh in-band; it reconnects after close 4010)."""

    in_ms: int
    ask: AskToken | None


@dataclass(frozen=True, slots=True)
class StreamsOut:
    """The answer to ``list`` number ``n``: the principal's live streams."""

    n: int
    items: list[LiveStream]


@dataclass(frozen=True, slots=True)
class RefreshedOut:
    """A ``refresh`` was accepted: the credentials now expire at ``exp`` (unix
    seconds; ``None``: never)."""

    exp: float | None


# Enum member lookups cost ~150 ns each on Python 3.11; the per-frame path uses these.
_READY = ClientState.READY
_AWAIT_WELCOME = ClientState.AWAIT_WELCOME
_ATTACHED = StreamState.ATTACHED
_END = int(Kind.END)
_LIVE = (StreamState.STARTING, StreamState.ATTACHED, StreamState.RESUMING)

ClientOutput = (
    Welcomed
    | StreamStarted
    | StreamEvents
    | StreamResumed
    | StreamGoneOut
    | ServerError
    | Heartbeat
    | PongOut
    | AuthExpiringOut
    | RefreshedOut
    | StreamsOut
)


class ClientSession:
    """One logical client across many connections: streams survive reconnects."""

    def __init__(
        self,
        *,
        caps: tuple[str, ...] = (),
        max_frame: int = DEFAULT_MAX_FRAME,
        liveness: Liveness | None = None,
        start_attempts: int = 12,
        start_jitter: float = 0.5,
        rng: random.Random | None = None,
        outage_policy: BackoffPolicy | None = None,
    ) -> None:
        self.state = ClientState.IDLE
        #: how long a stream whose log is unreachable (``error unavailable``) is
        #: resumed again before it fails with ``LogUnavailable`` (the reconnect policy)
        self.outage_policy = outage_policy or BackoffPolicy()
        #: a start refused for load is sent again after ``retry_after_ms`` times
        #: ``1 + start_jitter * U[0, 1)``: the server's wait is a floor, and a refused
        #: herd spreads out above it instead of coming back in one burst
        self.start_jitter = start_jitter
        self._rng = rng if rng is not None else random.Random()
        self.caps = list(caps)
        self.max_frame = max_frame
        self.welcome: Welcome | None = None
        self.by_req: dict[str, ClientStream] = {}
        self.by_stream: dict[str, ClientStream] = {}
        self.ack_every = 256 * 1024
        #: a stream with at least ``ack_min`` bytes unacked is acked once ``ack_after``
        #: seconds have passed since its last ack: on a slow link the server still hears
        #: from a reading client well before its window fills (set from ``welcome``)
        self.ack_min = 16 * 1024
        self.ack_after = 1.0
        #: both sides agreed on the ``batch`` cap: a message may hold several frames
        self.batch = False
        #: both sides agreed on the ``zlib`` cap (v2): a large message may come deflated
        self.zlib = False
        #: anonymous mode: the key the server issued, presented on every connection
        #: so that request ids stay this client's (a retried start finds its stream)
        self.anon: str | None = None
        #: is the link alive? (the RTT estimate, pings, silence)
        self.liveness = liveness or Liveness()
        #: an ``hb`` arrived since the last :meth:`after_message`
        self.hb_seen = False
        #: a start refused as overloaded this many times fails with ``Overloaded``
        self.start_attempts = start_attempts
        #: in-band refresh is in force on this connection (both sides listed the cap)
        self.refresh_agreed = False
        #: ``list`` may be sent on this connection (both sides listed ``streams``)
        self.streams_agreed = False
        #: when this connection's credentials expire (unix seconds; ``None``: never)
        self.auth_exp: float | None = None
        #: refreshes refused (or tokens the provider failed to give) since the last
        #: success; at ``refresh_attempts`` the client stops asking and lets the
        #: connection expire (close 4010: it reconnects with a fresh token)
        self.refresh_failures = 0
        self.refresh_attempts = REFRESH_ATTEMPTS
        self._connection = 0  # numbers the connections (AskToken.connection)
        #: the protocol version of the current connection (set by :meth:`connect`)
        self.version = "v1"
        self._codec: ClientCodec | None = None  # v2's decoder and stream handles
        self._decode: Callable[[bytes | str, int], Any] = decode_server

    def wire(self, frame: ClientFrame) -> str | bytes:
        """``frame`` as the connection's version sends it: v1 text, v2 binary."""
        if self._codec is not None:
            return encode_client(frame)
        return encode(frame).decode()

    def frames_of(self, message: bytes | str) -> list[bytes | str]:
        """The frames of one WebSocket message, each for :meth:`receive`: the message
        itself, or with the ``batch`` cap agreed, its lines (v1) or the frames of a
        batch frame (v2)."""
        if self._codec is not None:
            return self._codec.split(message, self.max_frame, self.zlib)
        if self.batch:
            if isinstance(message, str):
                if "\n" in message:
                    return list(message.split("\n"))
            elif b"\n" in message:
                return list(message.split(b"\n"))
        return [message]

    # ---- connection lifecycle
    def connect(self, token: str | None = None, version: str = "v1") -> Hello:
        """A new connection is open, speaking protocol ``version``: the frame to send
        first (encode every frame with :meth:`wire`)."""
        if self.state is ClientState.CLOSED:
            raise ProtocolError("session is closed", CloseCode.NORMAL)
        if self.state is not ClientState.IDLE:
            raise ProtocolError(f"connect in state {self.state.value}", CloseCode.BAD_FRAME)
        self.state = ClientState.AWAIT_WELCOME
        self._connection += 1
        self.version = version
        self._codec = ClientCodec() if version == "v2" else None
        self._decode = self._codec.decode if self._codec is not None else decode_server
        return Hello(caps=self.caps, token=token, anon=self.anon)

    def _resume(self, cs: ClientStream) -> Resume:
        assert cs.verifier is not None
        cs.state = StreamState.RESUMING
        return Resume(cs.stream, cs.verifier.seq, cs.epoch, cs.verifier.digest.hex())

    def resumes(self) -> list[ClientFrame]:
        """Frames to send right after ``hello``, before ``welcome`` (protocol §2,
        pipelined: the server handles frames in order, so this saves a round trip on
        every reconnect): ``resume`` for every detached stream."""
        return [self._resume(cs) for cs in self.by_req.values() if cs.state is StreamState.DETACHED]

    def after_welcome(self) -> list[ClientFrame]:
        """Frames to send once welcomed: retry unanswered starts, resume every open
        stream not resumed yet (:meth:`resumes` sends them sooner)."""
        out: list[ClientFrame] = []
        for cs in self.by_req.values():
            if cs.state is StreamState.STARTING:
                cs.resend_due = False
                out.append(Start(cs.req, cs.agent, cs.input))
            elif cs.state is StreamState.DETACHED:
                out.append(self._resume(cs))
        return out

    def list_streams(self, n: int) -> List | None:
        """The ``list`` frame number ``n`` to send now, or ``None`` while not welcomed
        (sent again by the caller after the next welcome)."""
        if self.state is not _READY or not self.streams_agreed:
            return None
        return List(n)

    def connected(self) -> None:
        """A new connection is being opened (before :meth:`connect`'s hello)."""
        self.hb_seen = False
        self.liveness.connecting()

    def connection_lost(self) -> None:
        """The connection died: attached streams wait for a resume."""
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.IDLE
        self.welcome = None
        self.zlib = False
        self.refresh_agreed = False
        self.streams_agreed = False
        self.auth_exp = None
        self.refresh_failures = 0
        for cs in self.by_req.values():
            if cs.state in (StreamState.ATTACHED, StreamState.RESUMING):
                cs.state = StreamState.DETACHED
            elif cs.state is StreamState.ENDED and cs.verifier is not None:
                # the end was received: an ack would only reach a connection that never
                # had the stream (answered ``bad_ack``); nothing is left to acknowledge
                cs.acked = cs.verifier.seq
                cs.unacked_bytes = 0

    def close(self) -> None:
        self.state = ClientState.CLOSED

    def expecting_frames(self) -> bool:
        """True while some stream is live (or a start or resume awaits its answer):
        the server sends ``hb`` only then. A start to be sent again later awaits
        nothing yet (the server, answered, may fall quiet)."""
        return any(cs.state in _LIVE and not cs.resend_due for cs in self.by_req.values())

    def check(self, now: float, due: float) -> Check:
        """The periodic liveness check (run at ``now``, due at ``due``)."""
        self.liveness.ahead = self.bytes_ahead()
        return self.liveness.check(now, due, self.expecting_frames())

    def bytes_ahead(self) -> int:
        """Event bytes that may be on their way now (ahead of a ping sent now): the
        server sends a live stream at most its flow window beyond the last ack, so
        the window less what arrived unacked, and a quarter window more (a frame's
        own bytes may overrun the window's budget). 0 before ``welcome``."""
        welcome = self.welcome
        if welcome is None:
            return 0
        window = welcome.limits.window
        return sum(
            max(0, window - cs.unacked_bytes) + window // 4
            for cs in self.by_req.values()
            if cs.state in _LIVE
        )

    # ---- requests
    def start(self, req: str, agent: str, input: Any) -> Start | None:
        """Register a start; the frame to send now, or ``None`` to send after welcome.
        Raises :class:`RequestRefused` when the server said it takes no frame that big."""
        if req in self.by_req:
            raise ConfigError(
                f"request id {req!r} already used by this client: a req names one start "
                "(the client itself re-sends it after a drop); give a new req, or none"
            )
        welcome = self.welcome
        if welcome is not None:  # the server said how big a frame it takes
            size = len(encode(Start(req, agent, input)))
            limit = welcome.limits.max_client_frame
            if size > limit:
                raise RequestRefused(
                    "too_big",
                    f"the start frame is {size} bytes; this server takes at most "
                    f"{limit} (send less input, or a reference to it)",
                )
        self.by_req[req] = ClientStream(req=req, agent=agent, input=input)
        if self.state is ClientState.READY:
            return Start(req, agent, input)
        return None

    def adopt(self, req: str, cursor: Cursor) -> Resume | None:
        """Pick up a stream from a saved cursor; the resume to send now, or later."""
        if cursor.stream in self.by_stream:
            raise ProtocolError(f"stream {cursor.stream} is already open", CloseCode.BAD_FRAME)
        cs = ClientStream(req=req, stream=cursor.stream, epoch=cursor.epoch)
        cs.verifier = ChainVerifier(
            cursor.stream, cursor.epoch, cursor.seq, bytes.fromhex(cursor.digest)
        )
        cs.acked = cursor.seq
        cs.state = StreamState.DETACHED
        self.by_req[req] = cs
        self.by_stream[cursor.stream] = cs
        if self.state is ClientState.READY:
            cs.state = StreamState.RESUMING
            return Resume(cursor.stream, cursor.seq, cursor.epoch, cursor.digest)
        return None

    def resend_start(self, req: str) -> Start | None:
        """The start of ``req`` to send again now (after :class:`RetryStart`), or
        ``None`` when it was answered, ended, was sent again by a ``welcome`` meanwhile
        (still unanswered: never twice), or waits for the next connection (which sends
        it after ``welcome``)."""
        cs = self.by_req.get(req)
        if cs is None or not cs.resend_due:  # a welcome sent it meanwhile: unanswered yet
            return None
        cs.resend_due = False
        if cs.state is not StreamState.STARTING or self.state is not _READY:
            return None
        return Start(cs.req, cs.agent, cs.input)

    def resend_resume(self, req: str) -> Resume | None:
        """The resume of ``req`` to send again now (after :class:`RetryResume`), or
        ``None`` when it was resumed, ended or forgotten meanwhile, or waits for the
        next connection (which resumes it after ``hello``)."""
        cs = self.by_req.get(req)
        if cs is None or cs.state is not StreamState.DETACHED or self.state is not _READY:
            return None
        return self._resume(cs)

    def _unavailable(self, cs: ClientStream, error: Error, now: float) -> RetryResume | FailStream:
        """``cs``'s log is unreachable: DETACHED, resumed again after a backoff whose
        floor is the server's ``retry_after_ms``, within :attr:`outage_policy`'s
        attempts and deadline; past them it fails with ``LogUnavailable``."""
        if cs.outage is None:
            cs.outage = Backoff(self.outage_policy, now, self._rng)
        floor = (error.retry_after_ms or 1000) / 1000
        delay = cs.outage.next_delay(now, floor)
        if delay is None:
            out = cs.outage
            self.forget(cs.req)
            return FailStream(
                cs.req,
                LogUnavailable(cs.stream, error.message, out.attempts, out.elapsed(now)),
            )
        cs.state = StreamState.DETACHED
        return RetryResume(cs.req, now + delay)

    def _start_unavailable(
        self, cs: ClientStream, error: Error, now: float
    ) -> RetryStart | FailStream:
        """The log a start creates its stream in is unreachable (or slow) for now: the
        same start (same ``req``: the server creates one stream, runs one agent) is
        sent again after the backoff of :meth:`_unavailable`, within the same policy;
        past it the start fails with ``LogUnavailable`` (no stream yet)."""
        if cs.outage is None:
            cs.outage = Backoff(self.outage_policy, now, self._rng)
        delay = cs.outage.next_delay(now, (error.retry_after_ms or 1000) / 1000)
        if delay is None:
            out = cs.outage
            self.forget(cs.req)
            return FailStream(
                cs.req,
                LogUnavailable("", error.message, out.attempts, out.elapsed(now), req=cs.req),
            )
        cs.resend_due = True
        return RetryStart(cs.req, now + delay)

    def server_error(
        self, error: Error, now: float
    ) -> RetryStart | RetryResume | FailStream | AskToken | None:
        """What an ``error`` frame means for its request or stream: a start refused
        for load is sent again after ``retry_after_ms`` (1 s if none; a floor, with
        up to ``start_jitter`` of it added at random), at most
        ``start_attempts`` times, then fails with ``Overloaded``; an error about one
        ack or an unsupported frame changes nothing; any other ends the request
        with ``RequestRefused``. A stream whose log is unreachable (``unavailable``,
        sent only with that cap offered) is resumed again later
        (:class:`RetryResume`, see :meth:`_unavailable`), a start whose log is
        unreachable is sent again later (:meth:`_start_unavailable`). A refused ``refresh``
        (``auth_failed``) is asked for again with backoff (:meth:`refresh_failed`)."""
        if error.code == ErrorCode.AUTH_FAILED and error.req is None and error.stream is None:
            return self.refresh_failed(now)
        cs: ClientStream | None = None
        if error.req is not None:
            cs = self.by_req.get(error.req)
        elif error.stream is not None:
            cs = self.by_stream.get(error.stream)
        if cs is None:
            return None
        if (
            error.req is not None
            and error.stream is None
            and cs.stream
            and (error.code in RETRYABLE_START or error.code == ErrorCode.UNAVAILABLE)
        ):
            return None  # a stale answer to a start already answered ``started`` (§9)
        if error.code in RETRYABLE_START and error.req is not None and not cs.stream:
            cs.start_attempts += 1
            wait = (error.retry_after_ms or 1000) / 1000
            if cs.start_attempts >= self.start_attempts:
                self.forget(cs.req)
                return FailStream(cs.req, Overloaded(error.message or error.code, wait))
            cs.resend_due = True
            return RetryStart(cs.req, now + wait * (1 + self.start_jitter * self._rng.random()))
        if error.code == ErrorCode.UNAVAILABLE and error.req is not None and not cs.stream:
            return self._start_unavailable(cs, error, now)
        if (
            error.code == ErrorCode.UNAVAILABLE
            and error.stream is not None
            and cs.verifier is not None
            and cs.state in (StreamState.ATTACHED, StreamState.RESUMING, StreamState.DETACHED)
        ):
            return self._unavailable(cs, error, now)
        if error.code in HARMLESS_ERROR:
            return None
        self.forget(cs.req)
        return FailStream(cs.req, RequestRefused(error.code, error.message))

    # ---- in-band token refresh (cap "refresh")
    def refresh(self, token: str | None, connection: int) -> Refresh | None:
        """The ``refresh`` frame carrying the provider's ``token`` (asked for by
        :class:`AskToken` on ``connection``), or ``None``: the connection is gone
        (the next one's ``hello`` carries a fresh token anyway), or there is no
        token (report it with :meth:`refresh_failed`)."""
        if (
            not token
            or connection != self._connection
            or self.state is not _READY
            or not self.refresh_agreed
        ):
            return None
        return Refresh(token=token)

    def refresh_failed(self, now: float) -> AskToken | None:
        """A refresh failed (the server answered ``auth_failed``, or the provider
        raised or gave nothing): ask again after a backoff, at most
        ``refresh_attempts`` times in a row; then ``None`` (stop asking: the server
        closes 4010 at expiry and the client reconnects with a fresh token)."""
        if not self.refresh_agreed or self.state is not _READY:
            return None
        self.refresh_failures += 1
        if self.refresh_failures >= self.refresh_attempts:
            return None
        return AskToken(
            now + refresh_delay(self.refresh_failures),
            self.refresh_failures + 1,
            self._connection,
        )

    def cancel(self, stream: str) -> Cancel:
        return Cancel(stream)

    def forget(self, req: str) -> None:
        """Drop a finished stream's state."""
        cs = self.by_req.pop(req, None)
        if cs is not None and cs.stream:
            self.by_stream.pop(cs.stream, None)

    def take_acks(self, now: float = 0.0) -> list[Ack]:
        """Acks due now (cumulative): after every ``ack_every`` bytes, at the end, or
        ``ack_after`` seconds after the last one with ``ack_min`` bytes unacked."""
        out: list[Ack] = []
        for cs in self.by_stream.values():
            if cs.verifier is None or cs.verifier.seq <= cs.acked:
                continue
            n = cs.unacked_bytes
            if (
                n >= self.ack_every
                or cs.state is StreamState.ENDED
                or (n >= self.ack_min and now - cs.acked_at >= self.ack_after)
            ):
                cs.acked = cs.verifier.seq
                cs.unacked_bytes = 0
                cs.acked_at = now
                if self.state is ClientState.READY:
                    out.append(Ack(cs.stream, cs.acked))
        return out

    def heartbeat_acks(self, now: float = 0.0) -> list[Ack]:
        """Acks to answer an ``hb`` with: the cumulative ack of every attached stream,
        sent again even if sent before. The server sends ``hb`` only while quiet, e.g.
        waiting on a full window: if an earlier ack was lost on the way (a link that
        dropped the client's frames for a while), this one unblocks it."""
        if self.state is not ClientState.READY:
            return []
        out: list[Ack] = []
        for cs in self.by_stream.values():
            if cs.state is _ATTACHED and cs.verifier is not None and cs.verifier.seq > 0:
                cs.acked = cs.verifier.seq
                cs.unacked_bytes = 0
                cs.acked_at = now
                out.append(Ack(cs.stream, cs.acked))
        return out

    def after_message(self, now: float) -> Sequence[ClientFrame]:
        """Frames to send once a whole message was handled: the acks due (after an
        ``hb``, every attached stream's, again), then a ping when none is out (it
        answers the ``hb`` and proves the acks got through)."""
        acks = self.take_acks(now)
        if self.hb_seen:
            self.hb_seen = False
            acks = self.heartbeat_acks(now)
        elif not acks:  # the common case: nothing due
            return acks
        live = self.liveness
        if live.awaiting_pong:
            return acks
        live.ahead = self.bytes_ahead()
        return [*acks, live.ping(now)]

    # ---- input
    def receive(self, data: bytes | str) -> ClientOutput:
        """Decode and apply one server frame."""
        state = self.state
        if state is _READY:
            frame = self._decode(data, self.max_frame)
            t = type(frame)
            if t is EventsV2:  # the hot paths
                return self._events2(frame, len(data))
            if t is Events:
                return self._events(frame, len(data))
            return self._apply(frame, len(data))
        if state is not _AWAIT_WELCOME:
            raise ProtocolError(f"frame received in state {state.value}", CloseCode.BAD_FRAME)
        frame = self._decode(data, self.max_frame)
        if isinstance(frame, Welcome):
            self.welcome = frame
            self.state = ClientState.READY
            if frame.anon is not None:
                self.anon = frame.anon
            self.batch = CAP_BATCH in self.caps and CAP_BATCH in frame.caps
            self.zlib = CAP_ZLIB in self.caps and CAP_ZLIB in frame.caps
            self.refresh_agreed = CAP_REFRESH in self.caps and CAP_REFRESH in frame.caps
            self.streams_agreed = CAP_STREAMS in self.caps and CAP_STREAMS in frame.caps
            self.auth_exp = frame.auth_exp
            self.refresh_failures = 0
            # ack well inside the server's window, or a small window would stall
            self.ack_every = max(1, min(self.ack_every, frame.limits.window // 4))
            self.ack_min = max(1, min(self.ack_min, frame.limits.window // 64))
            self.ack_after = max(0.001, frame.heartbeat_ms / 1000)
            return Welcomed(frame)
        if isinstance(frame, Error):
            return ServerError(frame)
        name = "events" if type(frame) is EventsV2 else type(frame).__name__.lower()
        raise ProtocolError(f"expected welcome, got {name}", CloseCode.BAD_FRAME)

    def _apply(self, frame: ServerFrame, nbytes: int) -> ClientOutput:
        if isinstance(frame, Events):
            return self._events(frame, nbytes)
        if isinstance(frame, Hb):
            self.hb_seen = True
            return Heartbeat()
        if isinstance(frame, Pong):
            return PongOut(frame.n)
        if isinstance(frame, Started):
            cs = self.by_req.get(frame.req)
            if cs is None:
                raise ProtocolError(f"started for unknown request {frame.req!r}")
            if cs.state is not StreamState.STARTING:
                raise ProtocolError(
                    f"started for request {frame.req!r} in state {cs.state.value}: a start "
                    "is answered once"
                )
            cs.stream, cs.epoch = frame.stream, frame.epoch
            cs.verifier = ChainVerifier(frame.stream, frame.epoch)
            cs.carried = ["", None]
            self.by_stream[frame.stream] = cs
            cs.state = StreamState.ATTACHED
            return StreamStarted(frame.req, frame.stream, frame.epoch)
        if isinstance(frame, Resumed):
            cs = self._stream(frame.stream)
            if cs.state is not StreamState.RESUMING:
                raise ProtocolError(f"resumed for stream {frame.stream} not resuming")
            if frame.from_ != cs.seq:
                raise ProtocolError(
                    f"resumed from {frame.from_}, but the client is at {cs.seq}",
                )
            cs.state = StreamState.ATTACHED
            cs.carried = ["", None]
            return StreamResumed(frame.stream, frame.from_, frame.head, frame.status)
        if isinstance(frame, Gone):
            cs = self._stream(frame.stream)
            cs.state = StreamState.GONE
            return StreamGoneOut(frame.stream, frame.reason, frame.message)
        if isinstance(frame, AuthExpiring):
            ask = None
            if self.refresh_agreed:
                self.refresh_failures = 0  # a new expiry: a fresh budget of attempts
                ask = AskToken(0.0, 1, self._connection)
            return AuthExpiringOut(frame.in_ms, ask)
        if isinstance(frame, Refreshed):
            if not self.refresh_agreed:
                raise ProtocolError("refreshed without the refresh cap agreed")
            self.refresh_failures = 0
            self.auth_exp = frame.exp
            return RefreshedOut(frame.exp)
        if isinstance(frame, Streams):
            if not self.streams_agreed:
                raise ProtocolError("streams without the streams cap agreed")
            return StreamsOut(frame.n, frame.items)
        if isinstance(frame, Resync):
            raise ProtocolError("resync is reserved and not used by protocol v1")
        if isinstance(frame, Error):
            return ServerError(frame)
        raise ProtocolError(f"unexpected {type(frame).__name__.lower()} frame")

    def _stream(self, stream: str) -> ClientStream:
        cs = self.by_stream.get(stream)
        if cs is None:
            raise ProtocolError(f"frame for unknown stream {stream}")
        return cs

    def _events(self, frame: Events, nbytes: int) -> StreamEvents:
        cs = self.by_stream.get(frame.stream)
        if cs is None:
            raise ProtocolError(f"events for unknown stream {frame.stream}")
        if cs.state is not _ATTACHED or cs.verifier is None:
            raise ProtocolError(f"events for stream {frame.stream} in state {cs.state.value}")
        events = events_of(frame, cs.part_kinds)
        v = cs.verifier
        try:
            v.extend(events, bytes.fromhex(frame.h))
        except ChainMismatch as exc:
            raise IntegrityError(frame.stream, exc.seq, exc.detail) from None
        cs.unacked_bytes += nbytes
        cs.outage = None  # its log answers again: a later outage gets a new budget
        self.liveness.events_heard(nbytes)
        if events[-1].kind == _END:
            cs.state = StreamState.ENDED
        return StreamEvents(frame.stream, events, v.digest, nbytes)

    def _events2(self, frame: EventsV2, nbytes: int) -> StreamEvents:
        """:meth:`_events` for a v2 frame: the stream by its handle, ``h`` as bytes
        (8 of them, or 16 in the frame that carries ``end``)."""
        assert self._codec is not None
        stream = self._codec.stream_of(frame.handle)
        cs = self.by_stream.get(stream)
        if cs is None:
            raise ProtocolError(f"events for unknown stream {stream}")
        if cs.state is not _ATTACHED or cs.verifier is None:
            raise ProtocolError(f"events for stream {stream} in state {cs.state.value}")
        events = decode_items(frame.seq, frame.items, cs.part_kinds, cs.carried)
        if events[-1].kind == _END and len(frame.h) != DIGEST:
            raise ProtocolError(f"stream {stream}: the frame with end must carry all 16 bytes of h")
        v = cs.verifier
        try:
            v.extend(events, frame.h)
        except ChainMismatch as exc:
            raise IntegrityError(stream, exc.seq, exc.detail) from None
        cs.unacked_bytes += nbytes
        cs.outage = None  # its log answers again: a later outage gets a new budget
        self.liveness.events_heard(nbytes)
        if events[-1].kind == _END:
            cs.state = StreamState.ENDED
        return StreamEvents(stream, events, v.digest, nbytes)
