"""TC8: large response stream interruption. A 10.5 MB answer cut at 10, 25, 50, 75 or
95 %: the server re-sends no more than was in flight at the cut plus one frame."""

from __future__ import annotations

from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import SEED_CONDITIONS, TC8_CUTS, RunSpec
from .base import FAULT_MODES, FAULT_ORDER, FULL_CONDITIONS, Case

#: How long the paced agent takes to write the 10 MB+ answer, by tier (s).
SECONDS = {"quick": 1.5, "full": 2.5}


class TC8(Case):
    id = "TC8"
    foreign_app = None
    default_size = "xlarge"
    default_timing = "p50"
    sized = False  # always 10 MB+ (RunSpec.size_bytes): --size does not filter it out
    quick_sample = (("xlarge", "p50", "receive_only", "blackhole", ""),)
    full_kernel_sample = (
        ("xlarge", "p25", "kernel_loss", "rst", ""),
        ("xlarge", "p50", "kernel_receive_only", "fin", ""),
        ("xlarge", "p75", "kernel_blackhole", "blackhole", ""),
    )

    def quick_rows(self) -> list[RunSpec]:
        """Each cut point once, under each of the seed's conditions (the asymmetric drop
        mid-answer, where bytes are still to come)."""
        cuts = ("p95", "p10", "p75", "p25", "p50")
        return [
            self.spec(("xlarge", cut, cond, FAULT_ORDER[i % 3], ""))
            for i, (cond, cut) in enumerate(zip(SEED_CONDITIONS, cuts, strict=True))
        ]

    def full_rows(self) -> list[RunSpec]:
        """Every cut point x condition x fault, receive-only included; one long outage."""
        return [
            *(
                self.spec(("xlarge", cut, cond, fault, ""), "full")
                for cut in TC8_CUTS
                for cond in (*FULL_CONDITIONS, "receive_only")
                for fault in FAULT_MODES
            ),
            self.spec(("xlarge", "p50", "long_outage", "rst", ""), "full"),
        ]

    def pace(self, spec: RunSpec) -> float:
        return SECONDS[spec.profile]

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        m = result.metrics
        episodes = run.episodes
        over = [e for e in episodes if not e.within_limit]
        return [
            Check(
                "TC8 re-sent bytes <= in flight at the cut + one frame",
                not over,
                "; ".join(e.describe() for e in over[:2])
                or f"{len(episodes)} resumes: re-sent {m.bytes_resent or 0:,} B for "
                f"{m.bytes_inflight or 0:,} B in flight",
            )
        ]


CASE = TC8()
