"""The seed's targets, evaluated on a matrix's runs (each with the value measured)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .cases import CASES
from .catalog import SEED_TARGETS, Target
from .run_result import RunResult, pooled_samples


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A target and what was measured: ``met`` is None when nothing measured it."""

    target: Target
    measured: float | None
    met: bool | None
    n: int
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.target.id,
            "label": self.target.label,
            "asked_for": self.target.seed_text,
            "op": self.target.op,
            "threshold": self.target.threshold,
            "unit": self.target.unit,
            "measured": None if self.measured is None else round(self.measured, 6),
            "met": self.met,
            "informational": self.target.informational,
            "n": self.n,
            "detail": self.detail,
        }

    def shown(self) -> str:
        """The measured value as the report prints it."""
        if self.measured is None:
            return "—"
        t = self.target
        if t.unit == "s":
            if self.measured < 10:
                return f"{self.measured * 1000:.0f} ms"
            return f"{self.measured:.1f} s"
        if t.unit == "%":
            return f"{self.measured:.3f} %" if self.measured < 100 else "100 %"
        return f"{self.measured:.1f} {t.unit}"


def _gives_up(r: RunResult) -> bool:
    """Runs in which the client must give up, not recover (its case says so: TC5
    'long' and 'silent')."""
    case = CASES.get(r.spec.scenario)
    return case is not None and case.gives_up(r.spec)


def _p95(target: Target, values: list[float], what: str, plural: str) -> Evaluation:
    if not values:
        return Evaluation(target, None, None, 0, f"no {what} measured")
    v = percentile(values, 0.95)
    worst = max(values)
    return Evaluation(
        target,
        v,
        target.met(v),
        len(values),
        f"p95 of {len(values):,} {plural}; median {percentile(values, 0.5):.3f} s, "
        f"worst {worst:.3f} s",
    )


def evaluate(runs: Iterable[RunResult]) -> list[Evaluation]:
    """Every seed target against ``runs`` (errored runs count as failures where they
    should have delivered)."""
    runs = list(runs)
    by_id = {t.id: t for t in SEED_TARGETS}
    out: list[Evaluation] = []

    small = [r for r in runs if not _gives_up(r) and (r.metrics.partial_bytes or 0) < 1_000_000]
    reconnect = pooled_samples(small, "reconnect")
    out.append(_p95(by_id["reconnect"], reconnect, "reconnection", "reconnections"))
    resume = pooled_samples(runs, "resume")
    out.append(_p95(by_id["resume"], resume, "resume", "resumes"))
    # (on a throttled link the rest of the answer takes what the link's rate allows:
    # its completion time says how slow the link is, not how fast the recovery was)
    recovery = pooled_samples(
        [r for r in runs if not _gives_up(r) and r.spec.condition != "throttled"], "recovery"
    )
    out.append(_p95(by_id["recovery"], recovery, "recovery", "recoveries"))

    mem = [r.metrics.log_peak_mb for r in runs if r.metrics.log_peak_mb is not None]
    t = by_id["memory"]
    if mem:
        v = max(mem)
        out.append(Evaluation(t, v, t.met(v), len(mem), f"max over {len(mem)} runs"))
    else:
        out.append(Evaluation(t, None, None, 0, "no run measured"))

    streams = sum(max(r.streams, 1 if r.status == "error" else 0) for r in runs)
    complete = sum(r.streams_complete for r in runs)
    t = by_id["completion"]
    if streams:
        v = 100.0 * complete / streams
        out.append(Evaluation(t, v, t.met(v), streams, f"{complete:,} of {streams:,} streams"))
    else:
        out.append(Evaluation(t, None, None, 0, "no stream ran"))

    exact = sum(r.streams_exact for r in runs)
    t = by_id["integrity"]
    if complete:
        v = 100.0 * min(exact, complete) / complete
        out.append(
            Evaluation(t, v, t.met(v), complete, f"{exact:,} of {complete:,} completed streams")
        )
    else:
        out.append(Evaluation(t, None, None, 0, "no stream completed"))

    meant = [
        r for r in runs if r.recovered is not None or (r.status == "error" and not _gives_up(r))
    ]
    t = by_id["recovery_rate"]
    if meant:
        ok = sum(1 for r in meant if r.recovered)
        v = 100.0 * ok / len(meant)
        out.append(Evaluation(t, v, t.met(v), len(meant), f"{ok:,} of {len(meant):,} runs"))
    else:
        out.append(Evaluation(t, None, None, 0, "no run meant to recover"))

    timed = [r for r in runs if r.timeout_ok is not None]
    t = by_id["timeouts"]
    if timed:
        ok = sum(1 for r in timed if r.timeout_ok)
        v = 100.0 * ok / len(timed)
        out.append(Evaluation(t, v, t.met(v), len(timed), f"{ok:,} of {len(timed):,} runs"))
    else:
        out.append(Evaluation(t, None, None, 0, "no TC5 or blackhole run"))

    measured = [r for r in runs if r.metrics.server_cpu_s is not None and r.metrics.baseline_cpu_s]
    t = by_id["cpu"]
    if measured:
        fault, base = _cpu(measured)
        v = 100.0 * (fault / base - 1.0) if base > 0 else float("nan")
        by_size = []
        for size in ("small", "medium", "large", "xlarge"):
            group = [r for r in measured if r.spec.size == size]
            if group:
                f, b = _cpu(group)
                by_size.append(f"{size} {100.0 * (f / b - 1.0):+.0f} %")
        out.append(
            Evaluation(
                t,
                v,
                t.met(v),
                len(measured),
                f"{fault:.2f} s with faults vs {base:.2f} s without, {len(measured)} runs; "
                f"by answer size: {', '.join(by_size)}",
            )
        )
    else:
        out.append(Evaluation(t, None, None, 0, "no CPU measured"))
    return out


def _cpu(runs: list[RunResult]) -> tuple[float, float]:
    return (
        sum(r.metrics.server_cpu_s or 0.0 for r in runs),
        sum(r.metrics.baseline_cpu_s or 0.0 for r in runs),
    )


def missed(evaluations: Iterable[Evaluation], *, strict: bool = True) -> list[Evaluation]:
    """Targets measured and not met (``strict=False``: informational targets left out)."""
    return [e for e in evaluations if e.met is False and (strict or not e.target.informational)]
