"""The moving parts of a chaos run, usable on their own in your tests.

* :class:`ServerThread` runs a real unbroken server (uvicorn on loopback) on its own
  thread and event loop, so the server's CPU time is measured apart from the client's and
  the proxy's, and a busy client cannot stall the server's heartbeats.
* :class:`WireTap` is ASGI middleware that keeps every frame the server sends and
  receives, per connection: the sequence trace, and what was re-sent after a resume.
* :class:`AnswerBook` and :func:`answer_app`: an app whose agent ``answer`` replays a
  generated answer (:mod:`unbroken.chaos.generators`) at a pace.
* :class:`StreamRecorder` consumes a client :class:`~unbroken.client.Stream`, keeping each
  event (as a protocol :class:`~unbroken.protocol.events.Event`) and when it arrived.
* :class:`LogCapture` keeps the client's, server's and proxy's log lines of a run.
* :class:`ChaosHarness` puts them together with a :class:`~unbroken.chaos.FaultProxy`::

      async with ChaosHarness() as h:
          async with h.client() as client:
              rec = await h.start(client, StreamingResponseSimulator(1).text_answer(50_000))
              await h.proxy.cut_all("rst")
              await rec.done()
          verdict = h.verify_client(rec)            # StateVerifier on what the client got
          log_verdict = await h.verify_log(rec)     # StateVerifier on the server's log
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import threading
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import psutil

from ..chaos import FaultProxy, GeneratedAnswer, LogLimits, StateVerifier, Verdict
from ..client import (
    Answer,
    Client,
    DataChunk,
    JsonFragment,
    PartEnded,
    PartStarted,
    Stream,
    StreamEnded,
    StreamEvent,
    TextDelta,
)
from ..errors import UnbrokenError
from ..protocol.backoff import BackoffPolicy
from ..protocol.events import Event, Kind, payload
from ..server import Output, Request, Unbroken
from ..store.base import Retention
from ..store.memory import MemoryStore
from ..testing import serve

if TYPE_CHECKING:
    from ..chaos.kernel import Namespace, Topology

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the wire tap
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


@dataclass(slots=True)
class TapConnection:
    """One WebSocket connection the server served."""

    id: int
    client: str
    opened: float
    closed: float | None = None
    raw: list[tuple[float, bool, str]] = field(default_factory=list)
    _frames: list[TapFrame] | None = None
    _decoded: int = 0

    @property
    def frames(self) -> list[TapFrame]:
        """Decoded frames (decoded once, on first use, so the server's hot path only
        appends a reference). A message of several frames (the ``batch`` cap) gives
        one frame per line."""
        if self._frames is None or self._decoded != len(self.raw):
            out: list[TapFrame] = []
            for t, is_out, text in self.raw:
                for line in text.split("\n") if is_out else (text,):
                    out.append(self._decode(t, is_out, line.encode()))
            self._frames = out
            self._decoded = len(self.raw)
        return self._frames

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
            return msg

        async def tapped_send(msg: Message) -> None:
            if msg["type"] == "websocket.send":
                text = msg.get("text")
                if text is not None:
                    raw.append((clock(), True, str(text)))
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


# ------------------------------------------------------------------ the server thread
#: The name of the thread :class:`ServerThread` serves on (its log lines carry it).
SERVER_THREAD: Final = "unbroken-server"


class ServerThread:
    """Serve an ASGI app (an :class:`Unbroken` app, or one wrapped in middleware) with
    uvicorn on loopback, on a thread of its own with its own event loop."""

    def __init__(
        self,
        app: Unbroken,
        asgi: ASGIApp | None = None,
        *,
        path: str = "/ws",
        host: str = "127.0.0.1",
        netns: Namespace | None = None,
    ) -> None:
        self.app = app
        self.asgi = asgi
        self.path = path
        self.host = host
        self.netns = netns
        """Serve from this network namespace (the thread enters it for its whole life)."""
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's own WebSocket URL (without the proxy)."""
        return f"ws://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=SERVER_THREAD, daemon=True)
        self.thread.start()
        self.port = await asyncio.wait_for(asyncio.wrap_future(self._ready), 30)

    def _main(self) -> None:
        try:
            with self.netns.entered() if self.netns is not None else contextlib.nullcontext():
                asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starter
            self.error = exc
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        target: Any = self.asgi if self.asgi is not None else self.app.asgi(self.path)
        async with serve(
            target, host=self.host, path=self.path, ws_max_size=self.app.limits.max_frame
        ) as srv:
            self._ready.set_result(srv.port)
            await self._stop.wait()

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the server's loop and return its result here."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), self.loop))

    async def cpu_time(self) -> float:
        """CPU seconds the server thread has used so far."""

        async def read() -> float:
            return time.thread_time()

        return await self.call(read)

    async def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 30)

    async def __aenter__(self) -> ServerThread:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ------------------------------------------------------------------ the answering agent
@dataclass
class AnswerBook:
    """Answers the ``answer`` agent can replay, by key, with the seconds to take."""

    answers: dict[str, GeneratedAnswer] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ticks: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        answer: GeneratedAnswer,
        seconds: float = 0.0,
        key: str | None = None,
        *,
        tick: float = 0.01,
    ) -> str:
        """Register ``answer``, to be written over ``seconds`` in bursts ``tick`` seconds
        apart; returns the key to pass as ``{"answer": key}``."""
        key = key or f"a{len(self.answers)}"
        self.answers[key] = answer
        self.seconds[key] = seconds
        self.ticks[key] = tick
        return key


def answer_app(
    book: AnswerBook,
    *,
    heartbeat: float = 0.25,
    retention: Retention | None = None,
    **options: Any,
) -> Unbroken:
    """An :class:`Unbroken` app with one agent, ``answer``: it replays
    ``book.answers[input["answer"]]`` over ``book.seconds[...]`` seconds (paced against the
    clock, in bursts ``book.ticks[...]`` seconds apart) and counts its calls in
    ``book.calls``."""
    store = MemoryStore(
        retention or Retention(max_stream_bytes=256 * 1024 * 1024, max_total_bytes=2**32)
    )
    options.setdefault("shutdown_grace", 1.0)
    app = Unbroken(store=store, allow_anonymous=True, heartbeat=heartbeat, **options)

    @app.agent("answer")
    async def answer(req: Request, out: Output) -> None:
        key = str(req.input["answer"])
        book.calls[key] += 1
        events = book.answers[key].events
        seconds = book.seconds.get(key, 0.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = len(events)
        tick = book.ticks.get(key, 0.01)
        burst = max(1, math.ceil(n * tick / seconds)) if seconds > 0 else n + 1
        for i, ev in enumerate(events):
            await out.emit(ev)
            if i % burst == burst - 1:
                # the agent's pace (against the clock, so slow ticks do not stretch it)
                await asyncio.sleep(max(0.0, t0 + (i + 1) / n * seconds - loop.time()))

    return app


# ------------------------------------------------------------------ client side
def event_of(ev: StreamEvent) -> Event:
    """The protocol :class:`Event` a typed client event was made from."""
    if isinstance(ev, TextDelta):
        return Event(ev.seq, Kind.TEXT, part=ev.part, body=ev.text)
    if isinstance(ev, JsonFragment):
        return Event(ev.seq, Kind.JSON, part=ev.part, body=ev.fragment)
    if isinstance(ev, DataChunk):
        return Event(ev.seq, Kind.DATA, part=ev.part, body=ev.body)
    if isinstance(ev, PartStarted):
        schema = json.dumps(ev.schema, sort_keys=True, separators=(",", ":")) if ev.schema else ""
        return Event(
            ev.seq, Kind.PART_START, part=ev.part, part_kind=ev.kind, mime=ev.mime, schema=schema
        )
    if isinstance(ev, PartEnded):
        return Event(ev.seq, Kind.PART_END, part=ev.part, error=ev.error)
    assert isinstance(ev, StreamEnded)
    return Event(ev.seq, Kind.END, status=ev.status, error=ev.error, count=ev.seq)


class StreamRecorder:
    """Consumes a client stream and keeps every event with its arrival time.

    ``events`` are the events as the user saw them, ``times`` their monotonic arrival
    times, ``answer`` the verified answer (or ``error`` the exception that ended the
    stream). ``on_event`` is called after each event (for progress triggers).
    """

    def __init__(
        self,
        stream: Stream,
        expected: GeneratedAnswer | None = None,
        *,
        key: str = "",
        started_at: float | None = None,
        on_event: Callable[[StreamRecorder], None] | None = None,
    ) -> None:
        self.stream = stream
        self.expected = expected
        self.key = key
        self.started_at = started_at if started_at is not None else time.monotonic()
        self.on_event = on_event
        self.events: list[Event] = []
        self.times = array("d")
        self.body_bytes = 0
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.part_starts: Counter[str] = Counter()
        self.settled_at: float | None = None
        """When the client's session had the whole answer (or gave up): the user may read
        the last events a little later (:attr:`ended_at`)."""
        self._task: asyncio.Task[None] | None = None
        self._settle: asyncio.Task[None] | None = None

    def run(self) -> asyncio.Task[None]:
        """Start consuming (once); returns the task."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._consume())
            self._settle = loop.create_task(self._settled())
        return self._task

    async def _settled(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.wait()
        self.settled_at = time.monotonic()

    async def done(self) -> None:
        """Wait until the stream ended (completed or failed)."""
        await asyncio.shield(self.run())

    async def _consume(self) -> None:
        clock = time.monotonic
        try:
            async for ev in self.stream:
                self.times.append(clock())
                event = event_of(ev)
                self.events.append(event)
                if event.kind <= Kind.DATA:
                    self.body_bytes += len(event.body)
                elif event.kind == Kind.PART_START:
                    self.part_starts[event.part] += 1
                if self.on_event is not None:
                    self.on_event(self)
            self.answer = await self.stream.wait()
        except UnbrokenError as exc:
            self.error = exc
        finally:
            self.ended_at = clock()

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def count_at(self, t: float) -> int:
        """How many events the user had at monotonic time ``t``."""
        return bisect_right(self.times, t)

    def first_event_after(self, t: float) -> float | None:
        """Arrival time of the first event after monotonic time ``t``."""
        k = self.count_at(t)
        return self.times[k] if k < len(self.times) else None

    def seq_at(self, t: float) -> int:
        """The last seq the user had received at monotonic time ``t``."""
        k = self.count_at(t)
        return self.events[k - 1].seq if k else 0


# ------------------------------------------------------------------ logs and resources
@dataclass(frozen=True, slots=True)
class LogLine:
    """One captured log record. ``exc``: the exception it carried (``Type: message``),
    if any."""

    t: float
    logger: str
    level: str
    message: str
    levelno: int = logging.INFO
    exc: str = ""
    thread: str = ""

    def format(self, t0: float = 0.0) -> str:
        return f"{self.t - t0:9.4f} {self.level:<7} {self.logger}: {self.message}"


#: Loggers outside ``unbroken`` whose warnings and errors a run keeps too: an exception
#: in the ASGI server, in an asyncio callback or task, or in the WebSocket library.
OTHER_LOGGERS: Final = ("uvicorn.error", "asyncio", "websockets")


class LogCapture(logging.Handler):
    """Keeps the ``unbroken`` loggers' records (INFO and up) while active, and the
    WARNING-and-up records of ``also`` (default :data:`OTHER_LOGGERS`) without changing
    their levels.

    uvicorn reconfigures its loggers (dropping their handlers) when a server starts:
    call :meth:`ensure_attached` once the server is up."""

    def __init__(
        self,
        logger: str = "unbroken",
        *,
        isolate: bool = False,
        also: tuple[str, ...] = OTHER_LOGGERS,
    ) -> None:
        super().__init__(logging.INFO)
        self.lines: list[LogLine] = []
        self._prefix = logger
        self._logger = logging.getLogger(logger)
        self._also = [logging.getLogger(name) for name in also]
        self._isolate = isolate
        self._saved: tuple[int, bool] = (logging.NOTSET, True)

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if record.levelno < logging.WARNING and not (
            name == self._prefix or name.startswith(self._prefix + ".")
        ):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break a run
            message = str(record.msg)
        exc = ""
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            exc = f"{type(err).__name__}: {err}".strip().removesuffix(":")
        # (logging.Handler.handle holds the handler's lock: the server thread logs too)
        self.lines.append(
            LogLine(
                time.monotonic(),
                name,
                record.levelname,
                message,
                record.levelno,
                exc,
                record.threadName or "",
            )
        )

    def ensure_attached(self) -> None:
        """Attach again to any logger that lost this handler (see the class doc)."""
        for lg in (self._logger, *self._also):
            if self not in lg.handlers:
                lg.addHandler(self)

    def __enter__(self) -> LogCapture:
        lg = self._logger
        self._saved = (lg.level, lg.propagate)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
        if self._isolate:
            lg.propagate = False
        self.ensure_attached()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lg = self._logger
        for other in (lg, *self._also):
            other.removeHandler(self)
        lg.setLevel(self._saved[0])
        lg.propagate = self._saved[1]

    def of(self, prefix: str) -> list[LogLine]:
        """Lines from loggers under ``prefix`` (e.g. ``unbroken.client``)."""
        return [line for line in self.lines if line.logger.startswith(prefix)]


@dataclass(slots=True)
class ResourceSample:
    t: float
    rss: int
    log_bytes: int


class ResourceSampler:
    """Samples this process's RSS and the stream log's bytes every ``every`` seconds;
    calls ``on_limit`` once if the RSS goes over ``limit`` bytes (a guard, so a runaway
    run fails instead of taking the machine down)."""

    def __init__(
        self,
        store: object,
        every: float = 0.05,
        *,
        limit: int | None = None,
        on_limit: Callable[[ResourceSample], object] | None = None,
    ) -> None:
        self.store = store
        self.every = every
        self.limit = limit
        self.on_limit = on_limit
        self.tripped: ResourceSample | None = None
        self.samples: list[ResourceSample] = []
        self._proc = psutil.Process()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> ResourceSample:
        s = ResourceSample(
            time.monotonic(),
            self._proc.memory_info().rss,
            int(getattr(self.store, "total_bytes", 0)),
        )
        self.samples.append(s)
        if self.limit is not None and s.rss > self.limit and self.tripped is None:
            self.tripped = s
            if self.on_limit is not None:
                self.on_limit(s)
        return s

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)  # a sampling period, not synchronisation

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await reap(self._task)
        self.sample()

    @property
    def peak_rss(self) -> int:
        return max((s.rss for s in self.samples), default=0)

    @property
    def peak_log_bytes(self) -> int:
        return max((s.log_bytes for s in self.samples), default=0)


async def reap(fut: asyncio.Future[Any]) -> None:
    """Cancel ``fut`` and wait for it, keeping a cancellation of the caller itself (a
    Ctrl-C) on its way: only ``fut``'s own cancellation and errors are swallowed."""
    fut.cancel()
    try:
        await fut
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:
        log.debug("reaped a task that failed", exc_info=True)


# ------------------------------------------------------------------ the harness
#: A fast, patient policy for chaos runs: first retry at once, then up to 0.5 s apart.
CHAOS_POLICY = BackoffPolicy(base=0.05, cap=0.5, max_attempts=None, deadline=30.0)


class ChaosHarness:
    """A real server (own thread), a :class:`FaultProxy` in front of it, clients and
    verifiers: everything one chaos test needs.

    ``heartbeat``: the server's (a blackhole is found in about three of them).
    ``seed``: the proxy's (jitter, slicing) and the clients' backoff (``client(seed=)``).
    ``fault_log``: a JSON-lines path for the proxy's records. ``app_options`` go to
    :class:`Unbroken`.

    ``topology``: a :class:`~unbroken.chaos.kernel.Topology` (kernel-level faults, root):
    the server thread serves from its server namespace, and the proxy connects to it
    across the router, so the router's faults hit the proxy-to-server TCP connections.
    Enter ``topology.client`` around the harness (``with topology.client.entered():``)
    so the proxy and the clients live in the client namespace.
    """

    def __init__(
        self,
        *,
        heartbeat: float = 0.25,
        seed: int = 0,
        fault_log: str | None = None,
        tap: bool = True,
        retention: Retention | None = None,
        topology: Topology | None = None,
        **app_options: Any,
    ) -> None:
        self.book = AnswerBook()
        self.app = answer_app(self.book, heartbeat=heartbeat, retention=retention, **app_options)
        self.tap = WireTap(self.app.asgi()) if tap else None
        self.topology = topology
        if topology is not None:
            self.server = ServerThread(
                self.app, self.tap, host=topology.addresses.server, netns=topology.server
            )
        else:
            self.server = ServerThread(self.app, self.tap)
        self.seed = seed
        self.fault_log = fault_log
        self._proxy: FaultProxy | None = None
        self.clients: list[Client] = []
        self.recorders: list[StreamRecorder] = []

    @property
    def proxy(self) -> FaultProxy:
        """The fault proxy between the clients and the server."""
        assert self._proxy is not None, "use the harness as `async with ChaosHarness() as h`"
        return self._proxy

    @property
    def store(self) -> MemoryStore:
        store = self.app.store
        assert isinstance(store, MemoryStore)
        return store

    @property
    def url(self) -> str:
        """The WebSocket URL through the proxy."""
        return f"ws://127.0.0.1:{self.proxy.port}/ws"

    async def __aenter__(self) -> ChaosHarness:
        await self.server.start()
        self._proxy = FaultProxy(
            upstream=(self.server.host, self.server.port),
            seed=self.seed,
            fault_log=self.fault_log,
            close_grace=0.5,
            flush_timeout=0.5,
        )
        await self._proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        if self._proxy is not None:
            await self._proxy.stop()
        await self.server.stop()

    def client(
        self,
        *,
        policy: BackoffPolicy | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> Client:
        """A :class:`Client` through the proxy (use it as ``async with``); closed with the
        harness if still open."""
        options.setdefault("ping_every", 0.5)
        options.setdefault("open_timeout", 2.0)
        client = Client(
            self.url,
            policy=policy or CHAOS_POLICY,
            seed=self.seed if seed is None else seed,
            **options,
        )
        self.clients.append(client)
        return client

    async def start(
        self,
        client: Client,
        answer: GeneratedAnswer,
        *,
        seconds: float = 0.0,
        tick: float = 0.01,
        key: str | None = None,
        req: str | None = None,
        on_event: Callable[[StreamRecorder], None] | None = None,
    ) -> StreamRecorder:
        """Start the ``answer`` agent replaying ``answer`` over ``seconds`` (in bursts
        ``tick`` seconds apart); returns a running :class:`StreamRecorder`."""
        key = self.book.add(answer, seconds, key, tick=tick)
        t0 = time.monotonic()
        stream = await client.start("answer", {"answer": key}, req=req)
        rec = StreamRecorder(stream, answer, key=key, started_at=t0, on_event=on_event)
        self.recorders.append(rec)
        rec.run()
        return rec

    # -------------------------------------------------------------- verification
    def verify_client(self, rec: StreamRecorder) -> Verdict:
        """The client's events against the generated answer, with the end digest."""
        assert rec.expected is not None
        digest = rec.answer.digest if rec.answer is not None else None
        return StateVerifier().verify_answer(
            rec.expected,
            rec.events,
            stream_id=rec.stream.id,
            epoch=self.store.epoch,
            end_digest=digest or None,
        )

    async def verify_log(self, rec: StreamRecorder, *, require_end: bool = True) -> Verdict:
        """The server's log of the stream: seqs 1..N, chain against stored digests, parts,
        and no more events or bytes than the answer has (no overflow)."""
        expected = rec.expected
        limits = LogLimits()
        if expected is not None:
            want = expected.expected_events()
            limits = LogLimits(max_events=len(want), max_bytes=sum(len(payload(e)) for e in want))
        verifier = StateVerifier(log=self.store, limits=limits)
        stream = rec.stream.id
        return await self.server.call(
            lambda: verifier.buffer_integrity_verdict(stream, require_end=require_end)
        )

    async def digest_at(self, stream: str, seq: int) -> bytes | None:
        """The chain digest after event ``seq`` of ``stream`` in the server's log."""
        return await self.server.call(lambda: self.store.digest_at(stream, seq))

    async def log_head(self, stream: str) -> int:
        """The head seq of ``stream`` in the server's log (0 if unknown)."""

        async def head() -> int:
            meta = await self.store.meta(stream)
            return meta.head if meta is not None else 0

        return await self.server.call(head)

    async def snapshot(self) -> dict[str, Any]:
        """The server's state now: each stream's log head, status and bytes, and each
        connection's attachments (sent, acked, bytes in flight)."""

        async def take() -> dict[str, Any]:
            streams: dict[str, Any] = {}
            for rec in list(self.recorders):
                meta = await self.store.meta(rec.stream.id)
                if meta is not None:
                    streams[rec.stream.id] = {
                        "answer": rec.key,
                        "head": meta.head,
                        "status": meta.status,
                        "log_bytes": meta.nbytes,
                        "head_digest": meta.digest.hex(),
                    }
            conns = []
            for conn in list(self.app.connections):
                conns.append(
                    {
                        "conn": conn.id,
                        "client": conn.info.client,
                        "attachments": {
                            s: {
                                "sent": a.sent,
                                "acked": a.acked,
                                "inflight_bytes": a.inflight_bytes,
                                "ended": a.ended,
                            }
                            for s, a in list(conn.atts.items())
                        },
                    }
                )
            return {
                "t": time.monotonic(),
                "log_bytes": self.store.total_bytes,
                "streams": streams,
                "connections": conns,
                "runs": len(self.app.hub.runs),
            }

        return await self.server.call(take)


@contextlib.asynccontextmanager
async def chaos_harness(**options: Any) -> AsyncIterator[ChaosHarness]:
    """``async with chaos_harness() as h``: a :class:`ChaosHarness`."""
    async with ChaosHarness(**options) as h:
        yield h


__all__ = [
    "CHAOS_POLICY",
    "OTHER_LOGGERS",
    "SERVER_THREAD",
    "AnswerBook",
    "ChaosHarness",
    "LogCapture",
    "LogLine",
    "ResourceSample",
    "ResourceSampler",
    "ServerThread",
    "StreamRecorder",
    "TapConnection",
    "TapFrame",
    "WireTap",
    "answer_app",
    "chaos_harness",
    "event_of",
    "reap",
]
