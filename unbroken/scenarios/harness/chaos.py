"""The harness: a real server on its own thread, a :class:`~unbroken.chaos.FaultProxy` in
front of it, clients and verifiers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...chaos import FaultProxy, GeneratedAnswer, LogLimits, StateVerifier, Verdict
from ...client import Client
from ...errors import ConfigError
from ...protocol.backoff import BackoffPolicy
from ...protocol.events import payload
from ...server import Unbroken
from ...store.base import Retention, StreamLog
from ...store.memory import MemoryStore
from .answers import AnswerBook, Hold, answer_app, store_class
from .recorder import StreamRecorder
from .server_thread import ServerThread
from .tap import WireTap

if TYPE_CHECKING:
    from ...chaos.kernel import Topology


#: A fast, patient policy for chaos runs: first retry at once, then up to 0.5 s apart.
CHAOS_POLICY = BackoffPolicy(base=0.05, cap=0.5, max_attempts=None, deadline=30.0)


def _upstream(url: str) -> tuple[str, int, str]:
    """(host, port, path with query) of a ``ws://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ConfigError(
            f"chaos against a URL needs a plain ws:// endpoint, not {url!r}: the fault "
            "proxy forwards TCP and the client connects to it on loopback (point it at "
            "the service behind its TLS terminator)"
        )
    if not parts.hostname:
        raise ConfigError(f"no host in {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


class ChaosHarness:
    """A real server (own thread), a :class:`FaultProxy` in front of it, clients and
    verifiers: everything one chaos test needs.

    By default the server is the built-in test app (its ``answer`` agent replays
    generated answers: :meth:`start`). ``app``: your own :class:`Unbroken` app instead,
    served on loopback at ``path`` behind the proxy; ``url``: a service already running
    (``ws://host:port/path``), the proxy put in front of it (no server thread then).
    Against either, :meth:`stream` runs your agents through the proxy and
    :func:`~unbroken.scenarios.user_app.judge` says whether an answer came through
    exactly.

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
        app: Unbroken | None = None,
        url: str | None = None,
        path: str = "/ws",
        **app_options: Any,
    ) -> None:
        if app is not None and url is not None:
            raise ConfigError("give the harness an app or a url, not both")
        if (app is not None or url is not None) and app_options:
            raise ConfigError(
                f"options for the built-in app ({', '.join(sorted(app_options))}) do not "
                "apply to your own app: configure it where you build it"
            )
        self.book = AnswerBook()
        self.own_app = app is not None
        """The app is the user's (``app=``), not the built-in answering one."""
        self.remote: tuple[str, int] | None = None
        """(host, port) of the service at ``url`` (no server thread then)."""
        self.path = path
        if url is not None:
            host, port, self.path = _upstream(url)
            self.remote = (host, port)
        self.app = (
            app
            if app is not None
            else answer_app(self.book, heartbeat=heartbeat, retention=retention, **app_options)
        )
        self.tap = WireTap(self.app.asgi(self.path)) if tap and url is None else None
        self.topology = topology
        self._server: ServerThread | None = None
        if url is not None:
            pass
        elif topology is not None:
            self._server = ServerThread(
                self.app,
                self.tap,
                path=self.path,
                host=topology.addresses.server,
                netns=topology.server,
            )
        else:
            self._server = ServerThread(self.app, self.tap, path=self.path)
        self.seed = seed
        self.fault_log = fault_log
        self._proxy: FaultProxy | None = None
        self.clients: list[Client] = []
        self.recorders: list[StreamRecorder] = []

    @property
    def foreign(self) -> bool:
        """The service is the user's (an app or a URL), not the built-in answering app."""
        return self.own_app or self.remote is not None

    @property
    def server(self) -> ServerThread:
        """The server thread (not for a service at a URL)."""
        if self._server is None:
            raise ConfigError("the harness proxies a service at a URL: no server thread here")
        return self._server

    @property
    def stream_log(self) -> StreamLog | None:
        """The served app's stream log (None for a service at a URL)."""
        return None if self._server is None else self.app.store

    @property
    def proxy(self) -> FaultProxy:
        """The fault proxy between the clients and the server."""
        assert self._proxy is not None, "use the harness as `async with ChaosHarness() as h`"
        return self._proxy

    @property
    def store(self) -> MemoryStore:
        store = self.app.store
        assert isinstance(store, store_class())
        return store

    @property
    def url(self) -> str:
        """The WebSocket URL through the proxy."""
        return f"ws://127.0.0.1:{self.proxy.port}{self.path}"

    async def __aenter__(self) -> ChaosHarness:
        if self._server is not None:
            await self._server.start()
            upstream = (self._server.host, self._server.port)
        else:
            assert self.remote is not None
            upstream = self.remote
        self._proxy = FaultProxy(
            upstream=upstream,
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
        if self._server is not None:
            await self._server.stop()

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
        hold: Hold | None = None,
    ) -> StreamRecorder:
        """Start the ``answer`` agent replaying ``answer`` over ``seconds`` (in bursts
        ``tick`` seconds apart; stopping at ``hold`` until it is released); returns a
        running :class:`StreamRecorder`. (The built-in app only; against your own app:
        :meth:`stream`.)"""
        if self.foreign:
            raise ConfigError(
                "the harness serves your app: start your agents with h.stream(client, agent, input)"
            )
        key = self.book.add(answer, seconds, key, tick=tick, hold=hold)
        t0 = time.monotonic()
        stream = await client.start("answer", {"answer": key}, req=req)
        rec = StreamRecorder(stream, answer, key=key, started_at=t0, on_event=on_event)
        self.recorders.append(rec)
        rec.run()
        return rec

    async def stream(
        self,
        client: Client,
        agent: str,
        input: Any = None,
        *,
        key: str = "",
        req: str | None = None,
        on_event: Callable[[StreamRecorder], None] | None = None,
    ) -> StreamRecorder:
        """Start ``agent`` with ``input`` (any app: yours or the built-in one); returns a
        running :class:`StreamRecorder` (``await rec.done()``; ``rec.events`` as the
        client saw them, ``rec.answer`` verified by the digest chain, or ``rec.error``)."""
        t0 = time.monotonic()
        st = await client.start(agent, input, req=req)
        rec = StreamRecorder(st, None, key=key or agent, started_at=t0, on_event=on_event)
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
        return await self.verify_stream_log(rec.stream.id, rec.expected, require_end=require_end)

    async def verify_stream_log(
        self, stream: str, expected: GeneratedAnswer | None, *, require_end: bool = True
    ) -> Verdict:
        """:meth:`verify_log` of the stream ``stream``, whose answer is ``expected``
        (whatever client consumed it)."""
        limits = LogLimits()
        if expected is not None:
            want = expected.expected_events()
            limits = LogLimits(max_events=len(want), max_bytes=sum(len(payload(e)) for e in want))
        verifier = StateVerifier(log=self.store, limits=limits)
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

        if self.stream_log is None:
            return {"t": time.monotonic(), "note": "a service at a URL: no server state here"}
        log = self.stream_log

        async def take() -> dict[str, Any]:
            streams: dict[str, Any] = {}
            for rec in list(self.recorders):
                meta = await log.meta(rec.stream.id)
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
                "log_bytes": getattr(log, "total_bytes", None),
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
