"""TC1: disconnection during text streaming. One text answer, the condition at the
timing point; the answer must arrive exactly, within the fault-free time + 5 s."""

from __future__ import annotations

from ..catalog import PATH_DOWN_CONDITIONS
from ..context import Baseline, RunState
from ..run_result import Check, RunResult
from .base import Case
from .common import seconds


class TC1(Case):
    id = "TC1"

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        base = run.baseline
        assert base is not None
        total = result.metrics.total_s
        allowed, why = allowance(run, base)
        return [
            Check(
                "TC1 total time <= baseline + 5 s",
                total is not None and total <= allowed + 5.0,
                f"{seconds(total)} vs baseline {base.total_s:.2f} s{why}",
            )
        ]


def allowance(run: RunState, base: Baseline) -> tuple[float, str]:
    """The fault-free time TC1's "+ 5 s" is counted from: the baseline, at the throttled
    rate on a throttled link, plus the time the path was down for a condition that held
    it down (nothing can arrive meanwhile)."""
    spec = run.spec
    allowed, why = base.total_s, ""
    if spec.condition == "throttled":
        allowed = base.total_s / spec.profile_info.throttle
        why = f" (÷ {spec.profile_info.throttle:g}: the throttled rate)"
    if spec.condition in PATH_DOWN_CONDITIONS and run.down_until and run.t_fault:
        down = run.down_until - run.t_fault
        allowed += down
        why += f" (+ {down:.1f} s the path was down)"
    return allowed, why


CASE = TC1()
