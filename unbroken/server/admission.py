"""Admission control: how much new work the server takes on (issue 16).

New work is refused first (a new ``start`` gets ``error overloaded`` with
``retry_after_ms``); in-flight streams are never shed to make room. The hub asks
:meth:`Admission.check` before it creates a run; a repeated start of a request
it already knows is answered with its stream whatever the load.

Four signals, each cheap:

- live agent runs, over all principals and per principal (counted by the hub);
- event-loop lag: a monitor task sleeps ``lag_interval`` seconds and measures how
  late it wakes up (the time every ready callback waits for its turn), smoothed so
  that one long tick does not refuse work but a loop that stays behind does;
- the process's resident memory (/proc/self/statm on Linux, psutil elsewhere), read every
  second by the same task.

Under **sustained** pressure (loop lag or RSS over its limit for ``shed_after``
seconds; off by default) the monitor also detaches the slowest readers, a small
bounded share per second (:meth:`Admission.shed_slowest`): each gets ``error
overloaded`` with ``retry_after_ms`` and a close 4008, and resumes exactly later.
Their agents keep running into the log; nothing is paused or cancelled.

Defaults, and how they were derived on the project's machine (2 cores, 24 GiB),
are in ``docs/topics/overload.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from ..errors import ConfigError, Overloaded

log = logging.getLogger(__name__)

#: Where Linux tells a process its memory: resident pages are the second field.
STATM: Final = "/proc/self/statm"
#: Weight of the newest lag sample in the smoothed loop lag.
LAG_ALPHA: Final = 0.25
#: The RSS is read once every this many lag ticks (psutil costs ~20 µs a read).
RSS_EVERY: Final = 1.0
#: Under sustained pressure, readers are shed at most once every this many seconds.
SHED_EVERY: Final = 1.0
#: A reader is a candidate for shedding only when its oldest unacknowledged frame has
#: waited this long with half a window or more unacknowledged (a client that keeps up
#: acks every quarter window within a round trip).
SLOW_READER: Final = 1.0


def _default_rss() -> int | None:
    """Three quarters of this machine's physical memory (None if unknown)."""
    try:  # POSIX (Linux, macOS): without importing psutil (~0.8 MB a process)
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if total > 0:
            return int(total * 0.75)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        pass
    try:  # pragma: no cover - where sysconf does not know
        import psutil

        return int(psutil.virtual_memory().total * 0.75)
    except Exception:  # pragma: no cover - psutil is a dependency
        return None


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Limits on new work; ``None`` means no limit.

    The defaults come from this project's measurements on a 2-core machine
    (docs/topics/overload.md): one process keeps the per-token p99 under 100 ms up
    to 1,000 paced streams and misses it at 1,500; one principal may take half.
    """

    #: agent runs alive at once, over all principals
    max_runs: int | None = 1000
    #: agent runs alive at once for one principal (an anonymous client counts by its
    #: client key, which is free to mint: ``max_runs`` bounds anonymous load as a whole)
    max_runs_per_principal: int | None = 500
    #: refuse new runs while the smoothed event-loop lag is above this (seconds)
    max_loop_lag: float | None = 0.25
    #: refuse new runs while the process's resident memory is above this (bytes);
    #: the default is three quarters of the machine's physical memory
    max_rss: int | None = -1
    #: the base of ``retry_after`` on a refusal (seconds); a random part of up to
    #: the same again is added, so a refused herd does not come back at once
    retry_after: float = 1.0
    #: fail a run whose agent wrote nothing for this long (seconds): ``failed``,
    #: error ``stalled: no output for Ns``; ``None``: never
    stall_timeout: float | None = None
    #: how often the monitor task measures the loop lag (seconds)
    lag_interval: float = 0.05
    #: detach the slowest readers once loop lag or RSS has stayed over its limit this
    #: long (seconds); ``None`` (the default): never. A shed reader gets ``error
    #: overloaded`` + ``retry_after_ms`` and a close 4008, then resumes exactly; its
    #: agents keep running into the log
    shed_after: float | None = None
    #: the share of connections shed per round (one round a second), at least one
    shed_fraction: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_runs", "max_runs_per_principal"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be at least 1 (or None), not {v}")
        if self.max_loop_lag is not None and self.max_loop_lag <= 0:
            raise ConfigError(f"max_loop_lag must be positive (or None), not {self.max_loop_lag}")
        if self.max_rss is not None and self.max_rss < -1:
            raise ConfigError(f"max_rss must be positive (or None), not {self.max_rss}")
        if self.retry_after <= 0:
            raise ConfigError(f"retry_after must be positive, not {self.retry_after}")
        if self.stall_timeout is not None and self.stall_timeout <= 0:
            raise ConfigError(f"stall_timeout must be positive (or None), not {self.stall_timeout}")
        if not 0 < self.lag_interval <= 1:
            raise ConfigError(f"lag_interval must be in (0, 1], not {self.lag_interval}")
        if self.shed_after is not None and self.shed_after < 0:
            raise ConfigError(f"shed_after must be 0 or more (or None), not {self.shed_after}")
        if not 0 < self.shed_fraction <= 1:
            raise ConfigError(f"shed_fraction must be in (0, 1], not {self.shed_fraction}")

    @property
    def rss_limit(self) -> int | None:
        """:attr:`max_rss` with the default (``-1``) resolved."""
        return _default_rss() if self.max_rss == -1 else self.max_rss

    @classmethod
    def unlimited(cls) -> AdmissionLimits:
        """No limit at all (tests of other things, benchmarks of the raw server)."""
        return cls(None, None, None, None)


class Refusal(NamedTuple):
    """Why a new run is refused: ``reason`` (``runs``, ``principal_runs``,
    ``loop_lag``, ``rss``) and the error the start is answered with."""

    reason: str
    error: Overloaded


PrincipalKey = tuple[str, str]
"""A principal's id and scope: what :attr:`AdmissionLimits.max_runs_per_principal` counts."""


class Reader(Protocol):
    """A connection as shedding sees it."""

    def behind(self) -> float:
        """Seconds the oldest frame this reader has not acknowledged has waited, with
        half a window or more unacknowledged (or a send has been blocked); 0 when it
        keeps up."""
        ...

    def shed(self, retry_after: float, reason: str) -> None:
        """Detach: ``error overloaded`` with ``retry_after``, then close 4008."""
        ...


class Admission:
    """The state admission decides on: live runs, loop lag and RSS.

    ``rss`` reads the resident memory (tests pass their own); ``jitter`` draws in
    ``[0, 1)`` for the random part of ``retry_after``.
    """

    def __init__(
        self,
        limits: AdmissionLimits,
        *,
        rss: Callable[[], int] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.limits = limits
        self.max_rss = limits.rss_limit
        self.runs = 0
        self.per_principal: dict[PrincipalKey, int] = {}
        #: smoothed event-loop lag (seconds) and the last raw sample
        self.lag = 0.0
        self.last_lag = 0.0
        self.rss = 0
        self._rss_failed = False
        #: refusals so far, by reason (``runs``, ``principal_runs``, ``loop_lag``, ``rss``)
        self.refused: dict[str, int] = {}
        self._read_rss = rss if rss is not None else _process_rss()
        self._jitter = jitter
        self._monitor: asyncio.Task[None] | None = None
        #: the connections to shed from (set by the connections themselves)
        self.readers: Collection[Reader] | None = None
        #: since when (loop time) loop lag or RSS has been over its limit, and which
        self.pressure_since: float | None = None
        self.pressure = ""
        self._next_shed = 0.0
        #: readers shed so far
        self.shed_total = 0
        #: streams of shed readers -> when (monotonic) their retry_after ends: a resume
        #: sooner is refused the same way (:meth:`shed_wait`)
        self._shed_streams: dict[str, float] = {}

    # ---- decisions
    def check(self, key: PrincipalKey) -> Refusal | None:
        """Why a new run of ``key`` would be refused now, or ``None`` if it is
        admitted. The caller counts a refusal it makes (:meth:`count`)."""
        lim = self.limits
        if lim.max_runs is not None and self.runs >= lim.max_runs:
            return self._refuse("runs", f"server is running {self.runs} agent runs (max_runs)")
        if lim.max_runs_per_principal is not None:
            mine = self.per_principal.get(key, 0)
            if mine >= lim.max_runs_per_principal:
                return self._refuse(
                    "principal_runs",
                    f"you have {mine} agent runs alive (max_runs_per_principal)",
                )
        if lim.max_loop_lag is not None and self.lag > lim.max_loop_lag:
            return self._refuse(
                "loop_lag",
                f"server is busy: event loop {self.lag * 1000:.0f} ms behind (max_loop_lag)",
            )
        if self.max_rss is not None and self.rss > self.max_rss:
            return self._refuse(
                "rss",
                f"server memory is {self.rss >> 20} MiB, above max_rss ({self.max_rss >> 20} MiB)",
            )
        return None

    def _refuse(self, reason: str, message: str) -> Refusal:
        return Refusal(reason, Overloaded(message, self._retry_after()))

    def _retry_after(self) -> float:
        return self.limits.retry_after * (1.0 + self._jitter())

    def under_pressure(self) -> str:
        """``loop_lag`` or ``rss`` while that signal is over its limit, else ``""``."""
        lim = self.limits
        if lim.max_loop_lag is not None and self.lag > lim.max_loop_lag:
            return "loop_lag"
        if self.max_rss is not None and self.rss > self.max_rss:
            return "rss"
        return ""

    def observe_pressure(self, now: float) -> int:
        """Note whether the server is under pressure at ``now`` (loop time); once it
        has been for ``shed_after`` seconds, shed the slowest readers (one round a
        second at most). Returns how many were shed now. Called every monitor tick."""
        pressure = self.under_pressure()
        if not pressure:
            if self.pressure_since is not None:
                log.info("pressure over (%s)", self.pressure)
            self.pressure_since, self.pressure = None, ""
            return 0
        if self.pressure_since is None:
            self.pressure_since, self.pressure = now, pressure
        after = self.limits.shed_after
        if after is None or now - self.pressure_since < after or now < self._next_shed:
            return 0
        self._next_shed = now + SHED_EVERY
        return self.shed_slowest(pressure)

    def shed_slowest(self, reason: str) -> int:
        """Detach the slowest readers: those whose oldest unacknowledged frame has
        waited at least :data:`SLOW_READER` (:meth:`Reader.behind`), slowest first, at
        most ``shed_fraction`` of all connections (at least one). Each is answered
        ``overloaded`` with a jittered ``retry_after``; its agents go on."""
        readers = self.readers
        if not readers:
            return 0
        slow = [(b, r) for r in list(readers) if (b := r.behind()) >= SLOW_READER]
        if not slow:
            return 0
        slow.sort(key=lambda br: br[0], reverse=True)
        n = max(1, math.floor(len(readers) * self.limits.shed_fraction))
        for _behind, reader in slow[:n]:
            reader.shed(self._retry_after(), reason)
        shed = min(n, len(slow))
        self.shed_total += shed
        log.warning(
            "shedding slow readers: %d of %d behind by %.1fs or more (%s over its limit "
            "for shed_after); their agents go on",
            shed,
            len(slow),
            SLOW_READER,
            reason,
        )
        return shed

    def remember_shed(self, streams: Collection[str], until: float) -> None:
        """The reader of ``streams`` was shed: it is to come back no sooner than
        ``until`` (monotonic seconds). Entries past their time are dropped here."""
        if not streams:
            return
        now = time.monotonic()
        kept = self._shed_streams
        if kept:
            for stream in [s for s, t in kept.items() if t <= now]:
                del kept[stream]
        for stream in streams:
            kept[stream] = max(until, kept.get(stream, 0.0))

    def shed_wait(self, stream: str) -> float:
        """Seconds until the shed reader of ``stream`` may resume it (0: now). A
        client that never read its shed's ``error overloaded`` (its link declared
        dead first) and came back too soon is refused again with what is left."""
        until = self._shed_streams.get(stream)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._shed_streams[stream]
            return 0.0
        return left

    def count(self, refusal: Refusal) -> None:
        """A start was refused for ``refusal`` (kept in :attr:`refused`)."""
        self.refused[refusal.reason] = self.refused.get(refusal.reason, 0) + 1

    def admitted(self, key: PrincipalKey) -> None:
        """A run of ``key`` is alive (counted until :meth:`released`)."""
        self.runs += 1
        self.per_principal[key] = self.per_principal.get(key, 0) + 1

    def released(self, key: PrincipalKey) -> None:
        """A run of ``key`` ended (or was never created)."""
        self.runs = max(0, self.runs - 1)
        n = self.per_principal.get(key, 0) - 1
        if n > 0:
            self.per_principal[key] = n
        else:
            self.per_principal.pop(key, None)

    # ---- the monitor
    def ensure_started(self) -> None:
        """Start the lag/RSS monitor on the running loop (idempotent)."""
        if self.limits.max_loop_lag is None and self.max_rss is None:
            return
        loop = asyncio.get_running_loop()
        m = self._monitor
        if m is None or m.done() or m.get_loop() is not loop:
            self._monitor = loop.create_task(self._watch(), name="unbroken-admission")

    async def stop(self) -> None:
        """Stop the monitor."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.limits.lag_interval
        rss_ticks = max(1, round(RSS_EVERY / interval))
        tick = 0
        self._sample_rss()
        while True:
            t0 = loop.time()
            await asyncio.sleep(interval)
            self.observe_lag(loop.time() - t0 - interval)
            tick += 1
            if tick % rss_ticks == 0:
                self._sample_rss()
            try:
                self.observe_pressure(loop.time())
            except Exception:  # a shed that failed must not stop the monitor
                log.exception("shedding slow readers failed")

    def observe_lag(self, sample: float) -> None:
        """Fold one lag sample (seconds late) into :attr:`lag`."""
        sample = max(0.0, sample)
        self.last_lag = sample
        before = self.lag
        self.lag = before + LAG_ALPHA * (sample - before)
        limit = self.limits.max_loop_lag
        if limit is not None and (before > limit) != (self.lag > limit):
            log.warning(
                "event loop lag %s: %.0f ms (max_loop_lag %.0f ms)",
                "above limit, refusing new runs" if self.lag > limit else "back under limit",
                self.lag * 1000,
                limit * 1000,
            )

    def _sample_rss(self) -> None:
        if self.max_rss is None:
            return
        try:
            self.rss = self._read_rss()
            self._rss_failed = False
        except Exception as exc:  # a failed read never refuses work: the last value stands
            # (at the descriptor limit /proc cannot be opened: once per failing spell, no
            # traceback every second)
            if not self._rss_failed:
                log.warning("could not read the process's RSS (%s); keeping the last value", exc)
            self._rss_failed = True


def _process_rss() -> Callable[[], int]:
    """A reader of this process's RSS in bytes: ``/proc/self/statm`` where there is
    one (Linux; what psutil reads there, without importing it), else psutil."""
    if os.path.exists(STATM):
        page = os.sysconf("SC_PAGE_SIZE")

        def statm() -> int:
            with open(STATM, "rb") as f:
                return int(f.read().split()[1]) * page

        return statm
    import psutil  # pragma: no cover - not Linux

    proc = psutil.Process()  # pragma: no cover

    def read() -> int:  # pragma: no cover
        return int(proc.memory_info().rss)

    return read  # pragma: no cover
