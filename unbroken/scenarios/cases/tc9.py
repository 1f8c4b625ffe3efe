"""TC9: concurrent stream interruptions. 100 (quick) or 1,000 (full) streams over many
connections, all hit by one network event: each stream completes exactly, each
connection resumes its own streams."""

from __future__ import annotations

import math

from ...chaos import GeneratedAnswer
from ..answers import answer
from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import SEED_CONDITIONS, RunSpec
from .base import FAULT_MODES, FAULT_ORDER, FULL_CONDITIONS, Case
from .common import json_parts_check

#: How many streams a run carries, and how many each client opens, by tier.
STREAMS = {"quick": 100, "full": 1000}
PER_CLIENT = {"quick": 5, "full": 10}


class TC9(Case):
    id = "TC9"
    foreign_app = None
    open_timeout = 3.0
    tick = 0.1
    extra_budget = 60.0
    quick_sample = (("small", "mid", "throttled", "rst", ""),)
    full_kernel_sample = (
        ("small", "mid", "kernel_loss", "rst", ""),
        ("small", "mid", "kernel_blackhole", "fin", ""),
    )

    def quick_rows(self) -> list[RunSpec]:
        """Each of the seed's conditions (100 streams)."""
        return [
            self.spec(("small", "mid", cond, FAULT_ORDER[i % 3], ""))
            for i, cond in enumerate(SEED_CONDITIONS)
        ]

    def full_rows(self) -> list[RunSpec]:
        """Every condition x fault (1,000 streams); one long silent outage."""
        return [
            *(
                self.spec(("small", "mid", cond, fault, ""), "full")
                for cond in FULL_CONDITIONS
                for fault in FAULT_MODES
            ),
            self.spec(("small", "mid", "long_outage", "fin", ""), "full"),
        ]

    def answers(self, spec: RunSpec) -> list[GeneratedAnswer]:
        # text: one process plays every user here, so per-stream client work (e.g. the
        # client's JSON schema validation) would be multiplied by the number of streams
        seed = 1 + spec.repeat
        n = STREAMS[spec.profile]
        return [answer("text", spec.size_bytes, seed * 100 + i % 10) for i in range(n)]

    def layout(self, spec: RunSpec) -> tuple[int, int]:
        n, per_client = STREAMS[spec.profile], PER_CLIENT[spec.profile]
        return math.ceil(n / per_client), per_client

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        recs = run.recs
        missing = []
        t_fault = run.t_fault
        if t_fault is not None:
            for rec in recs:
                ci = run.owner.get(id(rec), 0)
                drop = run.watches[ci].first("disconnected", t_fault - 1e-6)
                if drop is None or rec.settled_at is None or rec.settled_at <= drop.at:
                    continue  # it had its whole answer before its connection broke
                resumed = [
                    e for e in run.watches[ci].events if e.kind == "resumed" and e.at > drop.at
                ]
                if not any(e.stream == rec.stream.id for e in resumed):
                    missing.append(rec.stream.id[:8])
        return [
            json_parts_check(run),
            Check(
                "TC9 every interrupted stream was resumed by its own client",
                not missing,
                f"{len(missing)} streams never resumed"
                if missing
                else f"{len(recs)} streams over {len(run.clients)} connections",
            ),
        ]


CASE = TC9()
