"""TC13: the server is temporarily unable to take more streams (load): it refuses new
work gracefully and the clients retry with backoff.

The server's admission is set to a capacity of ``C`` live runs and twice that many
streams are offered in one burst (one per client, all at once). The load is the fault:
no network fault is played. Every admitted stream must end exact; every refused start
must have been answered ``overloaded`` with a ``retry_after_ms``, and the client's next
try must come no sooner than that and end exact too; the in-flight streams are never
shed (the server never holds more than ``C`` runs, no connection drops, every admitted
stream is delivered whole while the refused ones knock).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ...chaos import GeneratedAnswer
from ...errors import Overloaded
from ...server.admission import AdmissionLimits
from ..answers import answer
from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import RunSpec
from .base import Case

#: Live runs the server admits (its capacity), by tier; twice as many are offered.
CAPACITY = {"quick": 4, "full": 16}
#: The floor of ``retry_after`` the server answers with (s); jitter adds up to as much.
RETRY_AFTER = 0.3


@dataclass
class StartLog:
    """What the server's hub saw of each start: (req, monotonic time, outcome, retry
    after), and the most runs it held at once."""

    tries: list[tuple[str, float, str, float]] = field(default_factory=list)
    peak_runs: int = 0

    def by_req(self) -> dict[str, list[tuple[float, str, float]]]:
        out: dict[str, list[tuple[float, str, float]]] = {}
        for req, t, outcome, wait in self.tries:
            out.setdefault(req, []).append((t, outcome, wait))
        return out


class TC13(Case):
    id = "TC13"
    sized = False
    extra_budget = 30.0

    def __init__(self) -> None:
        self._starts: dict[int, StartLog] = {}  # id(run) -> what its server saw

    def disruption(self, spec: RunSpec) -> Literal["recovers", "gives_up", "none"]:
        """The load is the fault: no connection may break."""
        return "none"

    def quick_rows(self) -> list[RunSpec]:
        """One burst of 2 x 4 streams."""
        return [self.spec(("small", "mid", "clean", "fin", ""))]

    def full_rows(self) -> list[RunSpec]:
        """A burst of 2 x 16 streams."""
        return [self.spec(("small", "mid", "clean", "fin", ""), "full")]

    def answers(self, spec: RunSpec) -> list[GeneratedAnswer]:
        n = 2 * CAPACITY[spec.profile]
        return [answer("text", 8_000, 1 + spec.repeat * 100 + i) for i in range(n)]

    def layout(self, spec: RunSpec) -> tuple[int, int]:
        return 2 * CAPACITY[spec.profile], 1  # one stream per client: a true burst

    def pace(self, spec: RunSpec) -> float:
        return 1.0  # long enough that the refused starts knock while the first run

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        capacity = CAPACITY[run.spec.profile]
        starts = StartLog()
        self._starts[id(run)] = starts
        hub = run.h.app.hub

        async def install() -> None:  # on the server's loop, before any client connects
            limits = AdmissionLimits(
                max_runs=capacity,
                max_runs_per_principal=None,
                max_loop_lag=None,
                max_rss=None,
                retry_after=RETRY_AFTER,
            )
            hub.set_admission(limits)
            real_start = hub.start

            async def start(principal: Any, req: str, agent: str, input: Any, **kw: Any) -> Any:
                try:
                    created = await real_start(principal, req, agent, input, **kw)
                except Overloaded as exc:
                    starts.tries.append((req, time.monotonic(), "overloaded", exc.retry_after))
                    raise
                starts.tries.append((req, time.monotonic(), "started", 0.0))
                starts.peak_runs = max(starts.peak_runs, len(hub.runs))
                return created

            hub.start = start  # type: ignore[method-assign]

        await run.h.server.call(install)
        await python_clients(run)

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        """The load is the fault: nothing is played on the network."""
        run.mark("fault")

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        capacity = CAPACITY[run.spec.profile]
        starts = self._starts.pop(id(run), StartLog())
        tries = starts.by_req()
        refused = {req: t for req, t in tries.items() if any(o == "overloaded" for _, o, _ in t)}
        early: list[str] = []
        unfinished: list[str] = []
        for req, seq in refused.items():
            if seq[-1][1] != "started":
                unfinished.append(req)
            for (t0, o0, wait), (t1, _, _) in itertools.pairwise(seq):
                if o0 == "overloaded" and t1 - t0 < wait * 0.95:
                    early.append(f"{req}: {t1 - t0:.3f}s < {wait:.3f}s")
        drops = sum(1 for w in run.watches for e in w.events if e.kind == "disconnected")
        offered = 2 * capacity
        return [
            Check(
                "TC13 the burst was refused beyond capacity (overloaded, retry_after_ms)",
                len(refused) >= offered - capacity
                and all(w > 0 for _, _, o, w in starts.tries if o == "overloaded"),
                f"{len(refused)} of {offered} starts refused at least once "
                f"(capacity {capacity}); {len(starts.tries)} tries in all",
            ),
            Check(
                "TC13 every refused start was retried no sooner than retry_after and started",
                not early and not unfinished,
                "; ".join(early[:3] + [f"{r} never started" for r in unfinished[:3]])
                or f"{len(refused)} refused starts retried after their retry_after_ms",
            ),
            Check(
                "TC13 in-flight streams never shed: runs <= capacity, no connection dropped",
                starts.peak_runs <= capacity and drops == 0,
                f"peak {starts.peak_runs} runs (capacity {capacity}), {drops} drops",
            ),
        ]


CASE = TC13()
