"""The HTML report (``report.html``) and the regression check of a matrix run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..results import Results
from ..targets import Evaluation, evaluate, missed
from . import html
from .regression import Comparison, compare, regressions


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a report found: failed runs, missed targets, regressions. ``ok`` is the exit
    status's meaning (0 when ok)."""

    failed_runs: int
    missed_targets: list[Evaluation]
    regressions: list[Comparison]
    interrupted: bool
    evaluations: list[Evaluation] = field(default_factory=list)
    """Every seed target as measured (``missed_targets``: those measured and not met)."""

    @property
    def ok(self) -> bool:
        return (
            not self.failed_runs
            and not self.missed_targets
            and not self.regressions
            and not self.interrupted
        )


def write_report(
    results: Results, path: Path, baseline: Results | None = None
) -> tuple[Outcome, list[Comparison] | None]:
    """Write ``report.html`` to ``path``; returns the outcome and the comparisons."""
    comparisons = compare(results, baseline) if baseline is not None else None
    evaluations = evaluate(results.runs)
    page = html.build(results, comparisons, evaluations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, "utf-8")
    outcome = Outcome(
        failed_runs=sum(1 for r in results.runs if r.failed),
        missed_targets=missed(evaluations),
        regressions=regressions(comparisons or []),
        interrupted=results.interrupted,
        evaluations=evaluations,
    )
    return outcome, comparisons


__all__ = ["Comparison", "Outcome", "compare", "regressions", "write_report"]
