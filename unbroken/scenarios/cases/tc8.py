"""TC8: large response stream interruption. A 10.5 MB answer cut at 10, 25, 50, 75 or
95 %: the server re-sends no more than was in flight at the cut plus one frame."""

from __future__ import annotations

from ..catalog import RunSpec
from ..context import RunState
from ..run_result import Check, RunResult
from .base import Case


class TC8(Case):
    id = "TC8"

    def pace(self, spec: RunSpec) -> float:
        return spec.profile_info.tc8_seconds

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
