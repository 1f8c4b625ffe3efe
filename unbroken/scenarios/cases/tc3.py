"""TC3: disconnection during multi-part delivery (text, JSON, a chart, a table, an
image). Each part is tracked: at the cut the client holds complete parts, at most one
partial, then missing ones; each arrives whole, in order, once."""

from __future__ import annotations

import re
from typing import ClassVar

from ...protocol.events import Kind
from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import FaultMode
from .base import Case
from .common import parts_tracked_check


class TC3(Case):
    id = "TC3"
    foreign_app = (
        "TC1's faults over a multi-part answer: against your service the answer is your "
        "agent's, so TC1 runs them"
    )
    quick_sample = (
        ("medium", "mid", "throttled", "blackhole", ""),
        ("xlarge", "mid", "clean", "fin", ""),
    )
    full_kernel_sample = (
        ("medium", "mid", "kernel_loss", "fin", ""),
        ("medium", "mid", "kernel_blackhole", "blackhole", ""),
        ("xlarge", "mid", "kernel_receive_only", "rst", ""),
    )
    full_receive_only = True
    full_long_outage: ClassVar[FaultMode] = "rst"

    shape = "multipart"

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        return [parts_tracked_check(run), parts_at_cut(run)]


def parts_at_cut(run: RunState) -> Check:
    """What the client held at the cut, part by part: complete parts (exactly the
    generated body) first, then at most one partial part (a prefix of its body: all of
    it when only its ``part_end`` is missing),
    then missing ones, in the generated order; and every part partial or missing then
    complete and identical at the end."""
    name = "TC3 part states at the cut: complete, then one partial, then missing; all whole"
    t = run.t_fault
    rec = run.recs[0] if run.recs else None
    if t is None or rec is None or rec.expected is None or not run.open_at(rec):
        return Check(name, True, "the fault hit after the answer had fully arrived")
    expected = rec.expected
    held = rec.events[: rec.count_at(t)]
    bodies: dict[str, list[str]] = {}
    ended: set[str] = set()
    for e in held:
        if e.kind == Kind.PART_START:
            bodies.setdefault(e.part, [])
        elif e.kind <= Kind.DATA:
            bodies.setdefault(e.part, []).append(e.body)
        elif e.kind == Kind.PART_END:
            ended.add(e.part)
    bad: list[str] = []
    states: list[str] = []
    shown: list[str] = []
    for p in expected.parts:
        want = expected.body(p.id)
        if p.id not in bodies:
            state = "missing"
        else:
            got = "".join(bodies[p.id])
            state = "complete" if p.id in ended else "partial"
            if state == "complete" and got != want:
                bad.append(f"{p.id} complete at the cut but not the generated body")
            # partial: a prefix of its body, possibly all of it (every chunk arrived,
            # its part_end not yet: the full tier's final-moment cuts meet this)
            if state == "partial" and not want.startswith(got):
                bad.append(f"{p.id} partial at the cut but not a prefix of its body")
        states.append(state)
        size = f" {len(''.join(bodies.get(p.id, []))):,}/{len(want):,} chars"
        shown.append(f"{p.id} {state}" + (size if state == "partial" else ""))
    order = "".join(x[0] for x in states)  # c..cp?m..
    if not re.fullmatch(r"c*p?m*", order):
        bad.append(f"states out of order: {', '.join(states)}")
    final = rec.answer
    for p, state in zip(expected.parts, states, strict=True):
        if state == "complete":
            continue
        got_part = final.parts.get(p.id) if final is not None else None
        if got_part is None or not got_part.ended or got_part.text != expected.body(p.id):
            bad.append(f"{p.id} ({state} at the cut) not complete and identical at the end")
    return Check(name, not bad, "; ".join(bad[:3]) or "at the cut: " + ", ".join(shown))


CASE = TC3()
