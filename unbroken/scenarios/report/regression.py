"""Regressions against an earlier ``results.json``: slower percentiles, lower completion,
targets met then and missed now."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..catalog import scenario_order
from ..history import CPU_MORE_PTS, SLOWER_ABS, SLOWER_RATIO, summarise
from ..results import Results, RunResult, pooled_samples
from ..targets import evaluate, percentile


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric of one scenario, then and now."""

    scenario: str
    metric: str
    before: float | None
    after: float | None
    unit: str
    regression: bool
    note: str = ""

    def change(self) -> str:
        if self.before is None or self.after is None:
            return "—"
        if self.unit == "%":
            return f"{self.after - self.before:+.2f} pt"
        if self.before == 0:
            return "new" if self.after else "="
        return f"{(self.after / self.before - 1) * 100:+.0f} %"

    def to_dict(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "unit": self.unit,
            "regression": self.regression,
            "change": self.change(),
            "note": self.note,
        }


def _by_scenario(runs: list[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        out[r.spec.scenario].append(r)
    return out


def _completion(runs: list[RunResult]) -> float | None:
    streams = sum(max(r.streams, 1) for r in runs)
    if not streams:
        return None
    return 100.0 * sum(r.streams_exact for r in runs) / streams


def compare(
    current: Results, baseline: Results, *, strict_targets: bool = False
) -> list[Comparison]:
    """Per scenario present in both: completion, p50/p95 of recovery and resume times; and
    every target (an informational target met before and missed now is a regression only
    with ``strict_targets``)."""
    out: list[Comparison] = []
    now, then = _by_scenario(current.runs), _by_scenario(baseline.runs)
    cpu_now, cpu_then = summarise(current.runs), summarise(baseline.runs)
    for sid in sorted(set(now) & set(then), key=scenario_order):
        a, b = then[sid], now[sid]
        ca, cb = _completion(a), _completion(b)
        out.append(
            Comparison(
                sid,
                "exact streams",
                ca,
                cb,
                "%",
                ca is not None and cb is not None and cb < ca - 1e-9,
            )
        )
        for key in ("recovery", "resume"):
            sa, sb = pooled_samples(a, key), pooled_samples(b, key)
            if not sa or not sb:
                continue
            for q, name in ((0.5, "p50"), (0.95, "p95")):
                va, vb = percentile(sa, q), percentile(sb, q)
                slower = vb > va * SLOWER_RATIO and vb - va > SLOWER_ABS
                out.append(Comparison(sid, f"{key} {name}", va, vb, "s", slower))
        oa = cpu_then[sid][6] if sid in cpu_then else None
        ob = cpu_now[sid][6] if sid in cpu_now else None
        if oa is not None and ob is not None:
            more = ob - oa > CPU_MORE_PTS
            note = f"+{ob - oa:.0f} pt (informational)" if more and not strict_targets else ""
            out.append(Comparison(sid, "CPU overhead", oa, ob, "%", more and strict_targets, note))
    before = {e.target.id: e for e in evaluate(baseline.runs)}
    for e in evaluate(current.runs):
        old = before.get(e.target.id)
        if old is None:
            continue
        lost = old.met is True and e.met is False
        counts = lost and (strict_targets or not e.target.informational)
        note = ""
        if lost:
            note = "met before, missed now" + ("" if counts else " (informational)")
        t = e.target
        out.append(Comparison("targets", t.label, old.measured, e.measured, t.unit, counts, note))
    return out


def regressions(comparisons: list[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.regression]
