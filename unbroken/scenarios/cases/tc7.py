"""TC7: cascading connection failures. The condition hits at the timing point, then
each new connection is cut again right after its welcome (three times) and once more
2 KB later; the client resumes from its last verified seq after every drop."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ...chaos.toxics import CutMode
from ..context import RunState
from ..faults import timed_play
from ..harness import reap
from ..run_result import Check, RunResult
from ..spec import RunSpec
from .base import FAULT_MODES, FULL_CONDITIONS, Case
from .common import parts_tracked_check


class TC7(Case):
    id = "TC7"
    foreign_app = None
    shape = "multipart"
    rotation = 4  # the fifth of TC1-TC4, TC7
    quick_order = 4.5  # its quick rows stand right after TC4's (as they always have)
    full_kernel_sample = (
        ("medium", "mid", "kernel_loss", "rst", ""),
        ("medium", "mid", "kernel_blackhole", "fin", ""),
    )

    def quick_rows(self) -> list[RunSpec]:
        """Small answers under each of the seed's conditions, rotated as TC1-TC4's; the
        cascade starts while the answer is still flowing (no final or immediate cut)."""
        return [
            replace(s, timing="mid") if s.timing in ("final", "immediate") else s
            for s in super().quick_rows()
        ]

    def full_rows(self) -> list[RunSpec]:
        """Every condition x fault x timing (but final and immediate), medium answers."""
        return [
            self.spec(("medium", timing, cond, fault, ""), "full")
            for cond in FULL_CONDITIONS
            for fault in FAULT_MODES
            for timing in ("early", "mid", "late")
        ]

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        # the cascade starts as soon as the condition first breaks the link
        player = asyncio.get_running_loop().create_task(timed_play(run, total_events))
        try:
            await run.faulted.wait()
            await cascade(run)
        except BaseException:
            # cut short (the run timed out and cancelled the plan): the player goes too
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
            raise
        await player

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        drops = result.metrics.drops
        return [
            parts_tracked_check(run),
            Check("TC7 at least four drops", drops >= 4, f"{drops} drops"),
        ]


async def cascade(run: RunState) -> None:
    """Cut each new connection right after its welcome (3x: the client is connected
    but has resumed nothing), then the next one 2 KB later."""
    p = run.h.proxy
    plan: tuple[tuple[int, CutMode], ...] = (
        (0, "rst"),
        (0, "fin"),
        (0, "rst"),
        (2048, "rst"),
    )
    for k, (extra, mode) in enumerate(plan):
        cut = p.cut_after_bytes(run.welcome_bytes + extra, mode=mode)
        streams = asyncio.gather(*(r.done() for r in run.recs))
        fired = asyncio.ensure_future(cut.wait())
        waits: set[asyncio.Future[Any]] = {fired, streams}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await reap(streams)
        if not fired.done():
            cut.cancel()
            await reap(fired)
            return  # the answer arrived before this cut could fire
        where = "right after the welcome" if not extra else f"{extra} B after the welcome"
        run.mark(f"cascade cut {k + 1}/4 ({mode}) {where}")


CASE = TC7()
