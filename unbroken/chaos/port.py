"""The port: what a :class:`~unbroken.chaos.FaultProxy` offers the parts it owns.

Toxiproxy's shape: a proxy owns links (each direction of each connection), a link runs its
direction's chain of toxics, and a toxic sees only a small stub. Here likewise:

* a :class:`~unbroken.chaos.FaultProxy` owns one :class:`ProxyPort` and hands it to every
  :class:`~unbroken.chaos.connection.ProxiedConnection` it accepts, and so to its two
  :class:`~unbroken.chaos.connection.Link` directions. The port holds what they share and
  nothing else: the settings a connection needs, the toxic chain of each direction, the
  fault log, the byte counters and the armed :class:`ByteCut` s, the registry of
  connections, background tasks and waiters;
* a schedule (:mod:`unbroken.chaos.schedules`) drives the proxy through its public controls
  only, described by :class:`ProxyControls`;
* a toxic sees only its :class:`~unbroken.chaos.toxics.ToxicContext`.

The port knows connections only through :class:`ConnectionView`, so this module imports none
of the modules that use it; the proxy's own affairs (listening, enable/disable, the API) stay
in the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ..errors import ConfigError
from .addresses import Address
from .faultlog import FaultLog, FaultRecord
from .toxics import CUT_MODES, DIRECTIONS, CutMode, Direction, Toxic
from .toxics.base import DetailValue

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class InstalledToxic:
    """A toxic installed on a proxy: Toxiproxy's toxic object (name, stream, toxicity)."""

    name: str
    stream: Direction
    toxicity: float
    toxic: Toxic

    @property
    def type(self) -> str:
        """Toxiproxy type name (``latency``, ``bandwidth``, ...)."""
        return self.toxic.type_name

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's JSON, keys in its order."""
        return {
            "attributes": self.toxic.to_attributes(),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


class Counters(Protocol):
    """One direction's byte counters (a :class:`~unbroken.chaos.connection.Link`)."""

    @property
    def received(self) -> int: ...

    @property
    def sent(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class ConnectionView(Protocol):
    """What the port and the schedules see of a proxied connection."""

    @property
    def id(self) -> int: ...

    @property
    def is_live(self) -> bool: ...

    @property
    def upstream(self) -> Counters: ...

    @property
    def downstream(self) -> Counters: ...

    def link(self, direction: Direction) -> Counters: ...

    def cut(
        self,
        mode: CutMode,
        reason: str = ...,
        *,
        direction: Direction | None = ...,
        **detail: DetailValue,
    ) -> asyncio.Future[None]: ...


class ProxyControls(Protocol):
    """What a schedule drives: a proxy's public controls (a FaultProxy is one)."""

    @property
    def connections(self) -> Sequence[ConnectionView]: ...

    async def cut_all(self, mode: CutMode = ..., *, reason: str = ...) -> int: ...

    async def enable(self) -> None: ...

    async def disable(self, mode: CutMode = ..., *, reason: str = ...) -> None: ...

    def add_toxic(
        self,
        toxic: Toxic,
        *,
        stream: Direction = ...,
        toxicity: float = ...,
        name: str | None = ...,
    ) -> InstalledToxic: ...

    def get_toxic(self, name: str) -> InstalledToxic | None: ...

    def remove_toxic(self, name: str) -> None: ...

    def record(
        self, kind: str, direction: Direction | None = ..., **detail: DetailValue
    ) -> FaultRecord: ...


class ByteCut:
    """Cut a connection right after byte ``offset`` of ``direction`` was delivered.

    Armed on creation (see :meth:`FaultProxy.cut_after_bytes
    <unbroken.chaos.FaultProxy.cut_after_bytes>`); ``fired`` resolves with the ``cut`` record
    of the first connection it cut.
    """

    def __init__(
        self,
        armed: list[ByteCut],
        offset: int,
        direction: Direction,
        mode: CutMode,
        once: bool,
        *,
        total: bool = False,
    ) -> None:
        if offset < 0:
            raise ConfigError(f"byte offset must be >= 0, got {offset}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction {direction!r} is not upstream or downstream")
        if mode not in CUT_MODES:
            raise ConfigError(f"cut mode {mode!r} is not one of fin, rst, blackhole")
        self.offset = offset
        self.direction: Direction = direction
        self.mode: CutMode = mode
        self.once = once
        self.total = total
        """The offset counts bytes over every connection; firing cuts them all."""
        self.count = 0
        self.fired: asyncio.Future[FaultRecord] = asyncio.get_running_loop().create_future()
        self._armed = armed
        armed.append(self)

    @property
    def armed(self) -> bool:
        """True until it is cancelled or (with ``once``) has fired."""
        return self in self._armed

    def cancel(self) -> None:
        """Disarm."""
        self.cancel_quietly()
        if not self.fired.done():
            self.fired.cancel()

    def cancel_quietly(self) -> None:
        """Disarm without cancelling ``fired``."""
        if self in self._armed:
            self._armed.remove(self)

    async def wait(self) -> FaultRecord:
        """The ``cut`` record of the first firing."""
        return await asyncio.shield(self.fired)


C = TypeVar("C", bound=ConnectionView)


class ProxyPort(Generic[C]):
    """What a proxy shares with its connections and their links (see the module's doc).

    The proxy owns it and reads the same books: ``live``/``history`` are its connections,
    ``chains`` its toxics, ``log`` its records.
    """

    def __init__(
        self,
        name: str,
        upstream: Address,
        *,
        seed: int | None,
        connect_timeout: float,
        close_grace: float,
        flush_timeout: float,
        fault_log: str | Path | None,
    ) -> None:
        self.name = name
        self.upstream_address: Address = upstream
        """Where each connection connects (changed by ``reconfigure``)."""
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.close_grace = close_grace
        self.flush_timeout = flush_timeout
        self.accepting = False
        """True while the proxy listens. A connection the listener accepted just before
        ``disable`` closed it reaches its connection after, and is refused then."""
        self.chains: dict[Direction, list[InstalledToxic]] = {d: [] for d in DIRECTIONS}
        """The installed toxics of each direction in order: the chain each link runs."""
        self.sent: dict[Direction, int] = {d: 0 for d in DIRECTIONS}
        """Bytes delivered per direction over every connection (for proxy-wide byte cuts)."""
        self.byte_cuts: list[ByteCut] = []
        """The armed byte cuts; a link checks them while this is not empty."""
        self.live: dict[int, C] = {}
        self.history: list[C] = []
        self.log = FaultLog(fault_log)
        self.started_at = 0.0
        """Loop time the proxy started (records' ``elapsed`` counts from it)."""
        self.tasks: set[asyncio.Task[Any]] = set()
        self.waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        """Pending :meth:`wait_until` calls; a link calls :meth:`notify` while any exist."""

    # -- the connection registry
    def opened(self, conn: C) -> None:
        """``conn`` was accepted."""
        self.live[conn.id] = conn
        self.history.append(conn)

    def closed(self, conn: C) -> None:
        """Both of ``conn``'s sockets are closed."""
        self.live.pop(conn.id, None)

    # -- records, tasks, waiters
    def record(
        self,
        kind: str,
        conn: ConnectionView | None = None,
        direction: str | None = None,
        **detail: DetailValue,
    ) -> FaultRecord:
        """Append a record (with the time and, for a connection, its byte offsets)."""
        loop_time = asyncio.get_running_loop().time()
        offsets: dict[str, int] = {}
        dropped: dict[str, int] = {}
        if conn is not None:
            up, down = conn.upstream, conn.downstream
            offsets = {"upstream": up.sent, "downstream": down.sent}
            if up.dropped or down.dropped:
                dropped = {"upstream": up.dropped, "downstream": down.dropped}
        record = FaultRecord(
            time=time.time(),
            elapsed=loop_time - self.started_at,
            proxy=self.name,
            kind=kind,
            connection=conn.id if conn is not None else None,
            direction=direction,
            offsets=offsets,
            dropped=dropped,
            detail=dict(detail),
        )
        self.log.append(record)
        self.notify()
        return record

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a background task; the proxy cancels what is left when it stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("proxy %s: background task failed", self.name, exc_info=task.exception())

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true (re-checked on each :meth:`notify`)."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self.waiters.append(entry)
        try:
            await fut
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(entry)

    def notify(self) -> None:
        """Something changed: re-check the waiters' predicates."""
        for predicate, fut in list(self.waiters):
            if not fut.done():
                try:
                    ok = predicate()
                except Exception as exc:  # a broken predicate must not break the proxy
                    fut.set_exception(exc)
                    continue
                if ok:
                    fut.set_result(None)

    def fail_waiters(self, exc: Exception) -> None:
        """End every pending wait with ``exc`` (the proxy stopped)."""
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_exception(exc)

    # -- byte cuts
    def byte_cut_due(self, direction: Direction, link_sent: int, n: int) -> ByteCut | None:
        """The byte cut that ``n`` more bytes on a link of ``direction`` that has delivered
        ``link_sent`` bytes reach first, if any."""
        due: ByteCut | None = None
        due_head = n + 1
        for cut in self.byte_cuts:
            if cut.direction != direction:
                continue
            sent = self.sent[direction] if cut.total else link_sent
            if sent <= cut.offset <= sent + n and cut.offset - sent < due_head:
                due, due_head = cut, cut.offset - sent
        return due

    def fire(self, cut: ByteCut, conn: ConnectionView, direction: Direction) -> None:
        """``cut`` is due on ``conn`` (its bytes up to the offset are delivered): cut it, and
        with ``total`` every other live connection too (one network event)."""
        cut.count += 1
        if cut.once:
            cut.cancel_quietly()
        conn.cut(cut.mode, "byte_offset", direction=direction, offset=cut.offset)
        record = self.log.records[-1]
        if cut.total:
            for other in list(self.live.values()):
                if other is not conn and other.is_live:
                    other.cut(cut.mode, "byte_offset_total", direction=direction)
        if not cut.fired.done():
            cut.fired.set_result(record)
