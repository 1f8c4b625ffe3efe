"""TC4: recovery with partial buffers preserved. Six streams (text, JSON, multi-part,
twice) on one connection, all mid-stream when the condition hits: every stream's log is
verified at the cut and at the end, the log at the cut a prefix of the final one."""

from __future__ import annotations

from ...chaos import GeneratedAnswer
from ..answers import AnswerShape, answer
from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import TIMINGS, RunSpec
from .base import FAULT_MODES, FULL_CONDITIONS, Case, cycle
from .common import json_parts_check

_SHAPES: tuple[AnswerShape, ...] = ("text", "json", "multipart") * 2


class TC4(Case):
    id = "TC4"
    foreign_app = None
    quick_sample = (("medium", "mid", "intermittent", "blackhole", ""),)
    full_kernel_sample = (
        ("medium", "mid", "kernel_loss", "blackhole", ""),
        ("medium", "mid", "kernel_blackhole", "rst", ""),
    )

    def full_rows(self) -> list[RunSpec]:
        """Six streams of small..large, every timing x fault, the conditions rotated; one
        long silent outage (no receive-only: none of its answers outgrows the window)."""
        return [
            *(
                self.spec((size, timing, cycle(FULL_CONDITIONS, a + b + c), fault, ""), "full")
                for a, size in enumerate(("small", "medium", "large"))
                for b, timing in enumerate(TIMINGS)
                for c, fault in enumerate(FAULT_MODES)
            ),
            self.spec(("medium", "mid", "long_outage", "blackhole", ""), "full"),
        ]

    def answers(self, spec: RunSpec) -> list[GeneratedAnswer]:
        seed = 1 + spec.repeat
        return [answer(k, spec.size_bytes, seed * 10 + i) for i, k in enumerate(_SHAPES)]

    def layout(self, spec: RunSpec) -> tuple[int, int]:
        return 1, len(_SHAPES)

    async def at_cut(self, run: RunState) -> None:
        # the log at the cut, verified there (one stream per call: the server's loop
        # serves the others in between)
        for rec in list(run.recs):
            if rec.stream.id:
                verdict = await run.h.verify_log(rec, require_end=False)
                run.cut_verdicts[rec.stream.id] = verdict

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        recs = run.recs
        snap = run.snapshot or {}
        heads = {k: v.get("head") for k, v in snap.get("streams", {}).items()}
        in_flight = [r for r in recs if run.open_at(r)]
        return [
            json_parts_check(run),
            Check(
                "TC4 several streams mid-stream at the cut, each buffered in the log",
                len(in_flight) >= 2 and len(heads) == len(recs),
                f"{len(in_flight)} of {len(recs)} streams unfinished at the cut; log heads "
                f"at the cut: {sorted(heads.values())}",
            ),
            await log_at_cut(run),
        ]


async def log_at_cut(run: RunState) -> Check:
    """Every stream's log verified at the cut (StateVerifier then), and the log at
    the cut is a prefix of the final one: the final chain's digest at the cut's head is
    the head digest read at the cut."""
    name = "TC4 every log intact at the cut (verified then) and a prefix of the final log"
    snap = (run.snapshot or {}).get("streams", {})
    if run.t_fault is None or not snap:
        return Check(name, False, "no snapshot at the cut")
    bad: list[str] = []
    for rec in run.recs:
        sid = rec.stream.id
        verdict = run.cut_verdicts.get(sid)
        if verdict is None:
            bad.append(f"{sid[:8]}: not verified at the cut")
        elif not verdict.ok:
            bad.append(f"at the cut: {verdict.detail}")
        info = snap.get(sid)
        if info is None:
            bad.append(f"{sid[:8]}: not in the log at the cut")
            continue
        head = int(info["head"])
        if head:
            now = await run.h.digest_at(sid, head)
            if now is None or now.hex() != info["head_digest"]:
                bad.append(f"{sid[:8]}: the final log differs from the log at the cut at {head}")
    heads = sorted(int(v["head"]) for v in snap.values())
    return Check(name, not bad, "; ".join(bad[:3]) or f"{len(snap)} logs at heads {heads} ok")


CASE = TC4()
