"""NetworkSimulator: the seed's network conditions, played on a :class:`FaultProxy`.

Each method returns when its fault is over (or installed, for lasting conditions), so a
test runs it as a task beside the stream it disturbs::

    async with FaultProxy(upstream=server) as proxy:
        net = NetworkSimulator(proxy)
        fault = asyncio.create_task(net.simulate_intermittent_drops(3, duration=2.0))
        answer = await client_reads_answer_through(proxy.port)
        await fault

Conditions and what they do on the wire:

* clean disconnect: every connection gets an orderly FIN (``abrupt``: an RST);
* gradual degradation: latency rises and bandwidth falls, linearly, until the link is bad;
* intermittent drops: ``drop_frequency`` connection resets spread over ``duration``;
* bandwidth throttling: bytes/s cap (both directions by default);
* complete outage: connections cut and new ones refused for ``duration``;
* silent outage: connections cut and, for ``duration``, nothing passes on any connection,
  new ones included: they are accepted and hear nothing (a path that drops every packet,
  where connection attempts time out instead of being refused);
* asymmetric failure: one direction silently dropped while the other flows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from ..errors import ConfigError
from .proxy import FaultProxy, InstalledToxic
from .schedules import ScheduledFault
from .toxics import DIRECTIONS, Bandwidth, CutMode, Direction, Timeout

logger = logging.getLogger(__name__)

Stream = Direction | Literal["both"]


class NetworkSimulator:
    """The seed's ``NetworkSimulator`` over a running :class:`FaultProxy`."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._lasting: list[ScheduledFault] = []
        self._throttles: list[InstalledToxic] = []

    async def simulate_clean_disconnect(self, delay: float = 0.0, *, abrupt: bool = False) -> int:
        """After ``delay`` seconds, close every connection (FIN; RST with ``abrupt``).
        Returns how many connections were cut."""
        if delay > 0:
            await asyncio.sleep(delay)
        return await self.proxy.cut_all("rst" if abrupt else "fin", reason="clean_disconnect")

    async def simulate_gradual_degradation(
        self,
        degradation_rate: float,
        *,
        max_latency: float = 1.0,
        start_rate: float = 1_000_000.0,
        min_rate: float = 1_000.0,
        stream: Direction = "downstream",
    ) -> ScheduledFault:
        """Degrade the link: its quality falls by ``degradation_rate`` per second (0..1] until
        none is left, i.e. over ``1 / degradation_rate`` seconds. Latency rises from 0 to
        ``max_latency`` seconds while bandwidth falls from ``start_rate`` to ``min_rate``
        bytes/s. Returns once fully degraded; the link stays bad until :meth:`restore`.
        """
        if not 0 < degradation_rate <= 1000:
            raise ConfigError(
                f"degradation_rate must be in (0, 1000] per second, got {degradation_rate}"
            )
        duration = 1.0 / degradation_rate
        handle = self.proxy.ramp(
            duration,
            latency=(0.0, max_latency),
            rate=(start_rate, min_rate),
            stream=stream,
            step=min(0.1, duration / 20),
            hold=True,
        )
        self._lasting.append(handle)
        await handle.wait()
        return handle

    async def simulate_intermittent_drops(
        self,
        drop_frequency: int,
        *,
        duration: float = 10.0,
        mode: CutMode = "rst",
        outage: float = 0.0,
    ) -> int:
        """Cut every connection ``drop_frequency`` times, evenly spread over ``duration``
        seconds (the first after ``duration / drop_frequency``); with ``outage`` > 0 new
        connections are also refused that long after each drop. Returns the number of drops.
        """
        if drop_frequency < 1:
            raise ConfigError(f"drop_frequency must be >= 1, got {drop_frequency}")
        interval = duration / drop_frequency
        handle = self.proxy.cut_every(interval, mode, count=drop_frequency, outage=outage)
        await handle.wait()
        return drop_frequency

    async def simulate_bandwidth_throttling(
        self,
        bandwidth_limit: int,
        *,
        duration: float | None = None,
        stream: Stream = "both",
    ) -> list[InstalledToxic]:
        """Cap the link at ``bandwidth_limit`` bytes/s. With ``duration``, lift the cap after
        that many seconds and return then; otherwise return at once (lift with
        :meth:`restore`)."""
        if bandwidth_limit <= 0:
            raise ConfigError(f"bandwidth_limit must be > 0 bytes/s, got {bandwidth_limit}")
        directions = DIRECTIONS if stream == "both" else (stream,)
        added = [
            self.proxy.add_toxic(
                Bandwidth(rate=float(bandwidth_limit)),
                stream=d,
                name=f"throttle_{d}_{len(self._throttles) + i}",
            )
            for i, d in enumerate(directions)
        ]
        self._throttles.extend(added)
        if duration is not None:
            try:
                await asyncio.sleep(duration)
            finally:
                self._remove(added)
        return added

    async def simulate_complete_outage(self, duration: float, *, mode: CutMode = "fin") -> None:
        """Cut every connection and refuse new ones for ``duration`` seconds."""
        await self.proxy.outage(duration, mode).wait()

    async def simulate_silent_outage(
        self, duration: float, *, mode: CutMode = "blackhole", then: CutMode = "rst"
    ) -> int:
        """Cut every connection with ``mode`` (``blackhole``: nothing passes, nothing
        closes), then let nothing through for ``duration`` seconds, on any connection, new
        ones included: they are accepted and hear nothing, so a handshake runs into its
        timeout (a path that drops every packet; :meth:`simulate_complete_outage` refuses
        them instead). Afterwards the connections that lost bytes meanwhile are cut with
        ``then``. Returns how many connections lost bytes to the outage."""
        if duration <= 0:
            raise ConfigError(f"duration must be > 0 seconds, got {duration}")
        proxy = self.proxy
        before = {(c.id, d): c.link(d).dropped for c in proxy.connections for d in DIRECTIONS}
        installed = [
            proxy.add_toxic(Timeout(timeout=0.0), stream=d, name=f"silent_outage_{d}")
            for d in DIRECTIONS
        ]
        try:
            await proxy.cut_all(mode, reason="silent_outage")
            await asyncio.sleep(duration)
        finally:
            self._remove(installed)
        hit = [
            c
            for c in proxy.connections
            if c.is_live and any(c.link(d).dropped > before.get((c.id, d), 0) for d in DIRECTIONS)
        ]
        await asyncio.gather(*(c.cut(then, "silent_outage_end") for c in hit))
        return len(hit)

    async def simulate_asymmetric_failure(
        self, direction: Direction, duration: float, *, then: CutMode | None = "rst"
    ) -> None:
        """Silently drop ``direction`` (``upstream``: the client's sends, i.e. receive-only;
        ``downstream``: the server's, i.e. send-only) for ``duration`` seconds while the
        other direction flows; then cut the connections that lost bytes with ``then``."""
        await self.proxy.asymmetric(direction, duration, then=then).wait()

    async def restore(self) -> None:
        """Undo lasting conditions (degradation, throttling) started by this simulator."""
        for handle in self._lasting:
            handle.cancel()
        if self._lasting:
            await asyncio.gather(*(h.task for h in self._lasting), return_exceptions=True)
        self._lasting.clear()
        self._remove(self._throttles)
        self._throttles.clear()

    def _remove(self, toxics: list[InstalledToxic]) -> None:
        for installed in toxics:
            if self.proxy.get_toxic(installed.name) is installed:
                self.proxy.remove_toxic(installed.name)
