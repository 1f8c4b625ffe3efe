"""The Python client: one logical session over as many connections as it takes.

It notices drops (close frames, socket errors, silence), reconnects with the
protocol's backoff (rotating through URLs), resumes every open stream from its
last seq and digest, and yields each event exactly once, verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from ..errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    IntegrityError,
    ProtocolError,
    ReconnectExhausted,
    RequestRefused,
    RequestTimeout,
    StreamGone,
)
from ..protocol import versions
from ..protocol.backoff import Backoff, BackoffPolicy, GiveUp, Reconnects
from ..protocol.client_session import (
    AskToken,
    AuthExpiringOut,
    ClientSession,
    ConsumedCursor,
    Cursor,
    FailStream,
    Heartbeat,
    PongOut,
    RefreshedOut,
    RetryResume,
    RetryStart,
    ServerError,
    StreamEvents,
    StreamGoneOut,
    StreamResumed,
    StreamsOut,
    StreamStarted,
    Welcomed,
    end_error,
)
from ..protocol.codes import CloseCode, ErrorCode, close_reason
from ..protocol.digest import seed
from ..protocol.events import Event
from ..protocol.frames import (
    CAP_BATCH,
    CAP_REFRESH,
    CAP_STREAMS,
    CAP_UNAVAILABLE,
    DEFAULT_MAX_FRAME,
    Ping,
    Start,
    encode,
)
from ..protocol.frames_v2 import CAP_ZLIB
from ..protocol.liveness import MAX_CHECK_EVERY, Liveness
from ..protocol.retry import (
    FATAL_CLOSE,
    RETRYABLE_START,
    TokenAttempts,
    cause_of,
    close_error,
    fatal_error,
    refused_before_welcome,
    shed_wait,
    should_retry,
)
from .response import Answer, StreamEnded, StreamEvent

log = logging.getLogger(__name__)

TokenProvider = str | Callable[[], str | Awaitable[str | None] | None] | None
RetryHook = Callable[[BaseException], bool | None]


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """Something that happened to the connection, with a monotonic timestamp ``at``.

    ``kind`` is one of: connected, disconnected, reconnecting, resumed, gone,
    exhausted, refreshed (a new token was accepted in-band), refresh_failed (the
    provider failed or the server refused its token: ``cause``), unavailable (a
    ``stream``'s log is unreachable on the server: it is resumed again after ``delay``
    seconds; ``stream`` empty: a start's, sent again after ``delay``). ``version``: the
    wire protocol version a ``connected`` connection negotiated (``"v1"``,
    ``"v2"``). ``retry_after``: on ``disconnected``, the server's wait (seconds) when
    it shed this reader or refused it for load (``error overloaded`` with
    ``retry_after_ms``, close 4008): the next attempt waits at least that long.
    Fields not relevant to a kind are left at their defaults.
    """

    kind: str
    at: float
    url: str = ""
    cause: str = ""
    code: int | None = None
    attempt: int = 0
    delay: float = 0.0
    stream: str = ""
    from_seq: int = 0
    head: int = 0
    reason: str = ""
    version: str = ""
    retry_after: float | None = None


def default_should_retry(exc: BaseException) -> bool:
    """The documented retry table (:func:`unbroken.protocol.retry.should_retry`):
    network errors, timeouts, 5xx and restart or overload closes are retried;
    auth, forbidden, version and protocol are fatal."""
    return should_retry(exc, status=_status(exc), transient=_TRANSIENT)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a refused upgrade, else ``None``."""
    return exc.response.status_code if isinstance(exc, InvalidStatus) else None


def _refusal_text(exc: BaseException) -> str:
    """The body of a refused upgrade (the server's reason), else ``""``."""
    if not isinstance(exc, InvalidStatus):
        return ""
    return bytes(exc.response.body or b"")[:512].decode("utf-8", "replace")


#: the transport's failures that a reconnect may cure (as ``OSError``)
_TRANSIENT: tuple[type[BaseException], ...] = (InvalidHandshake, ConnectionClosed)


@dataclass(frozen=True, slots=True)
class LiveStream:
    """A run of this principal that has not ended (:meth:`Client.streams`): its stream
    id, agent, epoch, ``head`` (the last event the log held when asked), ``status``
    (``running``) and ``cursor`` at ``head`` (:meth:`Client.resume` follows it from
    there; :meth:`Client.join` from its first event)."""

    stream: str
    agent: str
    epoch: str
    head: int
    status: str
    cursor: Cursor


class _Connection(ClientConnection):
    """A WebSocket connection that reports every read from the socket: bytes of a
    frame still arriving (a large frame on a slow link) are proof of life too."""

    on_bytes: Callable[[int], None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        super().data_received(data)


@dataclass(frozen=True, slots=True)
class _FrameMark:
    """Queued after a frame's events: the verified digest after ``seq``."""

    seq: int
    digest: bytes


class Stream:
    """One agent answer as the client receives it.

    ``async for event in stream`` yields typed events exactly once, across any
    number of reconnects, and raises a typed error when the answer cannot be
    completed exactly. :attr:`result` is the answer assembled so far.
    """

    def __init__(self, client: Client, req: str, agent: str) -> None:
        self._client = client
        self.req = req
        self.agent = agent
        self.id = ""
        self.result = Answer("")
        self._queue: asyncio.Queue[tuple[StreamEvent, Event] | _FrameMark | BaseException] = (
            asyncio.Queue()
        )
        self._consumed = ConsumedCursor()  # how far the iterator has yielded
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: when the start or resume should have been answered, on the client's clock
        #: without its own lateness (loop time less :meth:`Client._late_now`): moved on
        #: by each answer that sends it again later (``unavailable``, a start refused
        #: for load)
        self._answer_by = 0.0
        self._done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._cancelled_by_user = False

    # ---- consumer side
    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _FrameMark):
                self._consumed.verified(item.seq, item.digest)
                continue
            typed, raw = item
            self._consumed.consumed(raw)
            yield typed
            if isinstance(typed, StreamEnded):
                return

    async def wait(self) -> Answer:
        """Wait for the end; the verified answer, or the error that ended it."""
        return await asyncio.shield(self._done)

    @property
    def done(self) -> bool:
        return self._done.done()

    @property
    def cursor(self) -> Cursor | None:
        """Position of the last event this iterator yielded (seq, digest, epoch):
        save it to pick the answer up later, on any node, with :meth:`Client.resume`.
        ``None`` before the stream started."""
        return self._consumed.cursor()

    @property
    def epoch(self) -> str:
        """The storage generation of the server's log that holds this stream (``""``
        before the stream started); a resume in another epoch is answered ``gone``."""
        return self._consumed.epoch

    def _began(self, stream: str, epoch: str, seq: int = 0, digest: bytes | None = None) -> None:
        self.id = stream
        self._consumed.began(stream, epoch, seq, digest)

    async def cancel(self) -> None:
        """Stop the agent on the server (idempotent; also after a reconnect)."""
        self._cancelled_by_user = True
        if self.id and not self.done:
            await self._client._send_frame(self._client._session.cancel(self.id))

    # ---- producer side (the client's reader)
    def _push(self, event: StreamEvent, raw: Event) -> None:
        self._queue.put_nowait((event, raw))
        if isinstance(event, StreamEnded):
            self._finish(end_error(self.id, event.status, event.error, self._cancelled_by_user))

    def _finish(self, error: BaseException | None) -> None:
        if self._done.done():
            return
        if error is not None:
            self._queue.put_nowait(error)
            self._done.set_exception(error)
            self._done.exception()  # mark retrieved: callers may only iterate
            if not self._started.done():
                self._started.set_exception(error)
                self._started.exception()
        else:
            self._done.set_result(self.result)
        client = self._client
        client._streams.pop(self.req, None)
        client._by_id.pop(self.id, None)
        # forget after this tick, so the final ack is still sent
        asyncio.get_running_loop().call_soon(client._session.forget, self.req)


class Client:
    """A resilient unbroken client; use as ``async with Client(url) as c``.

    ``urls``: one URL or several (rotated on reconnect). ``token``: a string or a
    callable (sync or async), the token provider, asked on every (re)connect and,
    when the server says the credentials are expiring (``auth_expiring``), for a
    new token sent in-band (``refresh``: no reconnect, streams never pause). A
    provider that fails is asked again with backoff, ``token_attempts`` times when
    opening a connection, then the client ends with
    :class:`~unbroken.errors.AuthError`; after close 4010 (token expired) it
    reconnects with a new token and resumes. ``policy``: the
    :class:`BackoffPolicy`. ``should_retry(exc)`` may override the retry table
    by returning True/False (None keeps the default). ``on_event`` receives
    :class:`ConnectionEvent` s; so does :meth:`connection_events`. ``origin``:
    the ``Origin`` header of every handshake (as a browser page's; the server's
    origin policy judges it), ``headers``: more handshake headers (cookies, a
    gateway's key). ``protocols``: the wire protocol versions offered, newest
    first (default: every one this client speaks; ``("v1",)`` pins one, for
    testing); a server that speaks none of them closes with 4005 and the client
    ends with :class:`~unbroken.errors.UnsupportedVersion` (never retried).
    ``compression``: offer the ``zlib`` cap (v2): the server may deflate a large
    message (a catch-up batch), never a paced token's small frame.

    Liveness, both ways: the link is declared dead when nothing arrives for the
    silence limit (``silence_factor`` heartbeats plus the RTO, ``SRTT + 4·RTTVAR``
    of the measured round trips), or when a ``ping`` stays unanswered that long
    (this client's frames are lost: a ping follows every batch of acks, answers
    every ``hb``, and goes out every ``ping_every`` seconds while a stream is
    live). Time this process itself was busy never counts against the link.
    ``open_timeout`` bounds one connection attempt (TCP, upgrade and
    ``welcome``); a fresh attempt starts every ``attempt_stagger`` seconds while
    earlier ones are pending (the first to succeed wins), and no attempt runs
    past the policy's ``deadline``. :meth:`start` and :meth:`resume` raise
    :class:`~unbroken.errors.RequestTimeout` when the server has not answered
    within ``request_timeout`` seconds (counted again from each time the request is
    sent again after an answer that asked for it: ``unavailable``, a start refused
    for load; those waits are bounded by the policy).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: TokenProvider = None,
        policy: BackoffPolicy | None = None,
        should_retry: RetryHook | None = None,
        on_event: Callable[[ConnectionEvent], None] | None = None,
        silence_factor: float = 3.0,
        ping_every: float = 0.75,
        open_timeout: float = 3.0,
        attempt_stagger: float = 0.5,
        request_timeout: float = 30.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        seed: int | None = None,
        token_attempts: int = 3,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        protocols: str | Sequence[str] | None = None,
        compression: bool = True,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ConfigError("give at least one URL")
        for url in self.urls:
            try:
                parse_uri(url)
            except InvalidURI as exc:
                raise ConfigError(f"{exc}; give a ws:// or wss:// URL") from None
        #: protocol versions offered, newest first (``("v2", "v1")``; pin one to test)
        self.protocols: tuple[str, ...] = versions.normalize(
            versions.DEFAULT if protocols is None else protocols
        )
        #: the version the current (or last) connection speaks
        self.version: str | None = None
        self.token = token
        self.origin = origin
        self.headers = dict(headers) if headers else {}
        self.policy = policy or BackoffPolicy()
        self.should_retry = should_retry
        self.on_event = on_event
        self.open_timeout = open_timeout
        self.attempt_stagger = attempt_stagger
        self.request_timeout = request_timeout
        self.max_frame = max_frame
        self._rng = random.Random(seed)
        self._live = Liveness(silence_factor=silence_factor, ping_every=ping_every)
        self.token_attempts = token_attempts
        #: the provider can give a new token while connected: offer in-band refresh
        refresh = callable(token)
        self._session = ClientSession(
            max_frame=max_frame,
            caps=(CAP_BATCH, CAP_STREAMS, CAP_UNAVAILABLE)
            + ((CAP_REFRESH,) if refresh else ())
            + ((CAP_ZLIB,) if compression else ()),
            liveness=self._live,
            start_attempts=self.policy.max_attempts or 12,
            rng=random.Random(seed) if seed is not None else None,
            outage_policy=self.policy,
        )
        self._streams: dict[str, Stream] = {}
        self._by_id: dict[str, Stream] = {}
        self._ws: ClientConnection | None = None
        self._url_index = 0
        self._ready = asyncio.Event()
        #: when the current connection got its ``welcome`` (``None``: not yet)
        self._welcomed_at: float | None = None
        #: ``list`` requests waiting for their ``streams``, by number
        self._lists: dict[int, asyncio.Future[list[LiveStream]]] = {}
        self._list_n = 0
        #: how late this process's loop ran (seconds, summed) while starts or resumes
        #: waited for their answer: one ticker measures it for all of them
        self._late_total = 0.0
        self._late_waits = 0  # the waits the ticker runs for
        self._late_due: float | None = None  # (loop time) the ticker's next tick
        self._late_handle: asyncio.TimerHandle | None = None
        self._epoch = ""  # the server's log generation, from the last welcome
        self._closed = False
        self._fatal: BaseException | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._subscribers: list[asyncio.Queue[ConnectionEvent]] = []
        self._progressed = False
        self._unanswered = False  # the last opening got no welcome in time
        #: how long a successful opening (TCP + upgrade) takes, smoothed: fresh attempts
        #: are spaced at least twice that apart, so a slow server is not sent a new
        #: handshake every stagger while its earlier ones are merely slow
        self._open_time: float | None = None
        #: retry_after (s) of an ``error overloaded`` about the connection itself (a slow
        #: reader shed): the floor under the reconnect after the close 4008 that follows
        self._shed_wait: float | None = None
        self._reconnects = Reconnects(self.policy, self._rng)
        self.history: list[ConnectionEvent] = []
        self._asking: set[asyncio.Task[None]] = set()  # token provider calls for refresh
        #: refreshes accepted on the connections so far
        self.refreshes = 0

    @property
    def backoff(self) -> Backoff | None:
        """The reconnect episode under way or last (its ``schedule`` of delays)."""
        return self._reconnects.backoff

    @property
    def silence_factor(self) -> float:
        """Heartbeats of silence (plus the RTO) after which the link is dead."""
        return self._live.silence_factor

    @silence_factor.setter
    def silence_factor(self, value: float) -> None:
        self._live.silence_factor = value

    @property
    def ping_every(self) -> float:
        """Seconds between pings while a stream is live (0: none but answers)."""
        return self._live.ping_every

    @ping_every.setter
    def ping_every(self, value: float) -> None:
        self._live.ping_every = value

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> NoReturn:
        raise ConfigError(
            "Client is an async context manager: write `async with Client(url) as client:` "
            "inside an async function (run it with asyncio.run(main()))"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover: __enter__ refuses
        return None

    async def __aenter__(self) -> Client:
        if self._closed:
            raise ConfigError(
                "this client is closed (its `async with` block ended): open a new Client"
            )
        if self._supervisor is not None:
            raise ConfigError(
                "this client is open already: enter `async with Client(url)` once, and "
                "share the client object inside that block"
            )
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._supervisor = loop.create_task(self._supervise(), name="unbroken-client")
        self._supervisor.add_done_callback(self._supervisor_ended)
        try:
            await asyncio.shield(self._first)
        except BaseException:  # given up, refused, or the caller's timeout: not open
            await self._not_opened()
            raise
        return self

    async def _not_opened(self) -> None:
        """The first connection failed or was cancelled: stop trying and leave the
        client as it was before ``async with``, so entering it again tries again."""
        task, self._supervisor, self._first = self._supervisor, None, None
        self._fatal = None
        self._reconnects = Reconnects(self.policy, self._rng)
        self._url_index = 0
        self._ready.clear()
        ws, self._ws = self._ws, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,))
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        self._session.connection_lost()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; streams not finished end with :class:`ConnectionLost`."""
        if self._closed:
            return
        self._closed = True
        self._session.close()
        for task in list(self._asking):
            task.cancel()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for st in list(self._streams.values()):
            st._finish(ConnectionLost("client closed"))
        for fut in self._lists.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("client closed"))
        self._lists.clear()

    # ------------------------------------------------------------ requests
    async def start(self, agent: str, input: Any = None, *, req: str | None = None) -> Stream:
        """Start an agent run; returns once the server has answered ``started``.

        A start whose answer is lost in a drop is sent again with the same request
        id after reconnecting, so the agent never runs twice.
        """
        self._check_usable()
        req = secrets.token_urlsafe(12) if req is None else req
        _check_start(req, agent, input)
        frame = self._session.start(req, agent, input)  # (refuses one too big)
        st = Stream(self, req, agent)
        self._streams[req] = st
        if frame is not None:
            await self._send_frame(frame)
        await self._answered(st, "start")
        return st

    async def resume(self, cursor: Cursor | str, *, prefix: Answer | None = None) -> Stream:
        """Pick up a stream from a saved :attr:`Stream.cursor` (this or another node),
        or from its string (``str(cursor)``, :meth:`Cursor.parse`). The events after
        the cursor follow, verified against the chain from the cursor's digest.

        ``prefix``: the :class:`Answer` received before (a failed stream's ``result``).
        The new stream's answer continues it, from the prefix's last event (the server
        checks the prefix's chain digest there), so it is whole and can be
        :attr:`~Answer.complete`. Without it the answer holds the events after the
        cursor only (``from_seq`` > 0); :meth:`read` re-reads a whole one instead."""
        self._check_usable()
        # a string is parsed; a Cursor is checked the same way (a bad digest would
        # otherwise surface as a ValueError, a bad id as the server closing 4000)
        cursor = Cursor.parse(cursor if isinstance(cursor, str) else str(cursor))
        if prefix is not None:
            cursor = _stitch_point(cursor, prefix)
        if cursor.stream in self._by_id:
            raise ConfigError(
                f"stream {cursor.stream} is already open on this client: read the Stream "
                "you have (a second reader of the same answer is another Client)"
            )
        req = "resume-" + secrets.token_urlsafe(9)
        st = Stream(self, req, "")
        st._began(cursor.stream, cursor.epoch, cursor.seq, bytes.fromhex(cursor.digest))
        if prefix is None:
            st.result = Answer(cursor.stream, from_seq=cursor.seq, head_digest=cursor.digest)
        else:
            st.result = copy.deepcopy(prefix)  # the caller's answer stays as it was
        self._streams[req] = st
        self._by_id[cursor.stream] = st
        frame = self._session.adopt(req, cursor)
        if frame is not None:
            await self._send_frame(frame)
        await self._answered(st, "resume")
        return st

    async def join(self, stream: str, *, epoch: str | None = None) -> Stream:
        """Follow the answer ``stream`` from its first event: a :class:`Stream` that
        replays what the log holds and then goes on live while the run goes on
        (another tab, another device, a page reloaded without its cursor). Every
        event is verified from the chain's seed, so :attr:`Answer.complete` can be
        true. Any number of clients may follow one answer at once; the run does not
        notice them. Only the principal that started it may read it (otherwise
        :class:`~unbroken.errors.StreamGone` ``forbidden``, as for an unknown id).
        ``epoch``: the log's generation the stream was started in (default: the
        server's, from ``welcome``; give the stream's :attr:`Stream.epoch` when
        nodes with their own logs sit behind one URL)."""
        self._check_usable()
        ep = epoch if epoch is not None else self._epoch
        return await self.resume(Cursor(stream, 0, seed(stream, ep).hex(), ep))

    async def read(self, stream: str, *, epoch: str | None = None) -> Answer:
        """The whole answer ``stream``, verified end to end: :meth:`join` and read
        to its end (waits while the run goes on). Raises
        :class:`~unbroken.errors.StreamFailed` when the run ended ``failed`` or
        ``cancelled`` (its partial answer on the :class:`Stream` ``result``) and
        :class:`~unbroken.errors.StreamGone` when it cannot be read."""
        st = await self.join(stream, epoch=epoch)
        async for _ in st:
            pass
        return await st.wait()

    async def streams(self) -> list[LiveStream]:
        """This principal's live streams: the runs it started that have not ended, oldest
        first, each a :class:`LiveStream` (id, agent, epoch, ``head``: the last event the
        log holds, and a ``cursor`` there). Follow one from its first event with
        :meth:`join` (``epoch=item.epoch``), or from now with :meth:`resume`
        (``item.cursor``).
        On a RedisStore every node answers the same list (the store keeps it); on a
        MemoryStore a node lists its own runs. A server older than the ``streams``
        capability raises :class:`~unbroken.errors.ConfigError`.
        The list can lag a run's end by one store round trip: a stream whose ``end``
        this client has already received may still be listed until the server has
        recorded that end (``store.finish``; on Redis this shows under load)."""
        self._check_usable()
        try:
            async with asyncio.timeout(self.request_timeout):
                await self._ready.wait()
        except TimeoutError:
            raise RequestTimeout("list of live streams", self.request_timeout) from None
        if not self._session.streams_agreed:
            raise ConfigError(
                "this server does not list live streams (it predates the 'streams' "
                "capability): keep the ids your start() calls returned"
            )
        self._list_n += 1
        n = self._list_n
        fut: asyncio.Future[list[LiveStream]] = asyncio.get_running_loop().create_future()
        self._lists[n] = fut
        frame = self._session.list_streams(n)
        if frame is not None:
            await self._send_frame(frame)  # else sent after the next welcome
        try:
            async with asyncio.timeout(self.request_timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise RequestTimeout("list of live streams", self.request_timeout) from None
        finally:
            self._lists.pop(n, None)

    async def _answered(self, st: Stream, what: str) -> None:
        """Wait for the answer to a start or resume: ``request_timeout`` from the
        request, or from when an answer that has it sent again (``unavailable``, a
        start refused for load) sends it again: a server that keeps answering is not
        stuck, however long its store is away (the policy bounds that wait).

        Time this process ran late (a blocked or stopped loop, measured by the
        client's one ticker: :meth:`_late_now`) is not the server's and does not
        count, as in the liveness rule: the answer is due that much later. Each wait
        keeps one timer, at its deadline; when it fires after the loop ran late, it
        moves on by that much (the frames that wait are read first)."""
        loop = asyncio.get_running_loop()
        # an answer that has it sent again may have come while it was being sent
        # (_answer_later): its later deadline stands
        st._answer_by = max(st._answer_by, loop.time() - self._late_now() + self.request_timeout)
        if st._started.done():
            return st._started.result()
        self._late_begin()
        # True: answered; False: not answered in time. Not wait_for: on 3.11 it loses
        # a cancel that comes as the answer does (the caller's task, cancelled, would
        # go on as if answered)
        outcome: asyncio.Future[bool] = loop.create_future()

        def answered(_: object) -> None:
            if not outcome.done():
                outcome.set_result(True)

        timer: asyncio.TimerHandle  # the deadline's (re-armed when it moves on)

        def due() -> None:
            nonlocal timer
            at = self._answer_due(st)  # the loop's lateness meanwhile: not counted
            if at > loop.time():  # moved on (ran late, or sent again)
                timer = loop.call_at(at, due)
            elif not outcome.done():
                outcome.set_result(False)

        timer = loop.call_at(self._answer_due(st), due)
        st._started.add_done_callback(answered)
        try:
            if await outcome:
                return st._started.result()
        finally:
            timer.cancel()
            st._started.remove_done_callback(answered)
            self._late_end()
        error = RequestTimeout(f"{what} of {st.agent or st.id or st.req!r}", self.request_timeout)
        self._session.forget(st.req)
        st._finish(error)
        raise error

    def _answer_due(self, st: Stream) -> float:
        """(loop time) When ``st``'s start or resume is due to be answered: its
        deadline plus the time this process has run late so far."""
        return st._answer_by + self._late_now()

    def _late_now(self) -> float:
        """How late the loop has run (seconds, summed) while answers were awaited,
        up to now: a tick that is overdue counts as far as now."""
        due = self._late_due
        if due is not None:
            now = asyncio.get_running_loop().time()
            if now > due:
                self._late_total += now - due
                self._late_due = now
        return self._late_total

    def _late_tick(self) -> None:
        """The ticker: adds up how late it ran, then ticks again (while a wait is on)."""
        self._late_now()
        loop = asyncio.get_running_loop()
        self._late_due = loop.time() + min(self.request_timeout / 3, MAX_CHECK_EVERY)
        self._late_handle = loop.call_at(self._late_due, self._late_tick)

    def _late_begin(self) -> None:
        self._late_waits += 1
        if self._late_handle is None:
            self._late_tick()

    def _late_end(self) -> None:
        self._late_waits -= 1
        if self._late_waits == 0 and self._late_handle is not None:
            self._late_handle.cancel()
            self._late_handle = None
            self._late_due = None

    def _answer_later(self, req: str, at: float) -> None:
        """``req`` is sent again at ``at`` (loop time): its answer is due
        ``request_timeout`` after that."""
        st = self._streams.get(req)
        if st is not None:
            # on the clock without lateness: a stall before the resend is not counted
            # again after it (``at`` is the resend's loop time, after the stall)
            st._answer_by = max(st._answer_by, at - self._late_now() + self.request_timeout)

    def connection_events(self) -> AsyncIterator[ConnectionEvent]:
        """Async iterator over connection events from now on."""
        q: asyncio.Queue[ConnectionEvent] = asyncio.Queue()
        self._subscribers.append(q)

        async def gen() -> AsyncIterator[ConnectionEvent]:
            try:
                while True:
                    yield await q.get()
            finally:
                self._subscribers.remove(q)

        return gen()

    def _check_usable(self) -> None:
        if self._supervisor is None:
            raise ConfigError(
                "the client is not connected: use it as `async with Client(url) as client:` "
                "and call start(), resume(), read() or join() inside that block"
            )
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ConfigError(
                "this client is closed (its `async with` block ended): open a new Client"
            )

    async def _send_frame(self, frame: Any) -> None:
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return  # re-sent by after_welcome on the next connection
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._session.wire(frame))

    def _emit(self, kind: str, **kw: Any) -> None:
        ev = ConnectionEvent(kind, time.monotonic(), **kw)
        self.history.append(ev)
        if len(self.history) > 10000:
            del self.history[:5000]
        log.info("client %s %s", kind, " ".join(f"{k}={v}" for k, v in kw.items() if v))
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("on_event callback failed")
        for q in self._subscribers:
            q.put_nowait(ev)

    # ------------------------------------------------------------ the loop
    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        reconnects = self._reconnects
        after_silence = False  # the last opening ran into its timeout, hearing nothing
        while not self._closed:
            url = self.urls[self._url_index % len(self.urls)]
            error: BaseException | None = None
            self._progressed = False
            self._unanswered = False
            self._shed_wait = None
            # no attempt may outlive the reconnect deadline
            began = loop.time()
            self._welcomed_at = None
            budget = reconnects.budget(began)
            try:
                await self._connection(url, budget)
                error = ConnectionLost("server closed the connection")
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # classified below
                error = exc
            welcomed_at = self._welcomed_at
            self._ready.clear()
            self._ws = None
            self._session.connection_lost()
            if self._closed:
                return
            cause = cause_of(error)
            self._emit(
                "disconnected",
                url=url,
                cause=cause,
                code=getattr(error, "code", None),
                retry_after=getattr(error, "retry_after", None),
            )
            retry = default_should_retry(error)
            if self.should_retry is not None:
                try:
                    decided = self.should_retry(error)
                except Exception:  # the hook is advice: the table decides without it
                    log.exception("should_retry hook failed; the retry table decides")
                    decided = None
                if decided is not None:
                    retry = bool(decided)
            if not retry:
                self._fail_all(
                    fatal_error(
                        error,
                        status=_status(error),
                        detail=_refusal_text(error),
                        versions=self.protocols,
                    )
                )
                return
            # an opening that timed out with no answer waited already: the next
            # follows within a stagger (a heal is met at once, however long it took);
            # so does the first quick failure after such a spell: a path that comes
            # back resetting what it held (a proxy, a NAT that lost its state) answers
            # a young opening with RST, and the next one will likely get through
            silent = isinstance(error, TimeoutError) or self._unanswered
            capped = (silent or after_silence) and not self._progressed
            after_silence = silent and not self._progressed
            next_step = reconnects.lost(
                loop.time(),
                error,
                progressed=self._progressed,
                silent_for=self.attempt_stagger if capped else None,
                since=began if welcomed_at is None else None,
                connected_for=0.0 if welcomed_at is None else loop.time() - welcomed_at,
            )
            if isinstance(next_step, GiveUp):
                self._emit("exhausted", attempt=next_step.error.attempts, cause=cause)
                gave_up = next_step.error
                if self._first is not None and not self._first.done():
                    # never welcomed: a wrong URL or a server not up, not a lost link
                    gave_up = ReconnectExhausted(
                        gave_up.attempts,
                        gave_up.elapsed,
                        gave_up.last_error,
                        never_connected=self.urls,
                    )
                self._fail_all(gave_up)
                return
            delay = next_step.delay
            # a node that just failed us is the least likely to work: try the next
            self._url_index += 1
            self._emit(
                "reconnecting",
                attempt=next_step.attempt,
                delay=delay,
                url=self.urls[self._url_index % len(self.urls)],
            )
            if delay > 0:
                await asyncio.sleep(delay)

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        """A supervisor that died of a bug must not leave anyone waiting: every
        stream (and a pending ``async with``) ends with :class:`ConnectionLost`."""
        if task.cancelled() or task.exception() is None or self._closed:
            return
        exc = task.exception()
        log.error("client loop failed: %r", exc, exc_info=exc)
        self._fail_all(ConnectionLost(f"the client's connection loop failed: {exc!r}"))

    def _fail_all(self, error: BaseException) -> None:
        self._fatal = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        for st in list(self._streams.values()):
            st._finish(error)

    async def _call_provider(self) -> str | None:
        t = self.token
        if t is None or isinstance(t, str):
            return t
        value = t()
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _token(self) -> str | None:
        """The token for a new connection: the provider is asked again with backoff
        when it raises, at most ``token_attempts`` times, then :class:`AuthError`
        (the retry table's decision: no retry storm). A provider that returns
        ``None`` means "no token": the hello goes without one."""
        if self.token is None or isinstance(self.token, str):
            return self.token
        attempts = TokenAttempts(self.token_attempts)
        while True:
            try:
                return await self._call_provider()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            step = attempts.failed(error)
            log.warning("token provider failed attempt=%d error=%r", attempts.failures, error)
            if isinstance(step, AuthError):
                raise step from error
            await asyncio.sleep(step)

    def _ask_token(self, ask: AskToken) -> None:
        """Carry out :class:`AskToken`: at its time, ask the provider and send the
        ``refresh`` the session builds (a failure goes back to the session)."""
        task = asyncio.get_running_loop().create_task(self._refresh(ask))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _refresh(self, ask: AskToken) -> None:
        loop = asyncio.get_running_loop()
        wait = ask.at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        cause = ""
        try:
            value = await self._call_provider()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            value, cause = None, f"{type(exc).__name__}: {exc}"
        frame = self._session.refresh(value, ask.connection)
        if frame is not None:
            await self._send_frame(frame)
            return
        if value:  # the connection it was for is gone; the next hello asks afresh
            return
        self._emit("refresh_failed", attempt=ask.attempt, cause=cause or "no token")
        again = self._session.refresh_failed(loop.time())
        if again is not None:
            self._ask_token(again)

    async def _open(self, url: str, within: float) -> ClientConnection:
        """Open a WebSocket within ``within`` seconds: a fresh attempt starts every
        ``attempt_stagger`` seconds while earlier ones are pending (a lost SYN or a
        stuck upgrade costs one stagger, not the whole timeout); the first to
        succeed wins, the others are closed. The stagger is at least twice the
        smoothed time a successful opening took: against a server slow to upgrade,
        100 clients once opened 26,000 handshakes in one reconnect round."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        async def attempt() -> ClientConnection:
            return await connect(
                url,
                origin=Origin(self.origin) if self.origin is not None else None,
                additional_headers=self.headers or None,
                subprotocols=[Subprotocol(s) for s in versions.offered(self.protocols)],
                open_timeout=max(0.001, deadline - loop.time()),
                ping_interval=None,
                close_timeout=1.0,
                max_size=self.max_frame,
                compression=None,
                max_queue=64,
                create_connection=_Connection,
            )

        pending: set[asyncio.Task[ClientConnection]] = set()
        began: dict[asyncio.Task[ClientConnection], float] = {}
        error: BaseException | None = None
        stagger = self.attempt_stagger
        if stagger > 0 and self._open_time is not None:
            stagger = max(stagger, 2 * self._open_time)
        next_start = loop.time()
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    raise TimeoutError(f"no connection to {url} within {within:.2f}s")
                if now >= next_start and (stagger > 0 or not pending):
                    task = loop.create_task(attempt())
                    pending.add(task)
                    began[task] = now
                    next_start = now + stagger if stagger > 0 else deadline
                wake = min(deadline, next_start) - now
                done, pending = await asyncio.wait(
                    pending, timeout=max(0.0, wake), return_when=asyncio.FIRST_COMPLETED
                )
                healed = False
                now = loop.time()
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        took = now - began[task]
                        seen = self._open_time
                        self._open_time = took if seen is None else 0.75 * seen + 0.25 * took
                        return task.result()
                    error = exc
                    # silent for a stagger or more, then an answer (a reset): the
                    # path is back, so a fresh attempt now beats a backoff wait
                    healed = healed or (stagger > 0 and now - began[task] >= stagger)
                if done and not pending and error is not None:
                    if not healed:
                        raise error  # refused or failed outright, not merely slow
                    log.debug("attempt failed after %.2fs of silence: a fresh one now", stagger)
                    next_start = now
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    late = await task
                    await late.close()

    async def _connection(self, url: str, budget: float | None = None) -> None:
        """Run one connection until it drops (sets ``_progressed`` on progress).
        ``budget``: seconds left before the reconnect deadline (bounds the opening)."""
        loop = asyncio.get_running_loop()
        token = await self._token()  # before the socket: a slow provider holds none
        t0 = loop.time()
        timeout = self.open_timeout if budget is None else min(self.open_timeout, budget)
        ws = await self._open(url, timeout)
        opened_by = t0 + timeout
        self._ws = ws

        live = self._live
        self._session.connected()

        def heard(n: int) -> None:
            live.bytes_heard(loop.time(), n)

        if isinstance(ws, _Connection):
            ws.on_bytes = heard
        watchdog: asyncio.TimerHandle | None = None
        dead: list[str] = []
        due = 0.0  # when the watchdog should run (how late it ran is reported)

        def watch(at: float) -> asyncio.TimerHandle:
            nonlocal due
            delay = max(0.0, at - loop.time())
            due = loop.time() + delay
            return loop.call_later(delay, check_silence)

        def check_silence() -> None:
            nonlocal watchdog
            check = self._session.check(loop.time(), due)
            if check.dead is not None:
                dead.append(check.dead)
                ws.transport.abort()
                return
            if check.ping is not None:
                self._send_soon(ws, check.ping)
            watchdog = watch(check.wake_at)

        try:
            version = versions.chosen_version(ws.subprotocol)
            if version not in self.protocols:
                # accepted with no version this client speaks: the server closes
                # 4005 with the versions it speaks (or it is no unbroken server)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.001, opened_by - loop.time())):
                        await ws.wait_closed()
                if ws.close_code == CloseCode.UNSUPPORTED_VERSION:
                    raise ConnectionLost(ws.close_reason or "", CloseCode.UNSUPPORTED_VERSION)
                raise ConnectionLost(
                    f"server chose subprotocol {ws.subprotocol!r}", CloseCode.UNSUPPORTED_VERSION
                )
            self.version = version
            hello = self._session.connect(token, version)
            await ws.send(self._session.wire(hello))
            for frame in self._session.resumes():  # pipelined behind hello (§2)
                await ws.send(self._session.wire(frame))
            live.hello_sent(loop.time())
            left = max(0.001, opened_by - loop.time())
            async with asyncio.timeout(left):
                first = await ws.recv()
            out = self._session.receive(first)
            if isinstance(out, ServerError):
                raise refused_before_welcome(out.error)
            assert isinstance(out, Welcomed)
            self._epoch = out.welcome.epoch
            now = loop.time()
            live.welcomed(now, out.welcome.heartbeat_ms, now - t0)
            self._welcomed_at = now
            self._ready.set()
            self._emit("connected", url=url, version=version)
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            for frame in self._session.after_welcome():
                await ws.send(self._session.wire(frame))
            for n in list(self._lists):  # lists unanswered when the last connection died
                again = self._session.list_streams(n)
                if again is not None:
                    await ws.send(self._session.wire(again))
            watchdog = watch(live.first_check(loop.time()))
            frames_of = self._session.frames_of
            session = self._session
            async for message in ws:  # (bytes arriving already count: heard())
                live.message_heard()
                now = loop.time()
                for one in frames_of(message):
                    if self._handle(one):
                        self._progressed = True
                for frame in session.after_message(now):
                    if type(frame) is Ping:  # never waited for
                        self._send_soon(ws, frame)
                    elif ws.state is State.OPEN:
                        await ws.send(self._session.wire(frame))
                    # closing: no ack can go; read what arrived before the close
                    # (an ``error`` with the close's retry_after_ms), then the close
        except ConnectionClosed as exc:
            if dead:
                raise ConnectionLost(dead[0], CloseCode.HEARTBEAT_TIMEOUT) from None
            rcvd, sent = exc.rcvd, exc.sent
            closed = close_error(
                None if rcvd is None else (rcvd.code, rcvd.reason),
                None if sent is None else (sent.code, sent.reason),
            )
            if (
                isinstance(closed, ConnectionLost)
                and closed.code == CloseCode.OVERLOADED
                and self._shed_wait is not None
            ):
                closed.retry_after = self._shed_wait  # a floor under the reconnect
            raise closed from None
        except ProtocolError as exc:
            # the server's frame broke the protocol: close with its code (4000, 1009),
            # so the server's log says why
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close(exc.close_code, close_reason(str(exc)))
            raise
        except TimeoutError:
            self._unanswered = True
            raise ConnectionLost("no welcome in time") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if dead:
                ws.transport.abort()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()
        if dead:
            raise ConnectionLost(dead[0], CloseCode.HEARTBEAT_TIMEOUT)
        code = ws.close_code
        if code is not None and code != CloseCode.NORMAL:
            wait = None
            if code == CloseCode.OVERLOADED:  # the error's wait, else the close reason's
                wait = self._shed_wait or shed_wait(ws.close_reason or "")
            raise ConnectionLost(ws.close_reason or "closed", code, retry_after=wait)

    def _send_soon(self, ws: ClientConnection, frame: Ping) -> None:
        """Send ``frame`` without waiting for it (from a timer, or ahead of acks)."""
        task = asyncio.get_running_loop().create_task(ws.send(self._session.wire(frame)))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    @property
    def silence_limit(self) -> float:
        """Seconds of silence (or of an unanswered ping) after which the link is
        declared dead, as things stand (it follows the measured round trips)."""
        return self._live.limit()

    def _handle(self, message: str | bytes) -> bool:
        try:
            out = self._session.receive(message)
        except IntegrityError as exc:
            st = self._by_id.get(exc.stream)
            if st is None:
                raise
            log.error("integrity error stream=%s seq=%d", exc.stream, exc.seq)
            st._finish(exc)
            return False
        if isinstance(out, StreamEvents):
            st = self._by_id.get(out.stream)
            if st is None:
                return True
            digest = out.digest.hex()
            try:
                for ev in out.events:
                    st._push(st.result.apply(ev, digest), ev)
            except Exception as exc:  # this stream's content, never the connection's
                log.error("stream %s: event not applicable: %r", out.stream, exc)
                st._finish(ProtocolError(f"stream {out.stream}: {type(exc).__name__}: {exc}"))
                return True
            if not st.done:
                st._queue.put_nowait(_FrameMark(out.events[-1].seq, out.digest))
            return True
        if isinstance(out, StreamStarted):
            st = self._streams.get(out.req)
            if st is not None:
                st._began(out.stream, out.epoch)
                st.result.stream = out.stream
                self._by_id[out.stream] = st
                if not st._started.done():
                    st._started.set_result(None)
            return True
        if isinstance(out, StreamResumed):
            st = self._by_id.get(out.stream)
            self._emit("resumed", stream=out.stream, from_seq=out.from_seq, head=out.head)
            if st is not None and not st._started.done():
                st._started.set_result(None)
            return True
        if isinstance(out, StreamGoneOut):
            self._emit("gone", stream=out.stream, reason=out.reason)
            st = self._by_id.get(out.stream)
            if st is not None:
                st._finish(StreamGone(out.stream, out.reason, out.message))  # type: ignore[arg-type]
            return True
        if isinstance(out, PongOut):
            self._live.pong(asyncio.get_running_loop().time(), out.n)
            return False
        if isinstance(out, Heartbeat):  # (the session answers it after the message)
            return False
        if isinstance(out, ServerError):
            self._server_error(out)
            return False
        if isinstance(out, AuthExpiringOut):
            log.info("auth expiring in_ms=%d refresh=%s", out.in_ms, out.ask is not None)
            if out.ask is not None:
                self._ask_token(out.ask)
            return False
        if isinstance(out, RefreshedOut):
            self.refreshes += 1
            self._emit("refreshed")
            return False
        if isinstance(out, StreamsOut):
            fut = self._lists.get(out.n)
            if fut is not None and not fut.done():
                fut.set_result(
                    [
                        LiveStream(
                            i.stream,
                            i.agent,
                            i.epoch,
                            i.head,
                            i.status,
                            Cursor(i.stream, i.head, i.h, i.epoch),
                        )
                        for i in out.items
                    ]
                )
            return False
        return False

    def _server_error(self, out: ServerError) -> None:
        err = out.error
        loop = asyncio.get_running_loop()
        now = loop.time()
        action = self._session.server_error(err, now)
        # a start refused for load and retried is the protocol working: not a warning
        level = logging.DEBUG if isinstance(action, RetryStart) else logging.WARNING
        log.log(level, "server error code=%s message=%s", err.code, err.message)
        if err.code in RETRYABLE_START and err.req is None and err.stream is None:
            # about the connection (a slow reader shed): a close 4008 follows
            wait = err.retry_after_ms
            self._shed_wait = None if wait is None else wait / 1000
        if isinstance(action, AskToken):  # the server refused a refresh token
            self._emit("refresh_failed", attempt=action.attempt - 1, cause=err.message)
            self._ask_token(action)
        elif action is None and err.code == "auth_failed" and err.req is None:
            self._emit("refresh_failed", cause=err.message)
        elif isinstance(action, RetryStart):
            self._answer_later(action.req, action.at)
            if err.code == ErrorCode.UNAVAILABLE:  # the log of its stream-to-be
                delay = max(0.0, action.at - now)
                self._emit("unavailable", stream="", delay=delay, cause=err.message)
            loop.call_later(max(0.0, action.at - loop.time()), self._resend_start, action.req)
        elif isinstance(action, RetryResume):  # its log is unreachable for now
            self._answer_later(action.req, action.at)
            delay = max(0.0, action.at - now)
            self._emit("unavailable", stream=err.stream or "", delay=delay, cause=err.message)
            loop.call_later(max(0.0, action.at - loop.time()), self._resend_resume, action.req)
        elif isinstance(action, FailStream):
            st = self._streams.get(action.req)
            if st is not None:
                st._finish(action.error)

    def _resend_resume(self, req: str) -> None:
        frame = self._session.resend_resume(req)
        if frame is None:
            return
        # its answer is due request_timeout after it goes, not after it was planned: a
        # busy process runs this timer late (the JS client's rule too)
        self._answer_later(req, asyncio.get_running_loop().time())
        task = asyncio.get_running_loop().create_task(self._send_frame(frame))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _resend_start(self, req: str) -> None:
        frame = self._session.resend_start(req)
        if frame is None:
            return
        self._answer_later(req, asyncio.get_running_loop().time())  # (as above)
        task = asyncio.get_running_loop().create_task(self._send_frame(frame))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


_AGENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_REQ_ID = re.compile(r"[\x21-\x7e]{1,128}\Z")


def _check_start(req: str, agent: str, input: Any) -> None:
    """Refuse, before anything is sent, a start the server would refuse as a bad
    frame (closing the connection, every stream on it with it)."""
    if not isinstance(agent, str) or _AGENT_NAME.match(agent) is None:
        raise ConfigError(
            f"bad agent name {agent!r}: 1 to 128 of A-Z a-z 0-9 _ . : - (as registered "
            "with @app.agent)"
        )
    if not isinstance(req, str) or _REQ_ID.match(req) is None:
        raise ConfigError(f"bad request id {req!r}: 1 to 128 printable ASCII characters")
    try:
        encode(Start(req, agent, input))
    except (TypeError, ValueError) as exc:  # msgspec's EncodeError is a ValueError
        raise ConfigError(
            f"the input of {agent!r} cannot be sent as JSON: {exc} (give dicts, lists, "
            "strings, numbers, booleans or None)"
        ) from None


async def stream_answer(
    url: str | Sequence[str], agent: str, input: Any = None, **client_kw: Any
) -> Answer:
    """One-shot helper: start ``agent`` and return its verified :class:`Answer`."""
    async with Client(url, **client_kw) as client:
        st = await client.start(agent, input)
        async for _ in st:
            pass
        return await st.wait()


__all__ = [
    "FATAL_CLOSE",
    "Client",
    "ConnectionEvent",
    "ConnectionLost",
    "RequestRefused",
    "Stream",
    "default_should_retry",
    "stream_answer",
]


def _stitch_point(cursor: Cursor, prefix: Answer) -> Cursor:
    """Where a resume that continues ``prefix`` starts: the prefix's last event (it may
    be past ``cursor``: an answer holds whole frames, a cursor the last event read)."""
    if prefix.stream != cursor.stream:
        raise ConfigError(
            f"prefix is an answer of stream {prefix.stream!r}, the cursor of {cursor.stream!r}"
        )
    if prefix.status != "running":
        raise ConfigError(f"prefix already ended ({prefix.status}): there is nothing to resume")
    if prefix.events < cursor.seq or not prefix.head_digest:
        raise ConfigError(
            f"prefix holds events up to {prefix.events}, the cursor is at {cursor.seq}: "
            "give the answer the cursor was taken from (its stream's result)"
        )
    return Cursor(cursor.stream, prefix.events, prefix.head_digest, cursor.epoch)
