"""TC1: disconnection during text streaming. One text answer, the condition at the
timing point; the answer must arrive exactly, within the fault-free time + 5 s."""

from __future__ import annotations

from ..context import Baseline, RunState
from ..run_result import Check, RunResult
from ..spec import PATH_DOWN_CONDITIONS, SIZES, TIMINGS, RunSpec
from .base import FAULT_MODES, FULL_CONDITIONS, Case, Row
from .common import seconds


class TC1(Case):
    id = "TC1"
    checks_baseline = True  # "total time <= baseline + 5 s"
    foreign_app = None
    quick_sample = (
        ("medium", "mid", "throttled", "fin", ""),
        ("large", "early", "clean", "blackhole", ""),
        # a late ack once closed a finished stream's connection here
        ("xlarge", "mid", "asymmetric", "blackhole", ""),
        ("xlarge", "mid", "receive_only", "rst", ""),
        ("small", "mid", "long_outage", "blackhole", ""),  # the one long silent outage
    )
    quick_kernel_sample = (
        ("small", "mid", "kernel_blackhole", "fin", ""),
        ("medium", "mid", "kernel_loss", "rst", ""),
    )
    full_kernel_sample = (
        ("small", "mid", "kernel_loss", "rst", ""),
        ("medium", "early", "kernel_loss", "fin", ""),
        ("large", "late", "kernel_loss", "blackhole", ""),
        ("small", "mid", "kernel_blackhole", "fin", ""),
        ("medium", "early", "kernel_blackhole", "rst", ""),
        ("xlarge", "mid", "kernel_blackhole", "blackhole", ""),
        ("xlarge", "early", "kernel_receive_only", "rst", ""),
        ("xlarge", "mid", "kernel_receive_only", "fin", ""),
        ("xlarge", "late", "kernel_receive_only", "blackhole", ""),
    )

    def full_rows(self) -> list[RunSpec]:
        """Every size x timing x condition x fault; receive-only with extra-large
        answers at every timing; a long silent outage for every size and fault."""
        faults = FAULT_MODES
        rows: list[Row] = [
            (size, timing, cond, fault, "")
            for size in SIZES
            for timing in TIMINGS
            for cond in FULL_CONDITIONS
            for fault in faults
        ]
        rows += [("xlarge", timing, "receive_only", f, "") for timing in TIMINGS for f in faults]
        rows += [(size, "mid", "long_outage", fault, "") for size in SIZES for fault in faults]
        return [self.spec(row, "full") for row in rows]

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
