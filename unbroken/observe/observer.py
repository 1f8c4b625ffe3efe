"""The :class:`Observer`: what the server tells about itself, in one place.

The server calls it at each connection event (connect, hello, start, resume,
detach, close, refusal) and each run's start and end; it counts (metrics), opens
and ends spans (tracing) and writes the structured event line (logs). The hot
path (every frame) touches only :attr:`Observer.counts`, plain integers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import logs
from .counts import Counts, Live
from .tracing import Tracing

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .workers import WorkerMetrics


#: Close codes counted by name in ``unbroken_disconnects_total`` (others: ``other``).
KNOWN_CODES: Final = frozenset(
    {1000, 1001, 1005, 1006, 1007, 1009, 1011, 1012, 4000, 4001, 4002, 4003, 4004, 4005, 4008, 4010}
)
#: A close by the server with these codes is a refusal of the peer, for this reason.
REFUSAL_BY_CODE: Final = {
    4000: "bad_frame",
    1007: "bad_frame",
    1009: "bad_frame",
    4001: "auth",
    4002: "auth",
    4003: "forbidden",
    4005: "version",
    4008: "overloaded",
    1012: "shutting_down",
}
#: Streams remembered between their detach and a resume (recovery latency), at most.
MAX_DETACHED: Final = 10_000
#: A detach older than this is forgotten (its resume, if any, is not timed).
DETACHED_TTL: Final = 600.0


class Observer:
    """Metrics, traces and the connection event log of one app.

    ``metrics``: count and register the ``unbroken_*`` metrics (off: the counters
    still tick, nothing is registered or served). ``registry``: where to register
    them (default: a registry of this app's own; ``prometheus_client.REGISTRY`` for
    the process's). ``traces``: open OpenTelemetry spans when the API is installed
    (``tracer_provider``: a provider of your own, default the global one).
    ``event_log``: log each connection event as a structured record on
    ``unbroken.events`` (``unbroken serve --log-format json`` turns it on).
    """

    def __init__(
        self,
        *,
        metrics: bool = True,
        registry: CollectorRegistry | None = None,
        traces: bool = True,
        tracer_provider: Any = None,
        event_log: bool = False,
    ) -> None:
        self.counts = Counts()
        self.tracing = Tracing(traces, tracer_provider)
        self.event_log = event_log
        self._registry: CollectorRegistry | None = None
        self._wanted_registry = registry
        self.metrics = metrics
        self._live: Callable[[], Live] | None = None
        self._collector: Any = None
        #: set in each worker of ``unbroken serve --workers N``: scrapes sum all workers
        self.workers: WorkerMetrics | None = None
        #: stream -> monotonic time it was left attached nowhere by a lost connection
        self._detached: OrderedDict[str, float] = OrderedDict()
        #: stream -> connections it is attached to now (a resume may come before the
        #: server noticed the old connection was lost: that detach is not a wait)
        self._attached: dict[str, int] = {}

    # ---- wiring
    def bind(self, live: Callable[[], Live]) -> None:
        """Register the metrics over ``live`` (the app's figures at scrape time): at
        once in a registry given, in the app's own when it is first read (so a server
        not scraped yet has not imported ``prometheus_client``, ~1.8 MB)."""
        self._live = live
        if self.metrics and self._wanted_registry is not None:
            self._register()

    @property
    def registry(self) -> CollectorRegistry | None:
        """Where the metrics are registered (None: off, or not bound to an app yet)."""
        if self._registry is None and self.metrics:
            self._register()
        return self._registry

    @property
    def has_metrics(self) -> bool:
        """Metrics are on and bound to an app (:attr:`registry` is not None), without
        importing ``prometheus_client`` to tell."""
        return self.metrics and self._live is not None

    def _register(self) -> None:
        if self._collector is not None or self._live is None:
            return
        from prometheus_client import CollectorRegistry

        from .metrics import UnbrokenCollector

        registry = self._wanted_registry
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
        self._collector = UnbrokenCollector(self.counts, self._live)
        registry.register(self._collector)
        self._registry = registry

    def disable_metrics(self) -> None:
        """Unregister the metrics (``unbroken serve --no-metrics``)."""
        self.metrics = False
        if self._collector is not None and self._registry is not None:
            self._registry.unregister(self._collector)
        self._collector = None
        self._registry = None

    # ---- connections
    def connect(self, conn: str, client: str) -> ConnectionObserver:
        """A connection's serving starts."""
        self.counts.connections += 1
        return ConnectionObserver(self, conn, client)

    def refused(self, reason: str, client: str = "", conn: str = "", **fields: Any) -> None:
        """A connection or request refused for ``reason`` (auth, origin, overloaded,
        version, bad_frame, rate_limited, shutting_down, forbidden)."""
        refusals = self.counts.refusals
        refusals[reason] = refusals.get(reason, 0) + 1
        if self.event_log:
            logs.emit("refusal", reason=reason, client=client, conn=conn or None, **fields)

    def refused_close(self, code: int, client: str) -> None:
        """A WebSocket closed right after its handshake with ``code`` (no connection)."""
        self.refused(REFUSAL_BY_CODE.get(code, "other"), client, code=code)

    def _attach(self, stream: str) -> None:
        self._attached[stream] = self._attached.get(stream, 0) + 1

    def _detach(self, stream: str, lost: bool) -> None:
        n = self._attached.get(stream, 0) - 1
        if n > 0:
            self._attached[stream] = n
            return
        self._attached.pop(stream, None)
        if lost:
            self._detached_now(stream)

    def _detached_now(self, stream: str) -> None:
        now = time.monotonic()
        gone = self._detached
        gone[stream] = now
        gone.move_to_end(stream)
        while gone and (len(gone) > MAX_DETACHED or next(iter(gone.values())) < now - DETACHED_TTL):
            gone.popitem(last=False)

    def _recovered(self, stream: str) -> float | None:
        at = self._detached.pop(stream, None)
        if at is None:
            return None
        took = time.monotonic() - at
        if took > DETACHED_TTL:
            return None
        self.counts.recovery(took)
        return took

    # ---- runs
    def run_started(self, stream: str, agent: str) -> Any:
        """An agent run starts: its span (or ``None``)."""
        return self.tracing.run(stream, agent)

    def run_ended(self, span: Any, events: int, status: str) -> None:
        """An agent run ended having written ``events`` events."""
        self.counts.events_in_done += events
        Tracing.end(span, status=status, events=events)


class _Attached:
    __slots__ = ("at", "how", "span")

    def __init__(self, at: float, how: str, span: Any) -> None:
        self.at = at
        self.how = how
        self.span = span


class ConnectionObserver:
    """The observer's view of one connection (made by :meth:`Observer.connect`)."""

    __slots__ = ("_atts", "_hello_ms", "_t0", "client", "conn", "obs", "span")

    def __init__(self, obs: Observer, conn: str, client: str) -> None:
        self.obs = obs
        self.conn = conn
        self.client = client
        self._t0 = time.monotonic()
        self._hello_ms: float | None = None
        self._atts: dict[str, _Attached] = {}
        self.span = obs.tracing.connection(conn, client)
        if obs.event_log:
            logs.emit("connect", conn=conn, client=client)

    def _ms(self, since: float | None = None) -> float:
        return round((time.monotonic() - (self._t0 if since is None else since)) * 1000, 3)

    def hello(self, principal: str, caps: list[str]) -> None:
        """The ``hello`` was accepted (authenticated as ``principal``)."""
        self._hello_ms = self._ms()
        Tracing.event(self.span, "hello", principal=principal)
        if self.obs.event_log:
            logs.emit(
                "hello", conn=self.conn, principal=principal, caps=caps, hello_ms=self._hello_ms
            )

    def attach(self, stream: str, how: str, after: int = 0, **fields: Any) -> None:
        """``stream`` is now pumped to this connection (``how``: start | resume)."""
        obs = self.obs
        counts = obs.counts
        counts.attachments[how] = counts.attachments.get(how, 0) + 1
        recovery: float | None = None
        if how == "resume":
            key = ("resumed", "")
            counts.resumes[key] = counts.resumes.get(key, 0) + 1
            recovery = obs._recovered(stream)
        obs._attach(stream)
        span = obs.tracing.attachment(self.span, self.conn, stream, how, after)
        self._atts[stream] = _Attached(time.monotonic(), how, span)
        if obs.event_log:
            extra: dict[str, Any] = {}
            if how == "resume":
                extra["after"] = after
                if recovery is not None:
                    extra["recovery_ms"] = round(recovery * 1000, 3)
            logs.emit(how, conn=self.conn, stream=stream, **extra, **fields)

    def resume_refused(self, stream: str, reason: str, after: int) -> None:
        """A resume answered ``gone`` (``reason``: unknown, expired, epoch, ...)."""
        counts = self.obs.counts
        key = ("gone", reason)
        counts.resumes[key] = counts.resumes.get(key, 0) + 1
        if self.obs.event_log:
            logs.emit("resume_refused", conn=self.conn, stream=stream, reason=reason, after=after)

    def detach(self, stream: str, cause: str, sent: int | None = None) -> None:
        """``stream`` is no longer pumped here: ``cause`` is ``ended`` (its end was
        sent), ``replaced`` (attached again), ``expired``/``diverged`` (the log let it
        go) or ``disconnect`` (the connection closed). Idempotent."""
        att = self._atts.pop(stream, None)
        if att is None:
            return
        self.obs._detach(stream, cause == "disconnect")
        if sent is not None:
            Tracing.end(att.span, detach_cause=cause, last_seq=sent)
        else:
            Tracing.end(att.span, detach_cause=cause)
        if self.obs.event_log:
            logs.emit(
                "detach",
                conn=self.conn,
                stream=stream,
                cause=cause,
                seq=sent,
                attached_ms=self._ms(att.at),
            )

    def detach_all(self, cause: str, sent: dict[str, int] | None = None) -> None:
        """Every stream still attached is detached for ``cause``."""
        for stream in list(self._atts):
            self.detach(stream, cause, None if sent is None else sent.get(stream))

    def closed(self, code: int, reason: str, by_server: bool) -> None:
        """The connection ended with ``code`` (``by_server``: this side closed)."""
        obs = self.obs
        counts = obs.counts
        key = str(code) if code in KNOWN_CODES else "other"
        counts.disconnects[key] = counts.disconnects.get(key, 0) + 1
        self.detach_all("disconnect")
        if by_server:
            if code == 4004 or (code == 1001 and reason.startswith(("send timeout", "peer gone"))):
                counts.heartbeat_timeouts += 1
            refusal = REFUSAL_BY_CODE.get(code)
            if refusal is not None and refusal != "shutting_down":
                obs.refused(refusal, self.client, self.conn, code=code)
        elif code in (1007, 1009):  # closed by the server's WebSocket layer
            obs.refused("bad_frame", self.client, self.conn, code=code)
        Tracing.end(self.span, close_code=code, close_reason=reason)
        if obs.event_log:
            logs.emit(
                "close",
                conn=self.conn,
                code=code,
                reason=reason,
                by="server" if by_server else "peer",
                hello_ms=self._hello_ms,
                duration_ms=self._ms(),
            )
