"""One client connection: reads frames, answers them, pumps attached streams.

Transport-agnostic: anything with ``receive``/``send``/``close`` (see
:class:`Transport`) can carry it; :mod:`unbroken.server.asgi` has the one ASGI
transport. It is given narrow ports, never the app: the frozen
:class:`~unbroken.server.config.ServerConfig`, the hub, the store, the
``authenticate`` hook and the set of live connections. What each stream sent and
the client acked is the session's (:class:`~unbroken.protocol.server_session.ServerSession`).
Sends are strictly ordered (one rule, :meth:`Connection._next_frame`; one send at a time).
With a log that reads without waiting (the memory log) the frames ready when a
stream grows are built and sent right away, in the append's own callback, and a
send runs eagerly (:mod:`unbroken.server.eager`): no task and no trip through
the event loop per token. A task (the pump) takes over only when there is
something to wait for: a send that met backpressure, a log read with I/O, or the
coalescing interval of a fast trickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from binascii import hexlify
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
from websockets.exceptions import ConnectionClosed

from ..errors import (
    AuthError,
    Forbidden,
    JWKSUnavailable,
    LogFull,
    Overloaded,
    ProtocolError,
    StoreUnavailable,
    UnknownAgent,
)
from ..protocol.codes import CloseCode, ErrorCode, close_reason
from ..protocol.frames import (
    CAP_BATCH,
    CAP_REFRESH,
    CAP_STREAMS,
    CAP_UNAVAILABLE,
    MAX_LIVE_STREAMS,
    Ack,
    AuthExpiring,
    Cancel,
    Error,
    Gone,
    Hello,
    Limits,
    List,
    LiveStream,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Resume,
    Resumed,
    ServerCodec,
    Start,
    Started,
    Streams,
    Welcome,
    excerpt,
    unix_time,
)
from ..protocol.frames_v2 import CAP_ZLIB, ZLIB_MIN
from ..protocol.frames_v2 import ServerCodec as ServerCodecV2
from ..protocol.items import _OPENED, _open_chunk
from ..protocol.resume import StreamInfo, decide_resume
from ..protocol.server_session import AckResult, ServerSession, TokenBucket
from ..store.base import DIVERGED, LiveIndex
from . import eager
from .agent import Principal, anonymous_principal
from .attach import _CHUNK_FRAME, Attachment
from .config import ServerConfig
from .shape import call_hook
from .ticker import ticker

if TYPE_CHECKING:
    from ..store.base import StreamLog
    from .hub import Hub

log = logging.getLogger(__name__)

#: what a resume's lookups found: the stream's info, the chain value at its ``after``
_Found = tuple[StreamInfo | None, bytes | None]

#: An empty read-only mapping: the default headers, query and cookies of a ConnectInfo
#: (every connection keeps one after its hello: not 3 empty dicts each)
_NO_ENTRIES: Final[Mapping[str, str]] = MappingProxyType({})
#: Never written to: what a connection's rarely used tables are until their first write.
_SHARED_EMPTY: Final[dict[str, Any]] = {}


class Transport(Protocol):
    """What a connection needs from a WebSocket."""

    async def receive(self) -> str | bytes | None:
        """Next message, or ``None`` once the peer is gone."""
        ...

    async def send(self, data: bytes) -> None:
        """Send one text message (UTF-8 bytes)."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Close with a code (best effort)."""
        ...

    @property
    def disconnect_code(self) -> int | None:
        """Close code the peer (or the WebSocket layer) ended with, once gone."""
        ...


# A transport may also have ``send_nowait: Callable[[bytes], bool] | None``: a send
# without a coroutine that answers ``False`` (nothing sent) when the message must
# wait or go through ``send``. The connection uses it for every frame when present.
# And ``polls: bool``: when true, ``receive_nowait()`` answers what ``receive`` would,
# or PENDING (nothing yet: await ``arrival()``, then ask again); a connection waiting
# for a message then holds no coroutine of the transport (~0.25 KB, issue 21).


class Pending(enum.Enum):
    """The type of :data:`PENDING`."""

    PENDING = "pending"


#: What a polling transport's ``receive_nowait`` answers when no message is queued.
PENDING: Final = Pending.PENDING


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What is known about the peer before ``hello``: address, headers, query, cookies."""

    client: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_ENTRIES)
    query: Mapping[str, str] = field(default_factory=lambda: _NO_ENTRIES)
    cookies: Mapping[str, str] = field(default_factory=lambda: _NO_ENTRIES)
    principal: Principal | None = None  # set when a framework dependency authenticated


Authenticate = Callable[[Hello, ConnectInfo], Awaitable[Principal]]

#: How a close that this side did not start reads in the log.
_PEER_CLOSE: dict[int, str] = {
    CloseCode.NORMAL: "peer closed",
    CloseCode.GOING_AWAY: "peer going away",
    1005: "peer closed (no status)",
    1006: "connection lost (no close frame)",
    CloseCode.TOO_BIG: "frame over the size limit (closed by the WebSocket layer)",
    1007: "invalid UTF-8 (closed by the WebSocket layer)",
    CloseCode.SERVICE_RESTART: "server restarting (closed by the ASGI server)",
}


def notice_delay(left: float) -> float:
    """Seconds from now to the ``auth_expiring`` notice of credentials that expire in
    ``left`` seconds: the client is left ``min(20 % of left, 30 s)`` to refresh (a 2 s
    token: at 1.6 s; an hour's: 30 s before). The later of "80 % of the lifetime" and
    "30 s before": the sooner would be at once for any token under 150 s, and again
    right after each refresh (a refresh storm)."""
    left = max(0.0, left)
    return max(0.8 * left, left - 30.0)


def _read_into(att: Attachment, frames: list[bytes], size: int, cap: int) -> int:
    """Append ``att``'s next frames to ``frames`` while ``size`` (the bytes taken so
    far) is under ``cap``; the new size."""
    while size < cap:
        frame = att.next_frame_nowait()
        if frame is None:
            break
        frames.append(frame)
        size += len(frame)
    return size


class Connection:
    """Serves one WebSocket until it closes."""

    # one per client: ~55 attributes in slots, not an instance dict (over 30 of them
    # CPython gives up its shared-key layout: a ~2 KB dict per connection)
    __slots__ = (
        "_answers",
        "_batch",
        "_close_code",
        "_close_reason",
        "_closed",
        "_coalesce",
        "_coalescing",
        "_counts",
        "_dirty",
        "_draining",
        "_encode",
        "_errors",
        "_events_at",
        "_expiry_handle",
        "_hb",
        "_hb_armed",
        "_hello_frame",
        "_inflight",
        "_kill_code",
        "_killed",
        "_last_recv",
        "_last_send",
        "_loop",
        "_notice_handle",
        "_nowait",
        "_obs",
        "_outbox",
        "_outbox_bytes",
        "_paced",
        "_pump_task",
        "_ready",
        "_refresh_cap",
        "_refresh_task",
        "_requests",
        "_resumes",
        "_running",
        "_send_started",
        "_send_sync",
        "_slow",
        "_starting",
        "_task",
        "_tick_pending",
        "_unavailable_cap",
        "_waiter",
        "_yield_now",
        "_zlib",
        "atts",
        "authenticate",
        "codec",
        "config",
        "hub",
        "id",
        "info",
        "principal",
        "refreshes",
        "registry",
        "session",
        "store",
        "t",
    )

    def __init__(
        self,
        config: ServerConfig,
        hub: Hub,
        store: StreamLog,
        transport: Transport,
        info: ConnectInfo,
        *,
        authenticate: Authenticate | None = None,
        registry: MutableSet[Connection] | None = None,
        version: str = "v1",
    ) -> None:
        self.config = config
        self.hub = hub
        self.store = store
        self.authenticate = authenticate
        #: the app's set of live connections (this one adds and removes itself)
        self.registry: MutableSet[Connection] = registry if registry is not None else set()
        self.t = transport
        #: the transport's send without a coroutine: ``True`` when it sent at once
        #: (:attr:`Transport.send_nowait`; optional: ``send`` does the rest)
        self._send_sync: Callable[[bytes], bool] | None = getattr(transport, "send_nowait", None)
        self.info = info
        self.id = secrets.token_urlsafe(6)
        self.session = ServerSession(
            max_frame=config.max_client_frame,
            max_hello_frame=config.max_hello_frame,
            max_streams=config.limits.max_streams,
            start_rate=config.start_rate,
            start_burst=config.start_burst,
            window=config.limits.window,
            frame_cap=config.frame_cap,
            peer_silence=config.peer_silence,
            # each stream's flow window follows its link (smaller when it is slow)
            clock=time.monotonic,
            adaptive=config.adaptive,
            version=version,
        )
        #: encodes this connection's frames in its protocol version (v2: stream handles)
        self.codec: ServerCodec | ServerCodecV2 = (
            ServerCodecV2() if version == "v2" else ServerCodec()
        )
        self._encode = self.codec.encode
        self._zlib = False  # v2 cap "zlib": large event messages go compressed
        self.principal: Principal | None = None
        self.atts: dict[str, Attachment] = {}
        #: control frames to send (answers, errors, hb), bounded in bytes (max_outbox)
        # lists, not deques: a deque allocates a 64-slot block at once (~0.7 KB a
        # connection each); these hold a frame or two
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._answers = 0  # frames queued so far (a request that got one costs more)
        #: paces the read loop: a peer asking faster than this waits (TCP backpressure)
        self._requests = TokenBucket(config.request_rate, config.request_burst)
        self._paced = 0  # times the read loop waited for the request rate
        #: a start was just refused for load: let the loop run before the next frame
        self._yield_now = False
        self._dirty: dict[str, None] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._coalesce = config.coalesce
        self._coalescing = False  # the pump waits for tokens to pile up
        self._events_at = 0.0  # when the pump last sent events
        #: streams whose flow window is cut to a slow link: coalesce more for them
        # a dict: an empty set is 216 B, a dict 64; this and the other tables most
        # connections never write start as one shared empty dict (never written to)
        self._slow: dict[str, None] = _SHARED_EMPTY
        self._closed = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._last_send = 0.0
        #: the heartbeat's checks (one shared timer per loop: :mod:`.ticker`)
        self._hb = ticker(config.heartbeat / 2)
        self._hb_armed = False  # in the ticker's sweep
        self._send_started = 0.0
        self._pump_task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None  # an eager send that must wait
        self._draining = False
        self._ready: list[bytes] = []  # event frames taken from attachments, to send
        self._batch = False  # the client takes several frames per message ("batch" cap)
        self._tick_pending = False
        #: frames can be read and sent without a task (the store reads without waiting)
        self._nowait = getattr(self.store, "read_nowait", None) is not None
        self._task: asyncio.Task[Any] | None = None  # the one serving this connection
        self._killed = ""  # why the server gave up on the peer (send timeout, silence)
        self._kill_code: int = CloseCode.GOING_AWAY
        self._last_recv = 0.0  # when the last frame from the client arrived
        self._errors: dict[str, int] = _SHARED_EMPTY
        self._loop = asyncio.get_running_loop()
        # credentials that expire (docs/reference/protocol.md §18)
        self._hello_frame: Hello | None = None  # the hello, token removed (a refresh's base)
        self._refresh_cap = False  # the client offered "refresh" and a hook can verify
        #: the client takes ``error unavailable`` about one stream ("unavailable" cap)
        self._unavailable_cap = False
        self._notice_handle: asyncio.TimerHandle | None = None  # sends auth_expiring
        self._expiry_handle: asyncio.TimerHandle | None = None  # closes 4010
        self._refresh_task: asyncio.Task[None] | None = None  # a refresh being verified
        #: resumes whose log lookups are under way, by stream (one each: a newer one replaces it)
        self._resumes: dict[str, asyncio.Task[None]] = _SHARED_EMPTY
        #: starts and cancels being carried out (they may wait for the log): not
        #: cancelled when the connection ends (a start half made, a cancel unsent)
        self._running: set[asyncio.Task[None]] | None = None  # only while some run (216 B)
        self._starting: set[str] | None = None  # reqs of starts not answered yet (protocol §9)
        #: refreshes accepted on this connection
        self.refreshes = 0
        self._counts = hub.observer.counts  # bytes in/out: plain ints (unbroken.observe)
        self._obs = hub.observer.connect(self.id, info.client)

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Serve until the peer leaves or the server closes us."""
        self.registry.add(self)
        log.info("connect conn=%s client=%s", self.id, excerpt(self.info.client, 80))
        self._task = asyncio.current_task()
        self._last_recv = self._loop.time()
        code: int | None = None  # set when this side closes
        reason = ""
        try:
            # the read loop, here and not in a coroutine of its own: a connection
            # waiting for a message holds one frame less (~0.3 KB, issue 21)
            first = True
            t: Any = self.t
            polls = getattr(t, "polls", False) is True
            while not self._closed:
                if first:
                    try:
                        # not wait_for: on 3.11 it loses a cancel (a kill) as the hello comes
                        async with asyncio.timeout(self.config.hello_timeout):
                            data = await self.t.receive()
                    except TimeoutError:
                        raise ProtocolError(
                            "no hello within the time limit", CloseCode.AUTH_REQUIRED
                        ) from None
                elif polls:  # no coroutine of the transport held while it waits
                    data = t.receive_nowait()
                    while data is PENDING:
                        await t.arrival()
                        data = t.receive_nowait()
                else:
                    data = await t.receive()
                if data is None:
                    break
                self._counts.bytes_in += len(data)
                self._last_recv = self._loop.time()
                if isinstance(data, bytes) and not self.codec.binary:
                    raise ProtocolError("binary frames are not part of protocol v1")
                frame = self.session.receive(data)
                if first:
                    first = False
                    assert isinstance(frame, Hello)
                    await self._hello(frame)
                    continue
                answers = self._answers
                await self._dispatch(frame)
                del data, frame  # not held while the next message is awaited
                if self._yield_now:
                    # a burst of starts refused for load (a herd's 20 on one connection)
                    # is answered one per loop turn, between the streams in flight, not
                    # all of it ahead of their next tokens
                    self._yield_now = False
                    await asyncio.sleep(0)
                # a request that was answered costs a token, an ack (answered or not:
                # a stale one gets an error) little: a flood is read at the bucket's rate
                cost = 1.0 if self._answers != answers else 0.05
                wait = self._requests.take(self._loop.time(), cost)
                if wait > 0:
                    if not self._paced:
                        log.warning("request rate exceeded conn=%s; reading more slowly", self.id)
                    self._paced += 1
                    await asyncio.sleep(wait)
            if self._killed:  # given up on from inside the loop (e.g. outbox full)
                code, reason = self._kill_code, self._killed
        except asyncio.CancelledError:
            if not self._killed or self._task is None:
                raise
            self._task.uncancel()
            code, reason = self._kill_code, self._killed
        except ProtocolError as exc:
            code, reason = exc.close_code, str(exc)
            log.warning("protocol error conn=%s code=%d reason=%s", self.id, code, excerpt(reason))
        except AuthError as exc:
            code, reason = CloseCode.AUTH_FAILED, str(exc)
            log.warning("auth failed conn=%s reason=%s", self.id, excerpt(reason))
        except JWKSUnavailable as exc:  # the token may be fine: the client retries
            code, reason = CloseCode.INTERNAL, "could not verify the token now; retry"
            log.warning("auth unavailable conn=%s reason=%s", self.id, excerpt(str(exc)))
        except Exception as exc:
            code, reason = CloseCode.INTERNAL, "internal error"
            log.exception("connection failed conn=%s error=%r", self.id, exc)
        finally:
            self._closed = True
            self._wake()
            pump = self._pump_task
            if pump is not None:
                if self._close_code is None and code is not None:
                    # flush what is queued (e.g. an error frame) before the close;
                    # a pump that failed or was cancelled (send timeout) is no error here
                    await asyncio.wait({pump}, timeout=1.0)
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            self._teardown()
            if self._close_code is None and code is not None:
                self._close_code = code
                # bounded: a peer that stopped reading blocks even the close frame
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await self.t.close(code, close_reason(reason))
            if self._close_code is not None:
                shown = self._close_code
                reason = reason or self._close_reason
            else:  # the peer, the network or the WebSocket layer ended it
                peer = self.t.disconnect_code
                shown = peer if peer is not None else CloseCode.NORMAL
                reason = _PEER_CLOSE.get(shown, "peer closed")
            errors = " ".join(f"{k}={v}" for k, v in self._errors.items())
            if self._paced:
                errors += f"{' ' if errors else ''}paced={self._paced}"
            self._obs.closed(shown, reason, self._close_code is not None)
            log.info(
                "close conn=%s code=%d reason=%s%s",
                self.id,
                shown,
                excerpt(reason),
                f" errors: {errors}" if errors else "",
            )

    async def close(self, code: int, reason: str) -> None:
        """Close from the server side (e.g. 1012 on shutdown)."""
        if self._close_code is not None:
            return
        self._close_code = code
        self._close_reason = reason
        self._closed = True
        self._wake()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.t.close(code, close_reason(reason))

    def behind(self) -> float:
        """Seconds this reader is behind (:class:`~unbroken.server.admission.Reader`):
        how long a send has been blocked, or how long the oldest unacknowledged frame
        has waited on a stream with half its window or more unacknowledged (a client
        that reads acks every quarter window; a trickle's few bytes may wait for
        their ack, and do not count); 0 if none."""
        if self._closed:
            return 0.0
        worst = self._loop.time() - self._send_started if self._send_started else 0.0
        now = time.monotonic()  # the flows' clock
        for att in self.atts.values():
            flow = att.flow
            if flow.inflight_at and 2 * flow.inflight_bytes >= min(flow.window, flow.cwnd):
                worst = max(worst, now - flow.inflight_at[0])
        return worst

    def shed(self, retry_after: float, reason: str) -> None:
        """Detach this slow reader under sustained pressure: ``error overloaded``
        with ``retry_after_ms``, then close 4008 (its reason carries
        ``retry_after_ms`` too). Event frames not yet written are dropped, so the
        error follows what is already on the wire. Its runs go on into the log; the
        client resumes after ``retry_after`` (a resume sooner is refused again:
        :meth:`~unbroken.server.admission.Admission.shed_wait`)."""
        if self._closed:
            return
        ms = max(1, int(retry_after * 1000))
        log.warning(
            "shed slow reader conn=%s behind=%.1fs streams=%d retry_after_ms=%d reason=%s; "
            "its runs go on",
            self.id,
            self.behind(),
            len(self.atts),
            ms,
            reason,
        )
        self.hub.gate.remember_shed(list(self.atts), time.monotonic() + retry_after)
        self._overloaded(
            ms, f"server overloaded ({reason}); slow reader detached: resume after retry_after_ms"
        )

    def _overloaded(self, ms: int, message: str) -> None:
        """End the connection for load: no more events (those taken but not yet
        written are dropped: the log keeps them), a connection-level ``error
        overloaded`` with ``retry_after_ms``, then close 4008 with it in the reason."""
        self._closed = True
        self._ready.clear()
        self._killed = f"overloaded: slow reader detached; retry_after_ms={ms}"
        self._kill_code = CloseCode.OVERLOADED
        self._error(ErrorCode.OVERLOADED, message, retry_after_ms=ms)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # run() flushes the error (bounded) and closes 4008

    def _teardown(self) -> None:
        self.registry.discard(self)
        self._hb_armed = False
        self._hb.discard(self)
        self._disarm_expiry()
        task = self._refresh_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for task in self._resumes.values():
            task.cancel()
        self._resumes = _SHARED_EMPTY
        for att in self.atts.values():
            if att.unsubscribe:
                att.unsubscribe()
            self.hub.detached(att.stream)
            self._obs.detach(att.stream, "disconnect", att.sent)
        self.atts.clear()
        self.session.close()

    # ------------------------------------------------------------ input
    async def _hello(self, hello: Hello) -> None:
        anon: str | None = None
        principal: Principal
        if self.info.principal is not None:
            principal = self.info.principal
        elif self.authenticate is not None:
            principal = await call_hook(self.authenticate, hello, self.info)
            if not isinstance(principal, Principal):  # fail closed, and say why
                log.error(
                    "authenticate hook returned %s, not a Principal: return Principal(id) to "
                    "accept, raise AuthError(reason) to refuse; connection refused conn=%s",
                    excerpt(repr(principal)),
                    self.id,
                )
                raise AuthError(
                    "credentials refused (the server's authenticate hook gave no principal)"
                )
        elif self.config.allow_anonymous:
            principal, anon = anonymous_principal(hello.anon)
        else:  # pragma: no cover - asgi() and router() refuse this configuration
            raise AuthError("no authentication configured")
        expires = principal.expires
        if expires is not None and expires <= time.time():
            raise AuthError("credentials already expired; get a new token")
        self.principal = principal
        self.hub.ensure_started()
        self.hub.gate.readers = self.registry  # what sustained pressure sheds from
        limits: Limits = self.config.limits
        self._batch = CAP_BATCH in hello.caps
        self._refresh_cap = CAP_REFRESH in hello.caps and self.authenticate is not None
        caps = [CAP_BATCH] if self._batch else []
        if self._refresh_cap:
            caps.append(CAP_REFRESH)
        if CAP_STREAMS in hello.caps:
            caps.append(CAP_STREAMS)
        if CAP_UNAVAILABLE in hello.caps:
            caps.append(CAP_UNAVAILABLE)
            self._unavailable_cap = True
        if self.codec.binary and CAP_ZLIB in hello.caps:  # v2: large messages compressed
            caps.append(CAP_ZLIB)
            self._zlib = True
        if self.authenticate is not None:  # a refresh is verified as this hello, new token
            self._hello_frame = msgspec.structs.replace(hello, token=None)
        self._queue(
            self._encode(
                Welcome(
                    session=self.id,
                    heartbeat_ms=int(self.config.heartbeat * 1000),
                    epoch=self.store.epoch,
                    limits=limits,
                    caps=caps,
                    anon=anon,
                    auth_exp=None if expires is None else unix_time(expires),
                )
            )
        )
        self._arm_expiry()
        self._schedule_hb()
        # what the connection knew before hello is no longer needed: drop it
        self.info = ConnectInfo(client=self.info.client)
        # nor the hello itself (its caps and token, kept by the session that read it)
        self.session.hello = None
        log.info("hello conn=%s principal=%s", self.id, excerpt(self.principal.id, 80))
        self._obs.hello(self.principal.id, caps)

    async def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, Ack):
            # the session decides; a bad ack gets an answer, never a close: the
            # other streams on the connection are not to be taken down by it
            result = self.session.take_ack(frame.stream, frame.seq)
            if result is AckResult.APPLIED:
                flow = self.session.flows[frame.stream]
                if flow.cwnd < flow.window:
                    if self._slow is _SHARED_EMPTY:
                        self._slow = {}
                    self._slow[frame.stream] = None
                else:
                    self._slow.pop(frame.stream, None)
                self._mark(frame.stream)
            elif result is AckResult.FINISHED:  # the session let the stream go
                self._detach(frame.stream)
            elif result is AckResult.UNKNOWN:
                self._error(
                    ErrorCode.BAD_ACK,
                    "ack for a stream that was not started or resumed on this connection",
                    stream=frame.stream,
                )
            elif result is AckResult.BEYOND:
                sent = self.session.flows[frame.stream].sent
                self._error(
                    ErrorCode.BAD_ACK,
                    f"ack {frame.seq} is beyond the last event sent ({sent})",
                    stream=frame.stream,
                )
            # RELEASED: its end was sent, or retention dropped it, while this ack
            # was on its way: nothing left to do
        elif isinstance(frame, Start):
            starting = self._starting
            if starting is None:
                starting = self._starting = set()
            if frame.req in starting:  # one answer per start on a connection (protocol §9)
                log.warning("start ignored conn=%s req=%s: one is unanswered", self.id, frame.req)
            else:
                starting.add(frame.req)
                self._later(self._start(frame), "start", frame.req)
        elif isinstance(frame, Resume):
            self._resume_later(frame)
        elif isinstance(frame, Cancel):
            assert self.principal is not None
            pending = self._resumes.pop(frame.stream, None)
            if pending is not None:  # the resume is withdrawn with it: never answered
                pending.cancel()
            self._later(self._cancel(frame), "cancel", frame.stream)
        elif isinstance(frame, Ping):
            self._queue(self._encode(Pong(frame.n)))
        elif isinstance(frame, List):
            await self._list_streams(frame.n)
        elif isinstance(frame, Refresh):
            if self.authenticate is None or self._hello_frame is None:
                self._error(
                    ErrorCode.UNSUPPORTED,
                    "in-band token refresh needs an authenticate hook on the server",
                )
                return
            # a refresh is answered later (by its task): count it as answered now, so
            # a flood of them is paced like any other request (a verify costs ~100 µs)
            self._answers += 1
            old = self._refresh_task
            if old is not None and not old.done():
                old.cancel()  # a newer token replaces it: only the last is answered
            self._refresh_task = self._loop.create_task(
                self._refresh(frame.token), name=f"unbroken-refresh-{self.id}"
            )

    # ------------------------------------------------------------ credentials
    def _arm_expiry(self) -> None:
        """Schedule, from now, the ``auth_expiring`` notice (a client with the
        ``refresh`` cap: at 80 % of the time left, or 30 s before the expiry when
        that is later) and the close with 4010 at the expiry."""
        self._disarm_expiry()
        assert self.principal is not None
        expires = self.principal.expires
        if expires is None:
            return
        left = max(0.0, expires - time.time())
        loop = self._loop
        self._expiry_handle = loop.call_later(left, self._expired)
        if self._refresh_cap:
            self._notice_handle = loop.call_later(notice_delay(left), self._auth_expiring)

    def _disarm_expiry(self) -> None:
        for handle in (self._notice_handle, self._expiry_handle):
            if handle is not None:
                handle.cancel()
        self._notice_handle = self._expiry_handle = None

    def _auth_expiring(self) -> None:
        self._notice_handle = None
        if self._closed or self.principal is None or self.principal.expires is None:
            return
        in_ms = max(0, int((self.principal.expires - time.time()) * 1000))
        log.info("auth expiring conn=%s in_ms=%d", self.id, in_ms)
        self._queue(self._encode(AuthExpiring(in_ms=in_ms)))

    def _expired(self) -> None:
        self._expiry_handle = None
        if self._closed:
            return
        notice = self._notice_handle
        if notice is not None:
            # its timer is due too but has not run (a loop that stalled past both
            # runs them in time order, yet two timers due at the same instant in any
            # order): the notice goes first, so a refresh-capable client always
            # hears it before the 4010
            notice.cancel()
            self._auth_expiring()
        log.info(
            "token expired conn=%s principal=%s refreshes=%d",
            self.id,
            excerpt(self.principal.id if self.principal else "-", 80),
            self.refreshes,
        )
        # flush=True: the peer is fine, only its credentials ended: what is queued
        # (the auth_expiring notice, if its timer ran in this same loop turn after a
        # stall) goes out before the close, not cancelled with the sender
        self._kill(CloseCode.TOKEN_EXPIRED, "token expired; reconnect with a new token", flush=True)

    async def _refresh(self, token: str) -> None:
        """Verify a ``refresh`` token with the ``authenticate`` hook (a task: the
        connection's reader and its streams go on meanwhile) and answer it."""
        assert self.authenticate is not None and self._hello_frame is not None
        current = self.principal
        assert current is not None
        hello = msgspec.structs.replace(self._hello_frame, token=token)
        try:
            principal = await call_hook(
                self.authenticate, hello, ConnectInfo(client=self.info.client)
            )
        except AuthError as exc:
            self._error(ErrorCode.AUTH_FAILED, str(exc))
            return
        except JWKSUnavailable as exc:
            log.warning("refresh unverifiable conn=%s reason=%s", self.id, excerpt(str(exc)))
            self._error(ErrorCode.AUTH_FAILED, "could not verify the token now; retry")
            return
        except Exception as exc:
            log.exception("refresh hook failed conn=%s error=%r", self.id, exc)
            self._error(ErrorCode.AUTH_FAILED, "the token could not be verified")
            return
        if self._closed:
            return
        if not isinstance(principal, Principal):  # the hook's bug: refused, as at hello
            log.error(
                "authenticate hook returned %s, not a Principal, for a refresh conn=%s",
                excerpt(repr(principal)),
                self.id,
            )
            self._error(ErrorCode.AUTH_FAILED, "the token could not be verified")
            return
        if principal.id != current.id or principal.scope != current.scope:
            log.warning(
                "refresh refused conn=%s principal=%s token names another principal",
                self.id,
                excerpt(current.id, 80),
            )
            self._kill(CloseCode.FORBIDDEN, "refresh token names another principal")
            return
        expires = principal.expires
        if expires is not None and expires <= time.time():
            self._error(ErrorCode.AUTH_FAILED, "token already expired; get a new token")
            return
        self.principal = principal
        self.refreshes += 1
        self._queue(self._encode(Refreshed(exp=None if expires is None else unix_time(expires))))
        self._arm_expiry()
        log.info(
            "refreshed conn=%s principal=%s exp=%s",
            self.id,
            excerpt(principal.id, 80),
            "-" if expires is None else f"{expires:.3f}",
        )

    async def _start(self, frame: Start) -> None:
        told: list[bool] = []  # answered unavailable already (the log was slow)
        try:
            await self._start_answer(frame, told)
        finally:
            if not told:  # else done when told
                self._start_done(frame.req)

    def _start_done(self, req: str) -> None:
        """The start of ``req`` is answered: a next one is carried out again."""
        starting = self._starting
        if starting is not None:
            starting.discard(req)
            if not starting:
                self._starting = None

    async def _start_answer(self, frame: Start, told: list[bool]) -> None:
        assert self.principal is not None
        if not self.hub.accepting:
            self._error(
                ErrorCode.SHUTTING_DOWN,
                "server is shutting down",
                req=frame.req,
                retry_after_ms=1000,
            )
            return
        wait = self.session.admit_start(self._loop.time())
        if wait > 0:
            if ErrorCode.RATE_LIMITED not in self._errors:  # then counted on the close line
                log.warning("start rate limited conn=%s req=%s", self.id, frame.req)
            self.hub.observer.refused("rate_limited", self.info.client, self.id)
            self._error(
                ErrorCode.RATE_LIMITED,
                "too many starts on this connection",
                req=frame.req,
                retry_after_ms=max(1, int(wait * 1000)),
            )
            return
        bound = store_wait(self.config.heartbeat)

        def late() -> None:
            # bounded as a resume's lookups are: past it the client is told to start
            # again (same req) while this create goes on (its run starts once)
            if not self._closed:
                told.append(True)
                self._start_done(frame.req)  # the client sends it again (same req)
                slow = StoreUnavailable(f"the log did not answer within {bound:.1f}s")
                self._unreachable(None, slow, req=frame.req)

        try:
            created = await self.hub.start(
                self.principal, frame.req, frame.agent, frame.input, late=(bound, late)
            )
        except StoreUnavailable as exc:  # its log unreachable (a cluster master down)
            if not self._closed and not told:
                self._unreachable(None, exc, req=frame.req)
            else:
                log.warning("start failed late conn=%s req=%s error=%r", self.id, frame.req, exc)
            return
        except UnknownAgent as exc:
            message = str(exc)
            if self.config.expose_agent_names:  # off by default: it tells a prober what exists
                message += f"; known: {', '.join(sorted(exc.known))}"
            else:
                message += " on this server: check the name given to @app.agent(...)"
            self._error(ErrorCode.UNKNOWN_AGENT, message, req=frame.req)
            return
        except (LogFull, Overloaded) as exc:
            if told:  # answered unavailable already: the client sends it again
                log.warning("start failed late conn=%s req=%s error=%r", self.id, frame.req, exc)
                return
            # new work is refused first: in-flight streams are never shed for it
            if ErrorCode.OVERLOADED not in self._errors:  # then counted on the close line
                log.warning("start refused conn=%s req=%s reason=%s", self.id, frame.req, exc)
            self.hub.observer.refused("overloaded", self.info.client, self.id)
            self._yield_now = True
            self._error(
                ErrorCode.OVERLOADED,
                str(exc),
                req=frame.req,
                retry_after_ms=int(exc.retry_after * 1000),
            )
            return
        if self._closed or told:  # the connection ended, or was answered: abandoned
            if created.created:  # as if attached and dropped (its abandon timer runs)
                self.hub.attached(created.stream)
                self.hub.detached(created.stream)
            return
        if created.stream in self.atts:  # started (or resumed) on it already: not twice
            log.warning("start ignored conn=%s req=%s: its stream is attached", self.id, frame.req)
            return
        self._queue(self._encode(Started(frame.req, created.stream, created.epoch)))
        log.info(
            "start conn=%s req=%s stream=%s new=%s",
            self.id,
            frame.req,
            created.stream,
            created.created,
        )
        self._attach(created.stream, 0)
        self._obs.attach(created.stream, "start", req=frame.req, new=created.created)

    def _later(self, work: Coroutine[Any, Any, None], what: str, key: str) -> None:
        """Carry a start or a cancel out in a task of its own: it may wait for the log
        (a Redis paused; the store bounds that wait) while this connection goes on
        reading. Such a task is not cancelled when the connection ends: a run half
        created, or a cancel the client sent, is finished (nothing is answered then)."""
        self._answers += 1  # answered later: paced like any other request
        task = self._loop.create_task(self._later_task(work, what, key), name=f"unbroken-{what}")
        running = self._running
        if running is None:
            running = self._running = set()
        running.add(task)
        task.add_done_callback(self._later_done)
        if not self._hb_armed:  # hb while it waits: the client's silence limit holds
            self._schedule_hb()

    def _later_done(self, task: asyncio.Task[None]) -> None:
        running = self._running
        if running is not None:
            running.discard(task)
            if not running:  # the set goes with its last task (216 B a connection)
                self._running = None

    async def _later_task(self, work: Coroutine[Any, Any, None], what: str, key: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, or the log down past its outage_timeout
            log.exception("%s failed conn=%s key=%s error=%r", what, self.id, key, exc)
            if not self._closed:
                self._kill(CloseCode.INTERNAL, "internal error")

    async def _cancel(self, frame: Cancel) -> None:
        assert self.principal is not None
        try:
            stopped = await self.hub.cancel(self.principal, frame.stream)
            log.info("cancel conn=%s stream=%s stopped=%s", self.id, frame.stream, stopped)
        except Forbidden as exc:
            log.warning("cancel refused conn=%s stream=%s", self.id, frame.stream)
            if not self._closed:
                self._error(ErrorCode.FORBIDDEN, str(exc), stream=frame.stream)

    def _resume_later(self, frame: Resume) -> None:
        """Answer ``frame``. On a log that reads without waiting (the memory store) its
        lookups end at once and it is answered here, in order, with no task: behind a
        pipelined ``hello`` the ``resumed`` and the first events are sent in the same
        loop callback as the ``welcome``, not one loop turn (behind every other
        connection's and run's work) later. Else (or when such a lookup waits after
        all) the rest is answered from a task of its own: its log lookups may wait (a
        Redis paused) while this connection goes on reading (pings, acks, other
        requests). A resume of a stream whose previous resume is still looking up
        replaces it (only the newer is answered; each is a complete request); a
        ``cancel`` of the stream withdraws it; the connection's end cancels them all."""
        # counted as answered now, so a flood of them is paced like any other request
        self._answers += 1
        old = self._resumes.pop(frame.stream, None)
        if old is not None:
            old.cancel()
            log.info("resume replaced conn=%s stream=%s", self.id, frame.stream)
        rest: Awaitable[_Found] | None = None
        lookup: Coroutine[Any, Any, _Found] | None = None
        if self._nowait:
            # (only there: a store's lookup that entered its own timeout before it
            # waited would tie that timeout to this connection's reading task)
            lookup = self._lookup(frame)
            try:
                done, value = eager.run_now(lookup)
            except Exception as exc:
                self._resume_failed(frame, exc)
                return
            if done:
                self._answer_resume(frame, *value)
                return
            rest = value
        if self._resumes is _SHARED_EMPTY:
            self._resumes = {}
        task = self._resumes[frame.stream] = self._loop.create_task(
            self._resume_task(frame, rest), name=f"unbroken-resume-{self.id}"
        )
        if lookup is not None:  # a task cancelled before its first step: close the lookup
            task.add_done_callback(lambda _task: lookup.close())
        if not self._hb_armed:  # hb while it waits: the client's silence limit holds
            self._schedule_hb()

    async def _resume_task(self, frame: Resume, rest: Awaitable[_Found] | None) -> None:
        try:
            # the lookups are bounded: a log that does not answer (a Redis paused, or
            # restarting: the store would wait out its outage_timeout) is unavailable
            # for now; this connection's frames are read and its pings answered meanwhile
            wait = store_wait(self.config.heartbeat)
            try:
                async with asyncio.timeout(wait):
                    found = await (self._lookup(frame) if rest is None else rest)
            except TimeoutError:
                found = None
                self._unreachable(
                    frame.stream, StoreUnavailable(f"the log did not answer within {wait:.1f}s")
                )
            if found is not None:
                self._answer_resume(frame, *found)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._resume_failed(frame, exc)
        finally:
            task = asyncio.current_task()
            if self._resumes.get(frame.stream) is task:
                del self._resumes[frame.stream]

    def _resume_failed(self, frame: Resume, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailable):  # this stream's log only (a cluster master down)
            self._unreachable(frame.stream, exc)
            return
        # a bug: this connection is not to be trusted further
        log.exception("resume failed conn=%s stream=%s error=%r", self.id, frame.stream, exc)
        if not self._closed:
            self._kill(CloseCode.INTERNAL, "internal error")

    async def _lookup(self, frame: Resume) -> _Found:
        """What the log knows of ``frame``'s stream: its info (or its tombstone's), and
        the chain value at ``frame.after`` when the stream is the principal's."""
        assert self.principal is not None
        meta = await self.store.meta(frame.stream)
        if meta is None:
            owner = await self.store.tombstone(frame.stream)
            if owner is None:
                return None, None
            return StreamInfo(frame.stream, owner, "expired", 0, expired=True), None
        info = StreamInfo(frame.stream, meta.owner, meta.status, meta.head)
        if meta.owner == self.principal.id and frame.after <= meta.head:
            return info, await self.store.digest_at(frame.stream, frame.after)
        return info, None

    def _answer_resume(self, frame: Resume, info: StreamInfo | None, digest: bytes | None) -> None:
        assert self.principal is not None
        if self._closed:  # the connection ended during the lookups: nothing to answer
            return
        answer = decide_resume(
            frame,
            principal=self.principal.id,
            store_epoch=self.store.epoch,
            info=info,
            digest_at=lambda _seq: digest,
            anonymous=self.principal.id == "anonymous" and self.authenticate is None,
        )
        if isinstance(answer, Resumed) and (wait := self.hub.gate.shed_wait(frame.stream)) > 0:
            # its reader was shed and comes back before its retry_after_ms (it never
            # read the error: its link was declared dead first): the same answer again.
            # (Asked only of a resume that would be granted: anyone else gets the usual
            # refusal and learns nothing of the stream.)
            ms = max(1, int(wait * 1000))
            log.warning(
                "resume too soon after a shed conn=%s stream=%s retry_after_ms=%d",
                self.id,
                frame.stream,
                ms,
            )
            self._overloaded(
                ms, "server overloaded; this stream's reader was shed: resume after retry_after_ms"
            )
            return
        self._queue(self._encode(answer))
        if isinstance(answer, Resumed):
            log.info(
                "resume conn=%s stream=%s after=%d head=%d",
                self.id,
                frame.stream,
                frame.after,
                answer.head,
            )
            self._attach(frame.stream, frame.after)
            self._obs.attach(frame.stream, "resume", frame.after, head=answer.head)
        else:
            self._obs.resume_refused(frame.stream, answer.reason, frame.after)
            log.warning(
                "resume refused conn=%s stream=%s after=%d reason=%s",
                self.id,
                frame.stream,
                frame.after,
                answer.reason,
            )

    # ------------------------------------------------------------ attachments
    def _attach(self, stream: str, after: int) -> None:
        old = self.atts.pop(stream, None)
        if old is not None:
            if old.unsubscribe:
                old.unsubscribe()
            self.hub.detached(stream)
            self._obs.detach(stream, "replaced", old.sent)
        self._slow.pop(stream, None)  # a new cursor starts with the whole window
        att = Attachment(
            self.store, stream, self.session.attach(stream, after), self._counts, self.codec
        )
        att.head_hint = 1 << 62  # unknown: do not hold the first frame back
        self.atts[stream] = att
        live = getattr(self.store, "subscribe_live", None)
        if live is not None:  # the memory log hands a paced token to _push
            att.unsubscribe = live(stream, self._on_change, self._push)
        else:
            att.unsubscribe = self.store.subscribe(stream, self._on_change)
        self.hub.attached(stream)
        if not self._hb_armed:
            self._schedule_hb()
        self._mark(stream)

    def _detach(self, stream: str, release: bool = False) -> None:
        """Stop pumping ``stream``. With ``release`` its acks stay legal for a while
        (the end was sent but not acked yet, or retention dropped it)."""
        att = self.atts.pop(stream, None)
        self._slow.pop(stream, None)
        if att is None:
            return
        self._obs.detach(stream, "ended", att.sent)  # no-op when a cause was given first
        self.codec.detached(stream)
        if att.unsubscribe:
            att.unsubscribe()
        if release:
            self.session.release(stream)
        else:
            self.session.detach(stream)
        self.hub.detached(stream)

    def _on_change(self, stream: str, head: int) -> None:
        att = self.atts.get(stream)
        if att is None:
            return
        if head < 0:  # retention dropped the stream, or the log lost events, under this reader
            diverged = head == DIVERGED
            log.warning(
                "stream %s while attached conn=%s stream=%s seq=%d",
                "diverged" if diverged else "dropped",
                self.id,
                stream,
                att.sent,
            )
            # the session keeps the stream: acks already on their way stay legal
            self._obs.detach(stream, "diverged" if diverged else "expired", att.sent)
            self._detach(stream, release=True)
            if diverged:
                gone = Gone(stream, "diverged", "the log lost events this client may have read")
            else:
                gone = Gone(stream, "expired", "the stream was dropped by retention")
            self._queue(self._encode(gone))
        else:
            att.head_hint = head
            if head > att.flow.sent:  # _mark, inlined: every append of a paced stream
                if (
                    self._pump_task is None
                    and self._nowait
                    and not self._dirty
                    and not self._outbox
                    and not self._ready
                    and not self._draining
                    and not self._closed
                    and (not self._batch or len(self.atts) == 1)
                ):
                    # idle, and this stream is the only one with news: its frame is
                    # built and written here, as _drain_now would, without its rounds
                    self._send_live(att)
                    return
                self._dirty[stream] = None
                if not self._coalescing:
                    self._wake()

    def _send_live(self, att: Attachment) -> None:
        """Send what ``att``'s log just gained, from the append's notification, on an
        idle connection (nothing queued, no pump, no other stream dirty): the frame
        :meth:`_drain_now` would send first, built and written in one step (a paced
        stream's every token). Anything else (a coalescing interval, a backlog of
        several frames, a send that must wait) goes the usual way, in the same order."""
        stream = att.stream
        try:
            now = self._loop.time()
            coalesce = self._coalesce
            if coalesce or self._slow:
                if self._slow:
                    coalesce = max(coalesce, SLOW_COALESCE)
                gap = self._events_at + coalesce - now
                if gap > 0 and att.head_hint - att.flow.sent < 64:  # a trickle: let it pile up
                    self._mark(stream)
                    return
            flow = att.flow
            fresh = not flow.sent_bytes
            frame = att.next_frame_nowait()
            if frame is None:
                return  # the window is full: an ack marks the stream again
            if flow.ended:
                self._detach(stream, release=True)
            elif flow.sent < att.head_hint:  # more than one read: a backlog (rare)
                if fresh:  # a first frame goes alone (_take_frames): the rest after it
                    self._dirty[stream] = None
                else:
                    self._send_backlog(att, frame)
                    return
            self._send_events(frame, now)
        except Exception as exc:
            self._send_failed(exc)

    def _send_events(self, frame: bytes, now: float) -> None:
        """Send one stream's ``events`` frame at once, on an idle connection (as the
        message :meth:`_stage_frames` and :meth:`_next_frame` would make of it), then
        what became dirty meanwhile. (Inlined for text frames in :meth:`_push`: change
        both.)"""
        if self.codec.binary:
            if self._batch:
                frame = self.codec.batch([frame])
            if self._zlib and len(frame) >= ZLIB_MIN:
                frame = self.codec.compress(frame)
        # _send_nowait, inlined
        if not self._hb_armed:
            self._schedule_hb()
        self._counts.bytes_out += len(frame)
        send = self._send_sync
        if send is not None and send(frame):
            self._last_send = self._events_at = now
        elif not self._send_eager(frame):
            return  # the pump waits for the send, then sends the rest
        if self._dirty:
            self._drain_now()

    def _push(
        self,
        stream: str,
        seq: int,
        kind: int,
        part: str,
        enc: bytes,
        digest: bytes,
    ) -> bool:
        """The memory log's push of one chunk just appended (a paced token: event
        ``seq``, its stored item ``enc``; see :data:`~unbroken.store.base.Push`): on
        an idle connection (as
        :meth:`_on_change` decides it) whose cursor is just before it, with the
        window open and no coalescing interval to wait out, its frame is built from
        those bytes and written now, the frame :meth:`_send_live` would have read
        from the log. ``False`` (nothing done): the log tells :meth:`_on_change`."""
        att = self.atts.get(stream)
        if att is None:
            return False
        flow = att.flow
        if (
            flow.sent != seq - 1
            or self._pump_task is not None
            or self._dirty
            or self._outbox
            or self._ready
            or self._draining
            or self._closed
            or self._slow
            or (self._batch and len(self.atts) != 1)
        ):
            return False
        now = self._loop.time()
        # (flow.budget() <= 0, without the call: a frame may go unless bytes are in
        # flight and they fill the window in force)
        if self._events_at + self._coalesce > now or flow.cwnd <= flow.inflight_bytes != 0:
            return False  # a trickle piles up, or the window is full: the usual way
        att.head_hint = seq
        try:
            sid = att.stream_id
            if sid is None:  # v2: the codec's frame (binary)
                self._send_events(att.chunk_frame(seq, kind, part, enc, digest), now)
                return True
            # v1's Attachment.chunk_frame, inlined (a call a paced token: change both)
            head = _OPENED[kind].get(part)
            if head is None:
                head = _open_chunk(kind, part)
            frame = _CHUNK_FRAME % (sid, seq, head, enc, hexlify(digest))
            size = len(frame)
            counts = self._counts  # (the attachment's)
            counts.events_out += 1
            flow.sent_frame(seq, size, False)  # (a chunk: never the end)
            # _send_events of a text frame, inlined (a call a paced token)
            if not self._hb_armed:
                self._schedule_hb()
            counts.bytes_out += size
            send = self._send_sync
            if send is not None and send(frame):
                self._last_send = self._events_at = now
            elif not self._send_eager(frame):
                return True  # the pump waits for the send, then sends the rest
            if self._dirty:
                self._drain_now()
        except Exception as exc:
            self._send_failed(exc)
        return True

    def _send_failed(self, exc: Exception) -> None:
        """A send raised: the peer is gone (the connection ends), or, anything else
        (a bug: a frame that could not be built), it is logged with its traceback and
        the connection closed 1011 (its client reconnects and resumes)."""
        if self._closed or isinstance(exc, (OSError, ConnectionClosed)):
            log.info("send failed conn=%s error=%r", self.id, exc)
            self._closed = True
            return
        log.exception("send failed conn=%s error=%r", self.id, exc)
        self._kill(CloseCode.INTERNAL, "internal error")

    def _send_backlog(self, att: Attachment, frame: bytes) -> None:
        """:meth:`_send_live` when one read did not reach the head: up to
        ``frame_cap`` bytes of frames in one go, as :meth:`_take_frames` takes them."""
        stream = att.stream
        frames = [frame]
        cap = self.config.frame_cap
        size = _read_into(att, frames, len(frame), cap)
        if att.ended:
            self._detach(stream, release=True)
        elif size >= cap:
            self._dirty[stream] = None
        if len(frames) == 1 and not self.codec.binary:
            self._ready.append(frames[0])
        else:
            self._stage_frames(frames)
        self._drain_now()

    def _mark(self, stream: str) -> None:
        self._dirty[stream] = None
        if not self._coalescing:
            self._wake()

    # ------------------------------------------------------------ output
    def _queue(self, data: bytes) -> None:
        """Queue a control frame. A peer that lets its answers pile up beyond
        ``max_outbox`` bytes (it asks and does not read) is dropped."""
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        self._answers += 1
        if self._outbox_bytes > self.config.max_outbox and not self._killed:
            log.warning(
                "outbox full conn=%s bytes=%d; the client does not read its answers: "
                "dropping the connection",
                self.id,
                self._outbox_bytes,
            )
            self._kill(CloseCode.OVERLOADED, "too many answers pending: read them")
            return
        self._wake()

    def _pop_control(self) -> bytes:
        data = self._outbox.pop(0)
        self._outbox_bytes -= len(data)
        return data

    async def _list_streams(self, n: int) -> None:
        """Answer ``list``: the principal's runs that have not ended: every node's when
        the store lists them itself (RedisStore), else this node's."""
        principal = self.principal
        assert principal is not None
        store = self.store
        items: list[LiveStream] | None = None
        if isinstance(store, LiveIndex):
            try:
                rows = await store.live_streams(principal.id, principal.scope)
                epoch = store.epoch  # (after the call: it may have adopted a new one)
                items = [
                    LiveStream(r.stream, r.agent, epoch, r.head, r.digest.hex())
                    for r in rows[:MAX_LIVE_STREAMS]
                ]
            except Exception as exc:  # the store is unreachable: this node's runs
                log.warning("list conn=%s: the store's list failed, this node's: %r", self.id, exc)
        if items is None:
            epoch = store.epoch
            items = [
                LiveStream(r.stream, r.agent, epoch, *_hex_digest(r.producer.logged))
                for r in self.hub.live(principal)[:MAX_LIVE_STREAMS]
            ]
        log.debug("list conn=%s streams=%d", self.id, len(items))
        self._queue(self._encode(Streams(n=n, items=items)))

    def _error(self, code: str, message: str, **kw: Any) -> None:
        """Queue an ``error`` frame and log it (repeats of a code at debug level;
        the close line counts them)."""
        n = self._errors.get(code, 0) + 1
        if self._errors is _SHARED_EMPTY:
            self._errors = {}
        self._errors[code] = n
        log.log(
            logging.WARNING if n == 1 else logging.DEBUG,
            "error conn=%s code=%s stream=%s req=%s message=%s",
            self.id,
            code,
            kw.get("stream") or "-",
            kw.get("req") or "-",
            excerpt(message),
        )
        self._queue(self._encode(Error(code=code, message=message[:4096], **kw)))

    def _wake(self) -> None:
        """Send what is ready: at once when nothing needs waiting for, else by the
        pump (woken, or started: an idle connection holds no pump task). A
        connection that batches and carries several streams sends once per loop
        tick, so the streams that advanced in the tick share one message."""
        w = self._waiter
        if w is not None:
            if not w.done():
                w.set_result(None)
        elif self._pump_task is None and (self._outbox or self._dirty):
            if not self._nowait:
                self._start_pump()
            elif self._batch and len(self.atts) > 1:
                if not self._tick_pending:
                    self._tick_pending = True
                    self._loop.call_soon(self._tick)
            elif not self._draining:
                self._drain_now()

    def _tick(self) -> None:
        self._tick_pending = False
        if self._pump_task is None and not self._draining:
            self._drain_now()

    def _start_pump(self) -> None:
        if self._pump_task is None:
            self._pump_task = self._loop.create_task(self._pump(), name=f"unbroken-pump-{self.id}")

    def _next_frame(self) -> bytes | None:
        """The next frame to send, by the one ordering rule of both senders
        (:meth:`_drain_now` and :meth:`_pump`); ``None`` when nothing can go now
        without waiting (for a coalescing interval, or a log read with I/O).

        Frames already taken from their streams go first: a control frame queued
        after them (a ``resumed`` that re-attaches one) must follow them. Then
        control frames (answers, errors, ``hb``), even once closing. Then, while
        open, the events ready now on the dirty streams of a log that reads
        without waiting, unless a trickle should pile up first."""
        while True:
            if self._ready:
                frame = self._ready.pop(0)
                if self._zlib and len(frame) >= ZLIB_MIN:
                    return self.codec.compress(frame)
                return frame
            if self._outbox:
                return self._pop_control()
            if self._closed or not self._dirty or not self._nowait:
                return None
            if self._coalesce_delay() > 0:
                return None
            frames = self._take_frames()
            if len(frames) == 1 and not self.codec.binary:
                return frames[0]  # one v1 frame is its own message: no staging
            self._stage_frames(frames)

    def _drain_now(self) -> None:
        """The pump's work, done synchronously (eager sends), until something must be
        waited for: then the pump takes over from there."""
        self._draining = True
        sends = 0
        try:
            while True:
                if sends >= _FAIR_SENDS:
                    # fair to the other connections: go on in a later loop tick
                    if not self._tick_pending:
                        self._tick_pending = True
                        self._loop.call_soon(self._tick)
                    return
                frame = self._next_frame()
                if frame is None:
                    if self._dirty and not self._closed:
                        self._start_pump()  # a coalescing interval to wait out
                    return
                sends += 1
                if not self._send_nowait(frame):
                    return
        except Exception as exc:
            self._send_failed(exc)
        finally:
            self._draining = False

    def _stage_frames(self, frames: list[bytes]) -> None:
        """Move ``frames`` (:meth:`_take_frames`: the frames ready now on the dirty
        streams of a log that reads without waiting) to the send queue: one message
        with the ``batch`` cap, else one each."""
        if self._batch and frames and (len(frames) > 1 or self.codec.binary):
            self._ready.append(self.codec.batch(frames))
        else:  # (v1's batch of one frame is that frame: no call)
            self._ready.extend(frames)

    def _take_frames(self) -> list[bytes]:
        """The frames ready now on the dirty streams (a log that reads without
        waiting), about ``frame_cap`` bytes at most (at least one frame). They count
        as sent; a stream with more left stays dirty, and one whose ``end`` is taken
        is released.

        The first frame of an attachment (after ``started`` or ``resumed``) never
        waits behind another stream's catch-up: while dirty streams have sent
        nothing yet, their first frames (small: the flow's ramp) are taken alone,
        one message for all of them with the ``batch`` cap. A client that
        reconnected mid-answer gets its first missing events without waiting for
        the catch-up that follows to be read, encoded, sent and received."""
        cap = self.config.frame_cap
        frames: list[bytes] = []
        size = 0
        dirty, self._dirty = self._dirty, {}
        atts = self.atts
        fresh: list[str] | None = None  # (a loop, not a comprehension: one stream, usually)
        for s in dirty:
            a = atts.get(s)
            if a is not None and not a.flow.sent_bytes:
                if fresh is None:
                    fresh = [s]
                else:
                    fresh.append(s)
        if fresh is not None:
            for stream in dirty:  # the others wait for the next message
                self._dirty[stream] = None
            for stream in fresh:
                if size >= cap:
                    break
                new = atts[stream]
                frame = new.next_frame_nowait()
                if frame is None:
                    del self._dirty[stream]  # nothing to read yet
                    continue
                frames.append(frame)
                size += len(frame)
                if new.ended:
                    del self._dirty[stream]
                    self._detach(stream, release=True)
                elif new.flow.sent >= new.head_hint:
                    del self._dirty[stream]  # it reached the head: the next append marks it
            return frames
        streams = iter(dirty)
        for stream in streams:
            att = atts.get(stream)
            if att is None:
                continue
            size = _read_into(att, frames, size, cap)
            if att.ended:
                self._detach(stream, release=True)
            elif size >= cap:  # maybe more: back in the queue, behind the others
                for rest in streams:
                    self._dirty[rest] = None
                self._dirty[stream] = None
                break
        return frames

    def _send_nowait(self, data: bytes) -> bool:
        """Send ``data`` eagerly; ``False`` if the send has to wait (the pump, started
        here, waits for it before anything else is sent)."""
        if not self._hb_armed and not self._closed:
            self._schedule_hb()
        self._counts.bytes_out += len(data)
        now_send = self._send_sync
        # the transport's synchronous send (no coroutine) when it has one and it
        # could send at once; else its send, run eagerly
        if now_send is not None and now_send(data):
            self._last_send = self._events_at = self._loop.time()
            return True
        return self._send_eager(data)

    def _send_eager(self, data: bytes) -> bool:
        """``data`` through the transport's ``send``, run eagerly (counted already);
        ``False`` when it has to wait (the pump, started here, waits for it)."""
        rest = eager.start(self.t.send(data))
        self._last_send = self._events_at = now = self._loop.time()
        if rest is None:
            return True
        self._inflight = rest
        self._send_started = now
        self._start_pump()
        return False

    def _coalesce_delay(self) -> float:
        """How long the pump should let a trickle of tokens pile up (0 = send now):
        the rest of the ``coalesce`` interval since the last events frame, when
        only a few events are pending for every dirty stream. While a stream's link
        is the bottleneck (its flow window was cut), the interval is at least
        :data:`SLOW_COALESCE`: fewer, larger frames, and tokens wait in the log rather
        than in a queue on the way."""
        coalesce = self.config.coalesce
        if self._slow:
            coalesce = max(coalesce, SLOW_COALESCE)
        if not coalesce:
            return 0.0
        gap = self._events_at + coalesce - self._loop.time()
        return gap if gap > 0 and self._trickle() else 0.0

    def _schedule_hb(self) -> None:
        """Watch this connection in the heartbeat's sweep (every half heartbeat)."""
        self._hb_armed = True
        self._hb.add(self)

    def tick(self, now: float) -> bool:
        """The heartbeat's check (the shared :mod:`.ticker` calls it every half
        heartbeat): a send stuck past ``send_timeout``, a peer gone or silent, an
        ``hb`` due. ``False`` when there is nothing to watch (idle: the next send or
        attach arms it again)."""
        if self._closed:
            self._hb_armed = False
            return False
        started = self._send_started
        config = self.config
        if started:
            if now - started > config.send_timeout:
                # the peer stopped reading: the pump is stuck in a send. Give up on
                # it: release everything this connection holds (its runs go on).
                log.warning(
                    "send timeout conn=%s after=%.1fs; dropping the connection",
                    self.id,
                    now - started,
                )
                self._kill(CloseCode.GOING_AWAY, "send timeout")
                self._hb_armed = False
                return False
            blocked = 4 * config.peer_silence
            if now - started > blocked and now - self._last_recv > blocked:
                # stuck in a send and deaf too: a live client pings while its stream is
                # live, so this is a dead link (a peer gone with our bytes unsent, its
                # FIN unseen behind them), not a slow reader: no need to wait send_timeout
                log.warning(
                    "peer gone conn=%s send blocked %.1fs, nothing heard for %.1fs; "
                    "dropping the connection",
                    self.id,
                    now - started,
                    now - self._last_recv,
                )
                self._kill(CloseCode.GOING_AWAY, "peer gone: send blocked and nothing heard")
                self._hb_armed = False
                return False
        session = self.session
        # a stream waits for an ack and the client is silent: its frames are lost
        silent = session.peer_silent(now, self._last_recv, bool(started))
        if silent:
            log.warning(
                "peer silent conn=%s window full, nothing heard for %.2fs "
                "(limit %.2fs); dropping the connection",
                self.id,
                silent,
                config.peer_silence,
            )
            self._kill(CloseCode.HEARTBEAT_TIMEOUT, "peer silent: no ack for a full window")
            self._hb_armed = False
            return False
        # a resume still looking its stream up is live too: its client expects frames
        live = session.live() or bool(self._resumes or self._running)
        if live and now - self._last_send >= config.heartbeat * 0.9:
            self._queue(self.codec.hb)
            session.hb_sent(time.monotonic())
        if live or started or self._pump_task is not None:
            return True
        self._hb_armed = False  # idle: no checks; the next send or attach arms it again
        return False

    def _unreachable(
        self, stream: str | None, exc: StoreUnavailable, req: str | None = None
    ) -> None:
        """``stream``'s log (or the log a start of ``req`` creates its stream in) is
        unreachable for now (its store raised, or did not answer in time): with the
        ``unavailable`` cap, ``error unavailable`` for that stream or start alone (the
        client resumes it, or starts it again, after ``retry_after_ms``; the
        connection's other streams go on); without it, close 1011 (an older client
        reconnects and resumes them all, as it always did: an error code it does not
        know would fail the stream for good)."""
        if self._unavailable_cap:
            again = "resume" if req is None else "start again (same req)"
            self._error(
                ErrorCode.UNAVAILABLE,
                f"its log is unreachable: {exc}; {again} after retry_after_ms",
                stream=stream,
                req=req,
                retry_after_ms=UNAVAILABLE_RETRY_MS,
            )
        else:
            log.warning(
                "log unreachable conn=%s stream=%s req=%s error=%s; "
                "closing 1011 (no unavailable cap)",
                self.id,
                stream or "-",
                req or "-",
                excerpt(str(exc)),
            )
            self._kill(CloseCode.INTERNAL, "log unreachable; reconnect and resume")

    def _kill(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Give up on the peer: stop sending and end the connection with ``code``
        (everything it holds is released; its runs go on). With ``flush`` the
        sender is not cancelled: the frames already queued go out before the close
        (bounded by the close's wait, 1 s): event frames already taken from their
        streams (staged in ``_ready``, which go first), then the control frames; no
        events are taken from the streams after the kill."""
        self._killed, self._kill_code = reason, code
        self._closed = True
        current = asyncio.current_task()
        if self._pump_task is not None and self._pump_task is not current and not flush:
            self._pump_task.cancel()
        if self._task is not None and self._task is not current:
            self._task.cancel()  # the read loop, waiting for the peer
        self._wake()

    async def _send(self, data: bytes) -> None:
        # watched by tick (send_timeout): no timer per send on the hot path
        if not self._hb_armed and not self._closed:
            self._schedule_hb()
        self._send_started = self._loop.time()
        self._counts.bytes_out += len(data)
        await self.t.send(data)
        self._last_send = self._loop.time()
        self._send_started = 0.0

    async def _pump(self) -> None:
        """The sender when something must be waited for (a send that met
        backpressure, a coalescing interval, a log read with I/O); it sends in the
        order :meth:`_next_frame` gives.

        Events are coalesced: when the last events frame left less than
        ``coalesce`` seconds ago and only a trickle is pending (a paced agent),
        the pump waits out the rest of that interval so the tokens that arrive
        meanwhile share a frame. A control frame cuts the wait short. A stream
        with a backlog (catch-up) is never held back. With a log that reads
        without waiting the pump ends as soon as nothing is left to wait for.
        """
        loop = self._loop
        sends = 0
        try:
            while True:
                if self._inflight is not None:  # an eager send met backpressure
                    await self._inflight
                    self._inflight = None
                    self._last_send = loop.time()
                    self._send_started = 0.0
                events = bool(self._ready) or not self._outbox
                frame = self._next_frame()
                if frame is not None:
                    await self._send(frame)
                    if events:
                        self._events_at = loop.time()
                    sends += 1
                    if sends % _FAIR_SENDS == 0:
                        await asyncio.sleep(0)  # a send that never waits must not starve others
                    continue
                if self._closed:
                    return  # what was queued is out; events no longer matter
                if not self._dirty:
                    if not self.atts or self._nowait:
                        return  # idle: the next _wake() sends (or starts a pump) again
                    await self._sleep(None)
                    continue
                gap = self._coalesce_delay()
                if gap > 0:
                    self._coalescing = True
                    try:
                        await self._sleep(gap)
                    finally:
                        self._coalescing = False
                    continue
                await self._read_dirty()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._send_failed(exc)
        finally:
            if self._pump_task is asyncio.current_task():
                self._pump_task = None

    async def _read_dirty(self) -> None:
        """For a log read with I/O: take the next frame of each dirty stream to the
        send queue (the pump sends it by the one rule). A stream that gave a frame
        stays dirty (maybe more); one whose ``end`` was taken is released; a control
        frame queued meanwhile stops the round (it goes before further reads)."""
        dirty, self._dirty = self._dirty, {}
        for stream in dirty:
            if self._outbox:  # control frames (started, resumed, gone) go first
                self._dirty[stream] = None
                continue
            att = self.atts.get(stream)
            if att is None:
                continue
            try:
                frame = await att.next_frame()
            except StoreUnavailable as exc:  # this stream's log only (a cluster master down)
                self._detach(stream)
                self._unreachable(stream, exc)
                if self._closed:
                    return
                continue
            if frame is None or self.atts.get(stream) is not att:
                continue  # nothing ready, or re-attached while reading: the new cursor goes on
            self._ready.append(frame)
            if att.ended:  # the end is taken: nothing more to read
                self._detach(stream, release=True)
            else:
                self._dirty[stream] = None

    async def _sleep(self, delay: float | None) -> None:
        """Wait for :meth:`_wake` (or ``delay`` seconds, when given)."""
        fut = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(delay, _resolve, fut) if delay is not None else None
        try:
            await fut
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _trickle(self) -> bool:
        """Only a few events are pending for every dirty stream."""
        atts = self.atts
        for stream in self._dirty:
            att = atts.get(stream)
            if att is not None and att.head_hint - att.flow.sent >= 64:
                return False
        return True


#: the coalescing interval (s) while a stream's link is slower than the stream (its
#: flow window cut): on such a link a token waits in a queue anyway
SLOW_COALESCE = 0.1

#: the floor (ms) under a client's resume of a stream whose log was unreachable
#: (``error unavailable``): a Redis store fails such calls at once until its lease
#: loop sees the master answer again (every ``lease / 5``, 1 s by default)
UNAVAILABLE_RETRY_MS = 1000

#: the shortest time (s) a resume waits for its log before it is answered
#: ``unavailable`` (see :func:`store_wait`)
STORE_WAIT_FLOOR = 1.0


def store_wait(heartbeat: float) -> float:
    """How long (s) a resume's lookups may wait for the log: two heartbeats, at least
    :data:`STORE_WAIT_FLOOR` (a Redis that answers late, not one that is away, is no
    outage), far below a client's ``request_timeout``. The lookups run beside the
    connection's reader (its pings are answered, its heartbeats sent meanwhile), so
    the client's silence limit does not bound this wait."""
    return max(STORE_WAIT_FLOOR, 2 * heartbeat)


#: sends one connection makes in a row before letting the loop serve the others
_FAIR_SENDS = 32


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _hex_digest(logged: tuple[int, bytes]) -> tuple[int, str]:
    return logged[0], logged[1].hex()
