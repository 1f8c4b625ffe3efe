"""FaultProxy: an asyncio TCP proxy that puts faults on the wire between a client and a server.

Every accepted connection gets an upstream connection and two directions
(:class:`Link`): ``upstream`` (client to server) and ``downstream`` (server to client).
Bytes pass straight through while a direction has no toxic; otherwise each chunk goes
through the direction's toxics in order (see :mod:`unbroken.chaos.toxics`). Connections can
be cut at any moment (``fin``, ``rst`` or ``blackhole``), at an exact byte offset, or by
schedules (:mod:`unbroken.chaos.schedules`). Every fault is kept as a
:class:`~unbroken.chaos.faultlog.FaultRecord` and, optionally, written as a JSON line.

The proxy owns a :class:`~unbroken.chaos.port.ProxyPort`: the books its connections and
their links share with it (toxic chains, fault log, byte counters and cuts, the registry of
connections). They see that port, never the proxy; schedules see only its public controls.

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
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError, NameNotFound, NameTaken
from . import schedules
from .addresses import Address, format_address, parse_address, to_address
from .connection import Connection, Link, ProxiedConnection
from .faultlog import FaultRecord
from .port import ByteCut, InstalledToxic, ProxyPort
from .schedules import ScheduledFault
from .toxics import DIRECTIONS, CutMode, Direction, Toxic
from .toxics.base import DetailValue

logger = logging.getLogger(__name__)

__all__ = [
    "Connection",
    "FaultProxy",
    "InstalledToxic",
    "Link",
    "NameNotFound",
    "NameTaken",
    "ProxiedConnection",
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
        self._port: ProxyPort[ProxiedConnection] = ProxyPort(
            name,
            to_address(upstream),
            seed=seed,
            connect_timeout=connect_timeout,
            close_grace=close_grace,
            flush_timeout=flush_timeout,
            fault_log=fault_log,
        )
        self.listen_address: Address = to_address(listen)
        self._want_enabled = enabled
        self._enabled = False
        self._started = False
        self._stopped = False
        self._server: asyncio.Server | None = None
        self._bound_port: int | None = None
        #: while down: a socket bound to the port, not listening (see _hold_port)
        self._placeholder: socket.socket | None = None
        self._next_id = 0
        self._schedules: set[ScheduledFault] = set()

    # ------------------------------------------------------------------ settings (the port's)
    @property
    def name(self) -> str:
        """The proxy's name (in every record)."""
        return self._port.name

    @name.setter
    def name(self, value: str) -> None:
        self._port.name = value

    @property
    def upstream_address(self) -> Address:
        """``(host, port)`` each new connection connects to."""
        return self._port.upstream_address

    @upstream_address.setter
    def upstream_address(self, value: Address) -> None:
        self._port.upstream_address = value

    @property
    def seed(self) -> int | None:
        """Seeds each connection's randomness (jitter, slicing, toxicity)."""
        return self._port.seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        self._port.seed = value

    @property
    def connect_timeout(self) -> float:
        """Seconds a connection waits for the upstream connect."""
        return self._port.connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._port.connect_timeout = value

    @property
    def close_grace(self) -> float:
        """Seconds a ``fin`` cut waits for the peers to close."""
        return self._port.close_grace

    @close_grace.setter
    def close_grace(self, value: float) -> None:
        self._port.close_grace = value

    @property
    def flush_timeout(self) -> float:
        """Seconds an ``rst`` cut waits for delivered bytes to be acked."""
        return self._port.flush_timeout

    @flush_timeout.setter
    def flush_timeout(self, value: float) -> None:
        self._port.flush_timeout = value

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
        self._port.started_at = asyncio.get_running_loop().time()
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
        self._release_port()
        self._enabled = False
        self._port.accepting = False
        live = self._port.live
        for conn in list(live.values()):
            conn.close_now()
        closing = [c.wait_closed() for c in live.values()]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=1.0)
        for conn in list(live.values()):
            conn.abort()
        tasks = [t for t in self._port.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._port.record("stopped")
        self._port.log.close()
        self._port.fail_waiters(ConfigError(f"proxy {self.name} stopped"))

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
        self._release_port()  # listening again: the placeholder's job is done
        self._enabled = True
        self._port.accepting = True
        self._port.record("listening", listen=self.listen, upstream=self.upstream)

    async def disable(self, mode: CutMode = "fin", *, reason: str = "disabled") -> None:
        """``down``: refuse new connections (the port is closed) and cut every connection."""
        if not self._enabled:
            return
        self._enabled = False
        self._port.accepting = False
        self._close_listener()
        self._hold_port()
        self._port.record("disabled", mode=mode, reason=reason)
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

    def _hold_port(self) -> None:
        """While down, keep the port bound but not listening: connections to it are
        refused, as with no listener, and the kernel cannot hand the port to anyone
        else meanwhile (an outgoing connection's ephemeral port took it under load, and
        :meth:`enable` then failed with "address already in use"). Both sockets set
        SO_REUSEADDR, so the new listener binds beside the placeholder."""
        if self._bound_port is None or self._placeholder is not None:
            return
        host = self.listen_address[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        holder = socket.socket(family, socket.SOCK_STREAM)
        try:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind((host, self._bound_port))
        except OSError as exc:  # someone was faster: enable() will say so
            holder.close()
            logger.warning(
                "proxy %s: could not hold port %d while down: %s", self.name, self._bound_port, exc
            )
            return
        self._placeholder = holder

    def _release_port(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

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
        for cut in list(self._port.byte_cuts):
            cut.cancel()
        for direction in DIRECTIONS:
            for installed in list(self._port.chains[direction]):
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
    def connections(self) -> list[ProxiedConnection]:
        """Connections not yet closed, in accept order."""
        return list(self._port.live.values())

    @property
    def history(self) -> list[ProxiedConnection]:
        """Every connection ever accepted, in accept order."""
        return list(self._port.history)

    @property
    def records(self) -> list[FaultRecord]:
        """Every record so far (faults and lifecycle)."""
        return list(self._port.log.records)

    @property
    def faults(self) -> list[FaultRecord]:
        """The records that are faults (cuts, applied toxics, outages, ...)."""
        return [r for r in self._port.log.records if r.is_fault]

    @property
    def toxics(self) -> list[InstalledToxic]:
        """Installed toxics: upstream ones first, each direction in order of addition."""
        return [t for d in DIRECTIONS for t in self._port.chains[d]]

    @property
    def byte_cuts(self) -> list[ByteCut]:
        """The byte cuts armed now (see :meth:`cut_after_bytes`)."""
        return list(self._port.byte_cuts)

    def totals(self) -> dict[str, dict[str, int]]:
        """Bytes received/sent/dropped per direction over all connections."""
        out: dict[str, dict[str, int]] = {}
        for direction in DIRECTIONS:
            links = [c.link(direction) for c in self._port.history]
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
        self._port.chains[stream].append(installed)
        self._port.record(
            "toxic_added",
            None,
            stream,
            toxic=toxic_name,
            type=toxic.type_name,
            toxicity=installed.toxicity,
            **toxic.describe(),
        )
        for conn in list(self._port.live.values()):
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
        self._port.record(
            "toxic_updated",
            None,
            installed.stream,
            toxic=name,
            toxicity=installed.toxicity,
            **installed.toxic.describe(),
        )
        if reroll:
            for conn in list(self._port.live.values()):
                if conn.state == "open":
                    conn.link(installed.stream).bind(installed)
        return installed

    def remove_toxic(self, name: str) -> None:
        """Uninstall a toxic; it stops acting at once (a pending delay ends early)."""
        installed = self.get_toxic(name)
        if installed is None:
            raise NameNotFound("toxic not found")
        self._port.chains[installed.stream].remove(installed)
        for conn in list(self._port.live.values()):
            conn.link(installed.stream).unbind(name)
        self._port.record("toxic_removed", None, installed.stream, toxic=name, type=installed.type)

    def record(
        self, kind: str, direction: Direction | None = None, **detail: DetailValue
    ) -> FaultRecord:
        """Append a record of ``kind`` to the fault log (e.g. to mark a phase of a test)."""
        return self._port.record(kind, None, direction, **detail)

    # ------------------------------------------------------------------ cuts & schedules
    async def cut_all(self, mode: CutMode = "rst", *, reason: str = "cut_all") -> int:
        """Cut every live connection with ``mode``; returns how many were cut.

        Returns once the cut is on the wire (RSTs sent, FINs sent and peers closed or the
        grace period over); a ``blackhole`` returns at once.
        """
        conns = [c for c in self._port.live.values() if c.is_live]
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
        if total:
            offset += self._port.sent[direction]
        return ByteCut(self._port.byte_cuts, offset, direction, mode, once or total, total=total)

    def cut_after(self, delay: float, mode: CutMode = "rst") -> ScheduledFault:
        """Cut every connection ``delay`` seconds from now (a cut at time T)."""
        return self._track(schedules.cut_after(self, delay, mode))

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
        return self._track(schedules.cut_every(self, interval, mode, count=count, outage=outage))

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
        return self._track(
            schedules.ramp(
                self, duration, latency=latency, rate=rate, stream=stream, step=step, hold=hold
            )
        )

    def outage(self, duration: float, mode: CutMode = "fin") -> ScheduledFault:
        """Complete outage: cut everything and refuse connections for ``duration`` seconds."""
        return self._track(schedules.outage(self, duration, mode))

    def asymmetric(
        self, direction: Direction, duration: float, *, then: CutMode | None = "rst"
    ) -> ScheduledFault:
        """Silently drop every byte of ``direction`` for ``duration`` seconds while the other
        direction flows. Afterwards connections that lost bytes are cut with ``then`` (their
        byte stream has a hole); ``None`` leaves them as they are.
        """
        return self._track(schedules.asymmetric(self, direction, duration, then=then))

    def _track(self, schedule: ScheduledFault) -> ScheduledFault:
        """Keep ``schedule`` until its task ends (``stop``/``reset`` cancel what is left)."""
        self._schedules.add(schedule)
        schedule.task.add_done_callback(lambda _: self._schedules.discard(schedule))
        return schedule

    # ------------------------------------------------------------------ waiting
    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is re-checked on every record, accept,
        close and delivered chunk. Bound it with ``asyncio.wait_for``.
        """
        await self._port.wait_until(predicate)

    async def wait_connection(self, number: int = 1) -> ProxiedConnection:
        """The ``number``-th connection accepted (1-based), once it is connected upstream
        (or failed to)."""

        history = self._port.history

        def ready() -> bool:
            if len(history) < number:
                return False
            return history[number - 1].state != "connecting"

        await self.wait_until(ready)
        return history[number - 1]

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
                for r in self._port.log.records
                if (kind is None or r.kind == kind) and (where is None or where(r))
            ]

        await self.wait_until(lambda: len(matching()) >= count)
        return matching()[count - 1]

    # ------------------------------------------------------------------ internals
    def _new_client_side(self) -> asyncio.Protocol:
        self._next_id += 1
        return ProxiedConnection(self._port, self._next_id).client
