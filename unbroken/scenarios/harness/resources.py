"""What a run costs: the process's RSS and the stream log's bytes, sampled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from .tasks import reap


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
