"""FaultProxy: an asyncio TCP proxy that puts faults on the wire between a client and a server.

Every accepted connection gets an upstream connection and two directions
(:class:`Link`): ``upstream`` (client to server) and ``downstream`` (server to client).
Bytes pass straight through while a direction has no toxic; otherwise each chunk goes
through the direction's toxics in order (see :mod:`unbroken.chaos.toxics`). Connections can
be cut at any moment (``fin``, ``rst`` or ``blackhole``), at an exact byte offset, or by
schedules (:mod:`unbroken.chaos.schedules`). Every fault is kept as a
:class:`~unbroken.chaos.records.FaultRecord` and, optionally, written as a JSON line.

Typical use::

    async with FaultProxy(upstream=("127.0.0.1", server_port)) as proxy:
        client = await connect("127.0.0.1", proxy.port)
        conn = await proxy.wait_connection(1)
        await proxy.cut_all("rst")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, NameNotFound, NameTaken
from .addresses import Address, format_address, parse_address, to_address
from .connection import Connection, InstalledToxic, Link
from .records import FaultLog, FaultRecord
from .toxics import DIRECTIONS, CutMode, Direction, Toxic
from .toxics.base import DetailValue

if TYPE_CHECKING:
    from .schedules import ByteCut, ScheduledFault

logger = logging.getLogger(__name__)

__all__ = [
    "Connection",
    "FaultProxy",
    "InstalledToxic",
    "Link",
    "NameNotFound",
    "NameTaken",
    "format_address",
    "parse_address",
]


class FaultProxy:
    """An asyncio TCP proxy with Toxiproxy's toxics, exact byte-offset cuts and schedules.

    ``upstream``: where to connect, ``(host, port)`` or ``"host:port"``. ``listen``: where to
    accept (port 0 picks a free one; see :attr:`port`). ``fault_log``: a JSON-lines file
    that gets one line per record. ``seed``: makes jitter, slicing and toxicity reproducible.
    ``close_grace``: how long a ``fin`` cut waits for the peers to close before closing.
    ``flush_timeout``: how long an ``rst`` cut waits for delivered bytes to be acked.
    """

    def __init__(
        self,
        upstream: Address | str,
        *,
        listen: Address | str = ("127.0.0.1", 0),
        name: str = "unbroken",
        fault_log: str | Path | None = None,
        seed: int | None = None,
        enabled: bool = True,
        connect_timeout: float = 5.0,
        close_grace: float = 1.0,
        flush_timeout: float = 1.0,
    ) -> None:
        self.name = name
        self.upstream_address: Address = to_address(upstream)
        self.listen_address: Address = to_address(listen)
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.close_grace = close_grace
        self.flush_timeout = flush_timeout
        self._want_enabled = enabled
        self._enabled = False
        self._started = False
        self._stopped = False
        self._server: asyncio.Server | None = None
        self._bound_port: int | None = None
        self._log = FaultLog(fault_log)
        self._t0 = 0.0
        self._next_id = 0
        self._live: dict[int, Connection] = {}
        self._history: list[Connection] = []
        self._toxics: dict[Direction, list[InstalledToxic]] = {d: [] for d in DIRECTIONS}
        self._byte_cuts: list[ByteCut] = []
        self._sent: dict[Direction, int] = {d: 0 for d in DIRECTIONS}
        """Bytes delivered per direction over every connection (for proxy-wide byte cuts)."""
        self._schedules: set[ScheduledFault] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening (unless created with ``enabled=False``)."""
        if self._started:
            return
        self._started = True
        self._t0 = asyncio.get_running_loop().time()
        if self._want_enabled:
            await self.enable()

    async def stop(self) -> None:
        """Stop listening, close every connection, cancel schedules, close the log file."""
        if self._stopped:
            return
        self._stopped = True
        for schedule in list(self._schedules):
            schedule.cancel()
        if self._schedules:
            await asyncio.gather(*(s.task for s in self._schedules), return_exceptions=True)
        self._close_listener()
        self._enabled = False
        for conn in list(self._live.values()):
            conn.close_now()
        closing = [c.wait_closed() for c in self._live.values()]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)
        for conn in list(self._live.values()):
            for side in (conn.client, conn.server):
                if side.transport is not None and not side.lost:
                    side.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._record("stopped")
        self._log.close()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConfigError(f"proxy {self.name} stopped"))

    async def enable(self) -> None:
        """Listen again (undo :meth:`disable`); same port as before."""
        if self._enabled or self._stopped:
            return
        loop = asyncio.get_running_loop()
        host, port = self.listen_address
        if self._bound_port is not None:
            port = self._bound_port
        self._server = await loop.create_server(
            self._new_client_side, host, port, reuse_address=True
        )
        sockets = self._server.sockets
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else port
        self._enabled = True
        self._record("listening", listen=self.listen, upstream=self.upstream)

    async def disable(self, mode: CutMode = "fin", *, reason: str = "disabled") -> None:
        """``down``: refuse new connections (the port is closed) and cut every connection."""
        if not self._enabled:
            return
        self._enabled = False
        self._close_listener()
        self._record("disabled", mode=mode, reason=reason)
        await self.cut_all(mode, reason=reason)

    @contextlib.asynccontextmanager
    async def down(self, mode: CutMode = "fin") -> AsyncIterator[FaultProxy]:
        """``async with proxy.down():`` the proxy is disabled inside the block."""
        await self.disable(mode)
        try:
            yield self
        finally:
            await self.enable()

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def reconfigure(
        self, *, listen: Address | str | None = None, upstream: Address | str | None = None
    ) -> None:
        """Change the listen or upstream address; drops current connections (as Toxiproxy)."""
        was_enabled = self._enabled
        if was_enabled:
            await self.disable("fin", reason="reconfigure")
        if listen is not None:
            self.listen_address = to_address(listen)
            self._bound_port = None
        if upstream is not None:
            self.upstream_address = to_address(upstream)
        if was_enabled:
            await self.enable()

    async def reset(self) -> None:
        """Toxiproxy's reset: cancel schedules, remove every toxic, enable the proxy."""
        for schedule in list(self._schedules):
            schedule.cancel()
        if self._schedules:
            await asyncio.gather(*(s.task for s in self._schedules), return_exceptions=True)
        for cut in list(self._byte_cuts):
            cut.cancel()
        for direction in DIRECTIONS:
            for installed in list(self._toxics[direction]):
                self.remove_toxic(installed.name)
        await self.enable()

    # ------------------------------------------------------------------ properties
    @property
    def enabled(self) -> bool:
        """True while listening."""
        return self._enabled

    @property
    def host(self) -> str:
        """The listen host."""
        return self.listen_address[0]

    @property
    def port(self) -> int:
        """The actual listen port (known once started)."""
        return self._bound_port if self._bound_port is not None else self.listen_address[1]

    @property
    def listen(self) -> str:
        """``"host:port"`` the proxy accepts on."""
        return format_address((self.host, self.port))

    @property
    def upstream(self) -> str:
        """``"host:port"`` the proxy connects to."""
        return format_address(self.upstream_address)

    @property
    def connections(self) -> list[Connection]:
        """Connections not yet closed, in accept order."""
        return list(self._live.values())

    @property
    def history(self) -> list[Connection]:
        """Every connection ever accepted, in accept order."""
        return list(self._history)

    @property
    def records(self) -> list[FaultRecord]:
        """Every record so far (faults and lifecycle)."""
        return list(self._log.records)

    @property
    def faults(self) -> list[FaultRecord]:
        """The records that are faults (cuts, applied toxics, outages, ...)."""
        return [r for r in self._log.records if r.is_fault]

    @property
    def toxics(self) -> list[InstalledToxic]:
        """Installed toxics: upstream ones first, each direction in order of addition."""
        return [t for d in DIRECTIONS for t in self._toxics[d]]

    def totals(self) -> dict[str, dict[str, int]]:
        """Bytes received/sent/dropped per direction over all connections."""
        out: dict[str, dict[str, int]] = {}
        for direction in DIRECTIONS:
            links = [c.link(direction) for c in self._history]
            out[direction] = {
                "received": sum(link.received for link in links),
                "sent": sum(link.sent for link in links),
                "dropped": sum(link.dropped for link in links),
            }
        return out

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's proxy object: name, listen, upstream, enabled, toxics."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self._enabled,
            "toxics": [t.to_json() for t in self.toxics],
        }

    # ------------------------------------------------------------------ toxics
    def add_toxic(
        self,
        toxic: Toxic,
        *,
        stream: Direction = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> InstalledToxic:
        """Install ``toxic`` on ``stream`` for current and future connections.

        ``toxicity`` is the probability that it applies to a given connection. The default
        name is ``<type>_<stream>``, as in Toxiproxy.
        """
        if stream not in DIRECTIONS:
            raise ConfigError("stream was invalid, can be either upstream or downstream")
        if not 0.0 <= toxicity <= 1.0:
            raise ConfigError(f"toxicity must be within 0..1, got {toxicity}")
        toxic.validate()
        toxic_name = name or f"{toxic.type_name}_{stream}"
        if self.get_toxic(toxic_name) is not None:
            raise NameTaken("toxic already exists")
        installed = InstalledToxic(toxic_name, stream, float(toxicity), toxic)
        self._toxics[stream].append(installed)
        self._record(
            "toxic_added",
            None,
            stream,
            toxic=toxic_name,
            type=toxic.type_name,
            toxicity=installed.toxicity,
            **toxic.describe(),
        )
        for conn in list(self._live.values()):
            if conn.state == "open":
                conn.link(stream).bind(installed)
        return installed

    def get_toxic(self, name: str) -> InstalledToxic | None:
        """The installed toxic called ``name``, if any."""
        for installed in self.toxics:
            if installed.name == name:
                return installed
        return None

    def update_toxic(
        self,
        name: str,
        *,
        attributes: dict[str, object] | None = None,
        toxicity: float | None = None,
    ) -> InstalledToxic:
        """Change a toxic: ``attributes`` in Toxiproxy units (merged), and/or ``toxicity``.

        In Python you may also change ``installed.toxic``'s fields directly.
        """
        installed = self.get_toxic(name)
        if installed is None:
            raise NameNotFound("toxic not found")
        if attributes:
            installed.toxic.update_attributes(attributes)
        reroll = toxicity is not None and float(toxicity) != installed.toxicity
        if toxicity is not None:
            if not 0.0 <= toxicity <= 1.0:
                raise ConfigError(f"toxicity must be within 0..1, got {toxicity}")
            installed.toxicity = float(toxicity)
        self._record(
            "toxic_updated",
            None,
            installed.stream,
            toxic=name,
            toxicity=installed.toxicity,
            **installed.toxic.describe(),
        )
        if reroll:
            for conn in list(self._live.values()):
                if conn.state == "open":
                    conn.link(installed.stream).bind(installed)
        return installed

    def remove_toxic(self, name: str) -> None:
        """Uninstall a toxic; it stops acting at once (a pending delay ends early)."""
        installed = self.get_toxic(name)
        if installed is None:
            raise NameNotFound("toxic not found")
        self._toxics[installed.stream].remove(installed)
        for conn in list(self._live.values()):
            conn.link(installed.stream).unbind(name)
        self._record("toxic_removed", None, installed.stream, toxic=name, type=installed.type)

    # ------------------------------------------------------------------ cuts & schedules
    async def cut_all(self, mode: CutMode = "rst", *, reason: str = "cut_all") -> int:
        """Cut every live connection with ``mode``; returns how many were cut.

        Returns once the cut is on the wire (RSTs sent, FINs sent and peers closed or the
        grace period over); a ``blackhole`` returns at once.
        """
        conns = [c for c in self._live.values() if c.is_live]
        waits = [c.cut(mode, reason) for c in conns]
        if waits:
            await asyncio.gather(*waits)
        return len(conns)

    def cut_after_bytes(
        self,
        offset: int,
        *,
        direction: Direction = "downstream",
        mode: CutMode = "rst",
        once: bool = True,
        total: bool = False,
    ) -> ByteCut:
        """Cut a connection right after byte ``offset`` of ``direction`` was delivered.

        Counted per connection; the peer receives exactly ``offset`` bytes first. With
        ``once`` the cut disarms after firing; otherwise it fires on every connection.

        With ``total`` the offset counts the bytes of ``direction`` delivered over *all*
        connections since the cut was armed, and firing cuts every live connection at
        once (one network event, e.g. a router failing after N bytes crossed it); the
        connection that crossed the offset gets exactly up to it. Always fires once.
        """
        from .schedules import ByteCut

        if total:
            offset += self._sent[direction]
        cut = ByteCut(self, offset, direction, mode, once or total, total=total)
        self._byte_cuts.append(cut)
        return cut

    def cut_after(self, delay: float, mode: CutMode = "rst") -> ScheduledFault:
        """Cut every connection ``delay`` seconds from now (a cut at time T)."""
        from .schedules import cut_after

        return cut_after(self, delay, mode)

    def cut_every(
        self,
        interval: float,
        mode: CutMode = "rst",
        *,
        count: int | None = None,
        outage: float = 0.0,
    ) -> ScheduledFault:
        """Intermittent drops: cut every connection each ``interval`` seconds, ``count`` times
        (forever if None); with ``outage`` > 0 also refuse connections that long after each.
        """
        from .schedules import cut_every

        return cut_every(self, interval, mode, count=count, outage=outage)

    def ramp(
        self,
        duration: float,
        *,
        latency: tuple[float, float] = (0.0, 0.0),
        rate: tuple[float, float] | None = None,
        stream: Direction = "downstream",
        step: float = 0.05,
        hold: bool = True,
    ) -> ScheduledFault:
        """Gradual degradation: over ``duration`` seconds move latency from ``latency[0]`` to
        ``latency[1]`` seconds and (if given) bandwidth from ``rate[0]`` to ``rate[1]`` bytes/s.
        With ``hold`` the final level stays until the schedule is cancelled or reset.
        """
        from .schedules import ramp

        return ramp(self, duration, latency=latency, rate=rate, stream=stream, step=step, hold=hold)

    def outage(self, duration: float, mode: CutMode = "fin") -> ScheduledFault:
        """Complete outage: cut everything and refuse connections for ``duration`` seconds."""
        from .schedules import outage

        return outage(self, duration, mode)

    def asymmetric(
        self, direction: Direction, duration: float, *, then: CutMode | None = "rst"
    ) -> ScheduledFault:
        """Silently drop every byte of ``direction`` for ``duration`` seconds while the other
        direction flows. Afterwards connections that lost bytes are cut with ``then`` (their
        byte stream has a hole); ``None`` leaves them as they are.
        """
        from .schedules import asymmetric

        return asymmetric(self, direction, duration, then=then)

    def _byte_cut_due(self, link: Link, n: int) -> ByteCut | None:
        """The byte cut that ``n`` more bytes on ``link`` reach first, if any."""
        due: ByteCut | None = None
        due_head = n + 1
        for cut in self._byte_cuts:
            if cut.direction != link.direction:
                continue
            sent = self._sent[link.direction] if cut.total else link.sent
            if sent <= cut.offset <= sent + n and cut.offset - sent < due_head:
                due, due_head = cut, cut.offset - sent
        return due

    # ------------------------------------------------------------------ waiting
    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is re-checked on every record, accept,
        close and delivered chunk. Bound it with ``asyncio.wait_for``.
        """
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_connection(self, number: int = 1) -> Connection:
        """The ``number``-th connection accepted (1-based), once it is connected upstream
        (or failed to)."""

        def ready() -> bool:
            if len(self._history) < number:
                return False
            return self._history[number - 1].state != "connecting"

        await self.wait_until(ready)
        return self._history[number - 1]

    async def wait_record(
        self,
        kind: str | None = None,
        *,
        count: int = 1,
        where: Callable[[FaultRecord], bool] | None = None,
    ) -> FaultRecord:
        """The ``count``-th record of ``kind`` (and matching ``where``), waiting if needed."""

        def matching() -> list[FaultRecord]:
            return [
                r
                for r in self._log.records
                if (kind is None or r.kind == kind) and (where is None or where(r))
            ]

        await self.wait_until(lambda: len(matching()) >= count)
        return matching()[count - 1]

    def _notify(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done():
                try:
                    ok = predicate()
                except Exception as exc:  # a broken predicate must not break the proxy
                    fut.set_exception(exc)
                    continue
                if ok:
                    fut.set_result(None)

    # ------------------------------------------------------------------ internals
    def _new_client_side(self) -> asyncio.Protocol:
        self._next_id += 1
        return Connection(self, self._next_id).client

    def _accepted(self, conn: Connection) -> None:
        self._live[conn.id] = conn
        self._history.append(conn)
        self._record("accepted", conn, None, peer=conn.peer)
        self._spawn(conn.connect_upstream())

    def _closed(self, conn: Connection) -> None:
        self._live.pop(conn.id, None)
        self._record(
            "closed",
            conn,
            None,
            received_up=conn.upstream.received,
            received_down=conn.downstream.received,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("proxy %s: background task failed", self.name, exc_info=task.exception())

    def _record(
        self,
        kind: str,
        conn: Connection | None = None,
        direction: str | None = None,
        **detail: DetailValue,
    ) -> FaultRecord:
        loop_time = asyncio.get_running_loop().time()
        offsets: dict[str, int] = {}
        dropped: dict[str, int] = {}
        if conn is not None:
            offsets = {"upstream": conn.upstream.sent, "downstream": conn.downstream.sent}
            if conn.upstream.dropped or conn.downstream.dropped:
                dropped = {"upstream": conn.upstream.dropped, "downstream": conn.downstream.dropped}
        record = FaultRecord(
            time=time.time(),
            elapsed=loop_time - self._t0,
            proxy=self.name,
            kind=kind,
            connection=conn.id if conn is not None else None,
            direction=direction,
            offsets=offsets,
            dropped=dropped,
            detail=dict(detail),
        )
        self._log.append(record)
        self._notify()
        return record
