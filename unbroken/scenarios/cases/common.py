"""Checks more than one case makes (a JSON answer's final document, a multi-part
answer's parts), and small formatting helpers for the checks' details."""

from __future__ import annotations

from typing import Any

import jsonschema

from ..context import RunState
from ..run_result import Check


def seconds(v: float | None) -> str:
    """``1.234 s``, or a dash for nothing measured."""
    return "—" if v is None else f"{v:.3f} s"


def reconnects_after(run: RunState, t: float | None) -> int:
    """Reconnect attempts any client made after ``t`` (none without a ``t``)."""
    if t is None:
        return 0
    return sum(1 for w in run.watches for e in w.events if e.kind == "reconnecting" and e.at > t)


def completed_resumes(run: RunState) -> int:
    """Streams a second client resumed from a saved cursor to their end."""
    return sum(
        1
        for r in run.resumed_recs
        if r.error is None and r.answer is not None and r.answer.status == "completed"
    )


def refusal_text(refused: list[BaseException]) -> str:
    """The first refusal a client met, typed (or that there was none)."""
    return f"{type(refused[0]).__name__}: {refused[0]}" if refused else "the client was not refused"


def json_parts_check(run: RunState) -> Check:
    """Every JSON part of every stream equals the generated document, validates against
    its schema, and ended without a part error."""
    bad = []
    for rec, _ in run.streams():
        if rec.answer is None:
            continue
        for pid, part in rec.answer.parts.items():
            if part.kind != "json":
                continue
            try:
                value = part.value
                if part.schema:
                    jsonschema.validate(value, part.schema)
                assert rec.expected is not None
                if value != rec.expected.part_json(pid):
                    bad.append(f"{pid}: differs from the generated document")
                if part.error:
                    bad.append(f"{pid}: part error {part.error}")
            except (ValueError, jsonschema.ValidationError) as exc:
                bad.append(f"{pid}: {exc}")
    return Check(
        "TC2 final JSON equals the generated document and validates against its schema",
        not bad,
        "; ".join(bad[:3]) or "all JSON parts valid",
    )


def parts_tracked_check(run: RunState) -> Check:
    """Every part of a multi-part answer arrived whole, in the generated order, each
    started exactly once (the detail shows the part states held at the cut)."""
    bad = []
    for rec, _ in run.streams():
        assert rec.expected is not None
        want = [p.id for p in rec.expected.parts]
        if rec.answer is None:
            bad.append("no answer")
            continue
        if rec.answer.order != want:
            bad.append(f"order {rec.answer.order} != {want}")
        twice = [p for p, n in rec.part_starts.items() if n != 1]
        if twice:
            bad.append(f"parts started more than once: {twice}")
        for pid in want:
            got = rec.answer.parts.get(pid)
            if got is None or not got.ended or got.text != rec.expected.body(pid):
                bad.append(f"part {pid} incomplete or different")
    cs: dict[str, Any] = (run.client_snapshot or {}).get("streams", {})
    states: dict[str, str] = next(iter(cs.values())).get("parts", {}) if cs else {}
    return Check(
        "TC3 parts tracked: each complete, in order, started once",
        not bad,
        "; ".join(bad[:3])
        or "at the cut: " + (", ".join(f"{k} {v}" for k, v in states.items()) or "no snapshot"),
    )
