"""TC2: disconnection during JSON streaming. One JSON report streamed as fragments cut
anywhere; the partial document held at the cut parses, the final one is the generated
document and validates against its schema."""

from __future__ import annotations

from typing import ClassVar

from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import FaultMode
from .base import Case
from .common import json_parts_check


class TC2(Case):
    id = "TC2"
    foreign_app = (
        "TC1's faults over a JSON answer: against your service the answer is your "
        "agent's, so TC1 runs them"
    )
    quick_sample = (
        ("medium", "late", "intermittent", "rst", ""),
        ("large", "mid", "outage", "fin", ""),
    )
    full_kernel_sample = (
        ("medium", "mid", "kernel_loss", "rst", ""),
        ("medium", "mid", "kernel_blackhole", "fin", ""),
        ("xlarge", "mid", "kernel_receive_only", "blackhole", ""),
    )
    full_receive_only = True
    full_long_outage: ClassVar[FaultMode] = "fin"

    shape = "json"

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        snap = (run.client_snapshot or {}).get("streams", {})
        partial = [s.get("json_partial_ok") for s in snap.values()]
        return [
            json_parts_check(run),
            Check(
                "TC2 the partial JSON held at the cut parses to a value",
                all(p is not False for p in partial),
                f"partial parse at the cut: {partial}",
            ),
        ]


CASE = TC2()
