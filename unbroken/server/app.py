"""The :class:`Unbroken` application object: agents, limits, auth; an ASGI app itself.

It builds one frozen :class:`~unbroken.server.config.ServerConfig` from its
arguments and hands each connection that, the hub, the store, the ``authenticate``
hook and its set of connections (:mod:`unbroken.server.asgi`), never itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..observe import Live, Observer
from ..protocol import versions
from ..protocol.codes import CloseCode
from ..protocol.frames import (
    DEFAULT_MAX_CLIENT_FRAME,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_HELLO_FRAME,
    Limits,
)
from ..store.base import StreamLog
from ..store.memory import MemoryStore
from .admission import AdmissionLimits
from .agent import Agent, Principal
from .asgi import ASGIApp, Receive, Scope, Send
from .config import ServerConfig
from .connection import Authenticate, Connection
from .guard import ConnectionGuard, ConnectionLimits
from .hub import Hub, Redact
from .policy import LivePolicy, OriginPolicy
from .shape import HOOK_ARGS, HOOK_SHAPE, agent_shape, check_callable

if TYPE_CHECKING:
    from fastapi import APIRouter

    from ..observe.metrics import MetricsApp

log = logging.getLogger(__name__)


#: what a client may name in ``start`` (protocol: ``agent``)
_AGENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")


def _check_agent(name: str, fn: object) -> None:
    """Refuse, when it is registered, an agent the hub could not call (that it
    returns an awaitable is checked when it runs)."""
    check_callable(
        fn,
        f"agent {name!r}",
        "the request and its output",
        agent_shape(fn),
        ", it writes (`await out.text(token)`)",
    )


def _check_hook(hook: object) -> None:
    """Refuse, when the app is built, an ``authenticate`` hook that could never
    be called (that it returns an awaitable is checked on each call)."""
    check_callable(hook, "the authenticate hook", HOOK_ARGS, HOOK_SHAPE, ", it returns a Principal")


class Unbroken:
    """An unbroken server application.

    >>> app = Unbroken(allow_anonymous=True)
    >>> @app.agent("echo")
    ... async def echo(req, out):
    ...     await out.text(str(req.input))

    ``store`` is the stream log (default: a :class:`MemoryStore`). Pass
    ``authenticate`` (``async (hello, info) -> Principal``, raising
    :class:`~unbroken.errors.AuthError`; ``auth=`` is the same hook, e.g. a
    :class:`~unbroken.server.auth.JWTAuth`) or set ``allow_anonymous=True``.
    ``admission`` limits new work (:class:`~unbroken.server.admission.AdmissionLimits`).
    ``redact`` (``(exc) -> str``) is what clients are told when an agent raises
    (default :func:`~unbroken.server.hub.redact_exception`: ``internal error in
    agent: ValueError``; the message and traceback go to the server log only;
    :func:`~unbroken.server.hub.reveal_exception` passes the message through).
    ``heartbeat`` is seconds of quiet before the server sends ``hb``;
    ``run_timeout`` limits every run (per agent: ``@app.agent(timeout=…)``);
    ``abandon_after`` cancels runs nobody has been attached to for that long
    (default: runs always finish); ``shutdown_grace`` bounds the drain;
    ``sweep_every`` is how often retention (TTL) is applied, in seconds;
    ``coalesce`` is the shortest time between two appends of a run, and
    between two ``events`` frames of a connection, while tokens trickle in
    fast (0: every token at once); the first token after a quiet spell is
    never held back, so a paced model's tokens go out as they come.
    ``adaptive`` (on) lets each stream's flow window follow its link: on a link
    slower than the stream the backlog waits in the log and goes out in fewer,
    larger frames (docs/topics/flow-control.md); off, the window is fixed.

    Hostile peers (docs/reference/security.md): ``max_client_frame`` is the largest frame
    a client may send once its ``hello`` is accepted (default 1 MiB, at most
    ``max_frame``; told to the client in ``welcome.limits``), ``max_hello_frame``
    the largest before that (64 KiB); ``connection_limits`` caps connections
    (:class:`~unbroken.server.guard.ConnectionLimits`: a handshake deadline, a
    cap on open connections, an optional per-IP cap), enforced below HTTP when
    served by ``unbroken serve``. ``health_detail`` adds the epoch and counts to
    ``/healthz`` (off: it answers anyone); ``expose_agent_names`` lists the
    agents in an ``unknown_agent`` error (off: it tells a prober what exists).
    ``peer_silence`` (default ``3 * heartbeat + 0.3``): a connection with a
    stream stalled on a full flow window that hears nothing from its client for
    that long is closed with 4004 (the client's frames are being lost).
    ``request_rate``/``request_burst``: frames a connection may send per second
    that get an answer (a flood is read at that pace, TCP pushes back);
    ``max_outbox``: bytes of answers a connection may leave unread before it is
    closed with 4008.

    ``observe``: metrics, traces and the connection event log
    (:class:`~unbroken.observe.Observer`; default: metrics in a registry of this
    app's own, spans when OpenTelemetry is installed, no event log). ``metrics_path``
    serves the metrics at that path of :meth:`asgi` (``unbroken serve``: ``/metrics``
    unless ``--no-metrics``); :meth:`metrics_app` is an ASGI app to mount anywhere.

    ``protocols``: the wire protocol versions spoken (``("v2", "v1")``, or one of
    them), chosen per connection: the newest the client offers; a client that offers
    none of them is closed with 4005, whose reason lists these
    (docs/reference/protocol.md §2). :meth:`set_protocols` changes them on a
    running app: the next handshakes see them, open connections keep theirs.

    ``close_store``: the lifespan's shutdown closes ``store`` once the runs are
    drained (a RedisStore's connections, tailer and lease loop). Default: any store
    but a :class:`MemoryStore` (it holds nothing outside the process, and its streams
    stay readable after the server stopped). ``False`` when the store outlives the
    app (shared with another app in the same process, or the app served again).

    ``policy``: which web pages may open a WebSocket and read ``/healthz``
    (:class:`~unbroken.server.policy.OriginPolicy`; docs/reference/security.md).
    The default refuses a browser handshake whose ``Origin`` is not the server's
    own hostname; clients without ``Origin`` (not browsers) are unaffected. It is
    live: ``app.policy.update(allowed_origins=["https://app.example.com"])``
    applies to new handshakes at once and never cuts open connections.

    The app is an ASGI application (``uvicorn.run(app)``, ``api.mount("/agent",
    app)``): the WebSocket at ``/ws``, ``/healthz``, and its lifespan; ``asgi(path)``
    gives one with the WebSocket elsewhere. The per-connection settings are in
    :attr:`config` (frozen).
    """

    def __init__(
        self,
        store: StreamLog | None = None,
        *,
        authenticate: Authenticate | None = None,
        auth: Authenticate | None = None,
        allow_anonymous: bool = False,
        heartbeat: float = 0.4,
        run_timeout: float | None = None,
        abandon_after: float | None = None,
        shutdown_grace: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        window: int = 1024 * 1024,
        frame_cap: int = 256 * 1024,
        max_chunk: int = 1024 * 1024,
        max_streams_per_connection: int = 1000,
        start_rate: float = 100.0,
        start_burst: int = 200,
        hello_timeout: float = 10.0,
        send_timeout: float = 30.0,
        peer_silence: float | None = None,
        request_rate: float = 200.0,
        request_burst: int = 400,
        max_outbox: int = 1024 * 1024,
        sweep_every: float = 1.0,
        coalesce: float = 0.001,
        adaptive: bool = True,
        max_client_frame: int = DEFAULT_MAX_CLIENT_FRAME,
        max_hello_frame: int = DEFAULT_MAX_HELLO_FRAME,
        connection_limits: ConnectionLimits | None = None,
        health_detail: bool = False,
        expose_agent_names: bool = False,
        admission: AdmissionLimits | None = None,
        policy: OriginPolicy | LivePolicy | None = None,
        redact: Redact | None = None,
        observe: Observer | None = None,
        metrics_path: str | None = None,
        protocols: str | Sequence[str] = versions.DEFAULT,
        close_store: bool | None = None,
    ) -> None:
        #: metrics, traces and the connection event log (docs/how-to/metrics.md)
        self.observe = observe if observe is not None else Observer()
        #: where :meth:`asgi` serves the metrics (None: not served there)
        self.metrics_path = metrics_path
        self.store: StreamLog = store if store is not None else MemoryStore()
        if auth is not None and authenticate is not None:
            raise ConfigError("pass auth= or authenticate=, not both (they are the same hook)")
        self.authenticate = auth if auth is not None else authenticate
        if self.authenticate is not None:
            _check_hook(self.authenticate)
        self.shutdown_grace = shutdown_grace
        #: the lifespan's shutdown closes :attr:`store` after the drain (default:
        #: any store but a MemoryStore, which holds nothing outside this process)
        self.close_store = (
            close_store if close_store is not None else not isinstance(self.store, MemoryStore)
        )
        #: what every connection is configured with (frozen; built once, here)
        self.config = ServerConfig(
            heartbeat=heartbeat,
            limits=Limits(
                max_frame=max_frame,
                window=window,
                max_streams=max_streams_per_connection,
                max_chunk=max_chunk,
                max_client_frame=min(max_client_frame, max_frame),
            ),
            frame_cap=frame_cap,
            coalesce=coalesce,
            adaptive=adaptive,
            max_hello_frame=min(max_hello_frame, max_client_frame, max_frame),
            start_rate=start_rate,
            start_burst=start_burst,
            request_rate=request_rate,
            request_burst=request_burst,
            max_outbox=max_outbox,
            peer_silence=peer_silence if peer_silence is not None else 3 * heartbeat + 0.3,
            send_timeout=send_timeout,
            hello_timeout=hello_timeout,
            allow_anonymous=allow_anonymous,
            expose_agent_names=expose_agent_names,
            protocols=versions.normalize(protocols),
        )
        self.connection_limits = (
            connection_limits if connection_limits is not None else ConnectionLimits()
        )
        #: WebSocket sessions at once (the guard caps sockets below this, when it runs)
        self.max_connections = self.connection_limits.resolved_max_connections()
        #: set by :func:`unbroken.server.serving.uvicorn_config` (``unbroken serve``)
        self.guard: ConnectionGuard | None = None
        self.health_detail = health_detail
        #: the origin policy in force (:class:`~unbroken.server.policy.LivePolicy`):
        #: ``app.policy.update(allowed_origins=[…])`` changes it for new handshakes
        self.policy: LivePolicy = policy if isinstance(policy, LivePolicy) else LivePolicy(policy)
        self._served: ASGIApp | None = None  # what __call__ serves (built at first use)
        self.agents: dict[str, tuple[Agent, float | None]] = {}
        #: the connections being served (each adds and removes itself)
        self.connections: set[Connection] = set()
        self.hub = Hub(
            self.store,
            self.agents,
            max_chunk=max_chunk,
            run_timeout=run_timeout,
            abandon_after=abandon_after,
            sweep_every=sweep_every,
            coalesce=coalesce,
            admission=admission,
            redact=redact,
            observer=self.observe,
        )
        self.observe.bind(self._live)

    def _live(self) -> Live:
        """The figures ``/metrics`` reads from the app at scrape time (copies taken at
        once: a scrape may come from another thread, with the default registry)."""
        hub, store = self.hub, self.store
        held = getattr(store, "total_bytes", None)
        if held is None:
            held = getattr(store, "held_bytes", None)
        return Live(
            connections=len(self.connections),
            attachments=sum(len(c.atts) for c in list(self.connections)),
            runs=len(hub.runs),
            run_events=sum(run.producer.seq for run in list(hub.runs.values())),
            log_bytes=held,
            loop_lag=hub.gate.lag,
            admission_refusals=dict(hub.gate.refused),
            redis=getattr(store, "redis_counts", None),
            socket_refusals=self._socket_refusals(),
        )

    def _socket_refusals(self) -> dict[str, int]:
        """The connection guard's refusals, by the reasons ``/metrics`` gives them."""
        if self.guard is None:
            return {}
        counts = self.guard.stats()
        return {
            "socket_full": counts.get("refused_full", 0),
            "per_ip": counts.get("refused_ip", 0),
            "handshake_timeout": counts.get("handshake_timeouts", 0),
        }

    def metrics_app(self) -> MetricsApp:
        """An ASGI app serving this app's Prometheus metrics (``GET``): mount it,
        e.g. ``api.mount("/metrics", app.metrics_app())``. Raises
        :class:`~unbroken.errors.ConfigError` when metrics are off."""
        registry = self.observe.registry
        if registry is None:
            raise ConfigError(
                "metrics are off for this app: build it with Unbroken(observe=Observer())"
            )
        from ..observe.metrics import MetricsApp

        return MetricsApp(registry, self.observe.workers)

    # read-only views of the config (the names the constructor takes)
    @property
    def heartbeat(self) -> float:
        return self.config.heartbeat

    @property
    def limits(self) -> Limits:
        return self.config.limits

    @property
    def max_client_frame(self) -> int:
        """Largest client frame after ``hello`` (bytes)."""
        return self.config.max_client_frame

    @property
    def max_hello_frame(self) -> int:
        """Largest client frame before ``hello`` is accepted (bytes)."""
        return self.config.max_hello_frame

    @property
    def allow_anonymous(self) -> bool:
        return self.config.allow_anonymous

    @property
    def expose_agent_names(self) -> bool:
        return self.config.expose_agent_names

    @property
    def frame_cap(self) -> int:
        return self.config.frame_cap

    @property
    def coalesce(self) -> float:
        return self.config.coalesce

    @property
    def peer_silence(self) -> float:
        return self.config.peer_silence

    @property
    def protocols(self) -> tuple[str, ...]:
        """The wire protocol versions spoken, newest first (:meth:`set_protocols`)."""
        return self.config.protocols

    def set_protocols(self, protocols: str | Sequence[str]) -> None:
        """Speak ``protocols`` from the next handshake on (``("v2",)``, ``"v1,v2"``);
        open connections keep the version they negotiated (a rolling upgrade's
        last step without a restart). Raises :class:`~unbroken.errors.ConfigError`
        for an unknown name or an empty list (the versions in force stay)."""
        self.config = dataclasses.replace(self.config, protocols=versions.normalize(protocols))

    def agent(
        self, name: str, *, timeout: float | None = None, stall_timeout: float | None = None
    ) -> Callable[[Agent], Agent]:
        """Register an agent: ``@app.agent("name")`` over ``async def f(request, out)``.

        ``timeout`` limits each run; ``stall_timeout``: a run silent for that long
        (no output) ends ``failed`` with ``stalled: no output for Ns`` instead of
        hanging its clients (default: the admission's ``stall_timeout``)."""
        if not isinstance(name, str):
            raise ConfigError(
                f"app.agent() takes the agent's name, not {type(name).__name__}: write "
                '@app.agent("name") above `async def name(req, out):`'
            )
        if _AGENT_NAME.match(name) is None:
            raise ConfigError(
                f"bad agent name {name!r}: 1 to 128 of A-Z a-z 0-9 _ . : - (clients "
                "start it by this name)"
            )
        if stall_timeout is not None and stall_timeout <= 0:
            raise ConfigError("stall_timeout must be positive")

        def register(fn: Agent) -> Agent:
            _check_agent(name, fn)
            if name in self.agents:
                raise ConfigError(f"an agent named {name!r} is already registered")
            self.agents[name] = (fn, timeout)
            if stall_timeout is not None:
                self.hub.stall_timeouts[name] = stall_timeout
            return fn

        return register

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting runs, close connections with 1012 (come back), drain runs."""
        self.hub.accepting = False
        conns = list(self.connections)
        log.info("shutdown connections=%d runs=%d", len(conns), len(self.hub.runs))
        await asyncio.gather(
            *(c.close(CloseCode.SERVICE_RESTART, "server restarting") for c in conns),
            return_exceptions=True,
        )
        await self.hub.shutdown(self.shutdown_grace if grace is None else grace)

    # ------------------------------------------------------------ ASGI
    def _require_auth(self, what: str) -> None:
        if self.authenticate is None and not self.allow_anonymous:
            raise ConfigError(
                f"{what}: pass authenticate=… to Unbroken() to identify principals from the "
                "hello token, or allow_anonymous=True to let anyone connect"
                + (", or give router() a principal= dependency" if what == "router()" else "")
            )

    def asgi(self, path: str = "/ws") -> ASGIApp:
        """An ASGI app with the WebSocket at ``path`` and ``/healthz``; mount it
        anywhere, or serve it alone (its lifespan drains runs on shutdown).

        Raises :class:`~unbroken.errors.ConfigError` unless ``authenticate`` is set
        or ``allow_anonymous=True``.
        """
        self._require_auth("asgi()")
        return ASGIApp(self, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app is itself an ASGI app: ``app.asgi()`` (WebSocket at ``/ws``)."""
        served = self._served
        if served is None:
            served = self._served = self.asgi()
        await served(scope, receive, send)

    def router(
        self,
        path: str = "/ws",
        dependencies: Sequence[Any] | None = None,
        principal: Callable[..., Awaitable[Principal] | Principal] | None = None,
    ) -> APIRouter:
        """A FastAPI ``APIRouter`` with the WebSocket route; see :mod:`unbroken.server.fastapi`.

        ``principal`` is a FastAPI dependency returning a :class:`Principal` (typed
        on ``HTTPConnection``); without it the app's ``authenticate`` hook or
        ``allow_anonymous=True`` is required.
        """
        from .fastapi import build_router

        if principal is None:
            self._require_auth("router()")
        return build_router(self, path, dependencies=dependencies, principal=principal)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """ASGI lifespan: use as ``FastAPI(lifespan=app.lifespan)`` to drain on shutdown,
        then close the store (unless ``close_store=False``).

        Startup (re)opens the app for new runs, so an app object may be served
        again after a shutdown (tests, in-process restarts; with
        ``close_store=False`` to keep its streams).
        """
        self.hub.accepting = True
        self.hub.ensure_started()
        try:
            yield
        finally:
            try:
                await self.shutdown()
            finally:
                if self.close_store:
                    await self._close_store()

    async def _close_store(self) -> None:
        """Close the store after the drain; a failure is logged, never raised (the
        process is stopping: what is left is released at its exit)."""
        try:
            await self.store.close()
        except Exception:
            log.exception("closing the store failed")
        else:
            log.info("store closed")
