"""Schedules: faults that fire at a byte offset, at a time, repeatedly, or change over time.

Create them through :class:`~unbroken.chaos.FaultProxy` (``cut_after_bytes``, ``cut_after``,
``cut_every``, ``ramp``, ``outage``, ``asymmetric``). Each returns a handle: ``await
handle.wait()`` returns when its active phase is over, ``handle.cancel()`` stops it and undoes
its lasting effects (re-enables the proxy, removes the toxics it added).

A schedule drives the proxy through its public controls only (:class:`~.port.ProxyControls`:
cut, enable, disable, toxics, record); the proxy keeps each one until its task ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import ConfigError
from .port import ByteCut, InstalledToxic, ProxyControls
from .toxics import CUT_MODES, DIRECTIONS, Bandwidth, CutMode, Direction, Latency, Timeout

__all__ = [
    "ByteCut",
    "ScheduledFault",
    "asymmetric",
    "cut_after",
    "cut_every",
    "outage",
    "ramp",
]

logger = logging.getLogger(__name__)


def _check_mode(mode: str) -> None:
    if mode not in CUT_MODES:
        raise ConfigError(f"cut mode {mode!r} is not one of fin, rst, blackhole")


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r} is not upstream or downstream")


class ScheduledFault:
    """A running schedule. ``wait()`` returns when its active phase is over; ``cancel()``
    stops it and undoes lasting effects."""

    def __init__(
        self,
        proxy: ProxyControls,
        name: str,
        body: Callable[[ScheduledFault], Awaitable[None]],
    ) -> None:
        """Start running ``body(self)`` as a task."""
        self.proxy = proxy
        self.name = name
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._run(body))

    async def _run(self, body: Callable[[ScheduledFault], Awaitable[None]]) -> None:
        try:
            await body(self)
        finally:
            if not self.finished.done():
                self.finished.set_result(None)

    def phase_done(self) -> None:
        """Mark the active phase over (for schedules that then hold a state)."""
        if not self.finished.done():
            self.finished.set_result(None)

    async def wait(self) -> None:
        """Return when the active phase is over."""
        await asyncio.shield(self.finished)

    def cancel(self) -> None:
        """Stop now and undo lasting effects."""
        self.task.cancel()

    @property
    def done(self) -> bool:
        """True when the task has ended."""
        return self.task.done()


def cut_after(proxy: ProxyControls, delay: float, mode: CutMode) -> ScheduledFault:
    """Cut every connection ``delay`` seconds from now."""
    _check_mode(mode)

    async def body(handle: ScheduledFault) -> None:
        await asyncio.sleep(delay)
        cut = await proxy.cut_all(mode, reason="cut_after")
        proxy.record("timed_cut", delay=delay, connections=cut, mode=mode)

    return ScheduledFault(proxy, "cut_after", body)


def cut_every(
    proxy: ProxyControls, interval: float, mode: CutMode, *, count: int | None, outage: float
) -> ScheduledFault:
    """Cut every connection each ``interval`` seconds (``count`` times, or forever)."""
    _check_mode(mode)
    if interval <= 0:
        raise ConfigError(f"interval must be > 0, got {interval}")

    async def body(handle: ScheduledFault) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while count is None or n < count:
            n += 1
            await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
            cut = await proxy.cut_all(mode, reason="cut_every")
            proxy.record("intermittent_drop", index=n, connections=cut, mode=mode)
            if outage > 0:
                await proxy.disable(mode, reason="cut_every")
                try:
                    await asyncio.sleep(outage)
                finally:
                    await proxy.enable()
                proxy.record("enabled", reason="cut_every")

    return ScheduledFault(proxy, "cut_every", body)


def outage(proxy: ProxyControls, duration: float, mode: CutMode) -> ScheduledFault:
    """Disable the proxy for ``duration`` seconds, then enable it again."""
    _check_mode(mode)

    async def body(handle: ScheduledFault) -> None:
        await proxy.disable(mode, reason="outage")
        try:
            await asyncio.sleep(duration)
        finally:
            await proxy.enable()
            proxy.record("enabled", reason="outage", duration=duration)

    return ScheduledFault(proxy, "outage", body)


def ramp(
    proxy: ProxyControls,
    duration: float,
    *,
    latency: tuple[float, float],
    rate: tuple[float, float] | None,
    stream: Direction,
    step: float,
    hold: bool,
) -> ScheduledFault:
    """Move latency and bandwidth linearly from their first to their second value."""
    _check_direction(stream)
    if duration <= 0 or step <= 0:
        raise ConfigError("ramp duration and step must be > 0")
    if rate is not None and (rate[0] <= 0 or rate[1] <= 0):
        raise ConfigError("ramp rates must be > 0 bytes/s (0 would mean unlimited)")

    async def body(handle: ScheduledFault) -> None:
        loop = asyncio.get_running_loop()
        added: list[InstalledToxic] = []
        lat = Latency(latency=latency[0])
        bw = Bandwidth(rate=rate[0]) if rate is not None else None
        try:
            added.append(proxy.add_toxic(lat, stream=stream, name=f"ramp_latency_{stream}"))
            if bw is not None:
                added.append(proxy.add_toxic(bw, stream=stream, name=f"ramp_bandwidth_{stream}"))
            proxy.record(
                "ramp",
                stream,
                phase="start",
                duration=duration,
                latency_from=latency[0],
                latency_to=latency[1],
                rate_from=rate[0] if rate else 0.0,
                rate_to=rate[1] if rate else 0.0,
            )
            start = loop.time()
            while True:
                progress = min(1.0, (loop.time() - start) / duration)
                lat.latency = latency[0] + (latency[1] - latency[0]) * progress
                if bw is not None and rate is not None:
                    bw.rate = rate[0] + (rate[1] - rate[0]) * progress
                if progress >= 1.0:
                    break
                await asyncio.sleep(step)
            proxy.record(
                "ramp",
                stream,
                phase="end",
                latency=lat.latency,
                rate=bw.rate if bw is not None else 0.0,
            )
            handle.phase_done()
            if hold:
                await asyncio.Event().wait()
        finally:
            for installed in added:
                if proxy.get_toxic(installed.name) is installed:
                    proxy.remove_toxic(installed.name)

    return ScheduledFault(proxy, "ramp", body)


def asymmetric(
    proxy: ProxyControls, direction: Direction, duration: float, *, then: CutMode | None
) -> ScheduledFault:
    """Drop every byte of ``direction`` for ``duration`` seconds; then cut the connections
    that lost bytes with ``then``."""
    _check_direction(direction)
    if then is not None:
        _check_mode(then)

    async def body(handle: ScheduledFault) -> None:
        name = f"asymmetric_{direction}"
        before = {c.id: c.link(direction).dropped for c in proxy.connections}
        installed = proxy.add_toxic(Timeout(timeout=0.0), stream=direction, name=name)
        proxy.record("asymmetric", direction, phase="start", duration=duration)
        try:
            await asyncio.sleep(duration)
        finally:
            if proxy.get_toxic(name) is installed:
                proxy.remove_toxic(name)
            proxy.record("asymmetric", direction, phase="end")
        if then is not None:
            hit = [
                c
                for c in proxy.connections
                if c.is_live and c.link(direction).dropped > before.get(c.id, 0)
            ]
            await asyncio.gather(*(c.cut(then, "asymmetric_end") for c in hit))

    return ScheduledFault(proxy, "asymmetric", body)
