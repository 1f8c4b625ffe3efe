"""TC6: rapid reconnection during stream start. The fault hits within 100 ms of the
start: before 'started' reaches the client (``before_started``: the start is retried
with the same request id) or right after it (``after_started``); the agent runs once."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ..context import RunState
from ..faults import kernel_loss, play
from ..run_result import Check, RunResult
from ..spec import SEED_CONDITIONS, RunSpec
from .base import FAULT_MODES, FAULT_ORDER, FULL_CONDITIONS, Case
from .common import seconds

#: the process's own lateness on a busy machine: the fault's moment is the server's
#: 'started' (cut on the wire, or the condition played right after it), which a
#: stalled process sends late (a full-tier run at load 12-14 saw the server take
#: 133 ms from reading 'start' to sending 'started', with no await that waits)
LATENESS_SLACK = 0.25


class TC6(Case):
    id = "TC6"
    foreign_app = None
    baseline_as = "TC1"
    full_kernel_sample = (
        ("small", "immediate", "kernel_loss", "rst", "before_started"),
        ("small", "immediate", "kernel_blackhole", "fin", "after_started"),
    )

    def quick_rows(self) -> list[RunSpec]:
        """Each of the seed's conditions, before and after 'started' in turn; and one
        more cut after it (a reset on a clean disconnect)."""
        return [
            *(
                self.spec(
                    (
                        "small",
                        "immediate",
                        cond,
                        FAULT_ORDER[i % 3],
                        "before_started" if i % 2 == 0 else "after_started",
                    )
                )
                for i, cond in enumerate(SEED_CONDITIONS)
            ),
            self.spec(("small", "immediate", "clean", "rst", "after_started")),
        ]

    def full_rows(self) -> list[RunSpec]:
        """Every condition x fault, before and after started, small and medium."""
        return [
            self.spec((size, "immediate", cond, fault, variant), "full")
            for size in ("small", "medium")
            for cond in FULL_CONDITIONS
            for fault in FAULT_MODES
            for variant in ("before_started", "after_started")
        ]

    def early_faults(self, run: RunState) -> Coroutine[Any, Any, None] | None:
        if run.spec.variant != "before_started":
            return None
        # the welcome is through: cut right there, so 'started' never arrives
        fault = run.spec.fault
        byte_cut = run.h.proxy.cut_after_bytes(run.welcome_bytes, mode=fault)
        byte_cut.fired.add_done_callback(
            lambda f: None if f.cancelled() else run.mark(f"'started' cut ({fault})")
        )
        run.cancel_at_end.append(byte_cut.cancel)
        return _after_started_cut(run, byte_cut)

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        # 'after started': at once, within 100 ms of the start
        await play(run, run.spec.condition, run.spec.fault, ramp=0.03)

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        recs = run.recs
        calls = [run.h.book.calls.get(r.key, 0) for r in recs]
        at = (run.t_fault - run.t_start) if run.t_fault is not None else None
        out = [
            Check("TC6 the agent ran exactly once", calls == [1] * len(recs), f"runs: {calls}"),
            Check(
                "TC6 the fault hit within 100 ms of the start",
                at is not None and at <= 0.1 + LATENESS_SLACK,
                f"fault at {seconds(at)} after the start "
                f"(+{LATENESS_SLACK:g} s allowed for the process's lateness)",
            ),
        ]
        if run.spec.variant == "before_started":
            ok = any("'started' cut" in what for _, what in run.faults)
            retried = sum(1 for w in run.watches for e in w.events if e.kind == "connected") >= 2
            out.append(
                Check(
                    "TC6 'started' was lost on the wire and the start retried",
                    ok and retried,
                    f"cut fired: {ok}; reconnected: {retried}",
                )
            )
        return out


async def _after_started_cut(run: RunState, byte_cut: Any) -> None:
    """Once the 'started' frame was cut on the wire, the rest of the condition plays on
    the connections that follow."""
    await byte_cut.wait()
    if run.spec.condition == "kernel_loss":
        await kernel_loss(run)  # the retried start and the whole answer over the lossy path
    elif run.spec.condition != "clean":
        await play(run, run.spec.condition, run.spec.fault, ramp=0.05)


CASE = TC6()
