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
    """Every target as measured (``missed_targets``: those measured and not met that fail
    the run)."""
    informational_missed: list[Evaluation] = field(default_factory=list)
    """Informational targets measured and not met: reported, not failing (unless
    ``strict_targets``, then they are in ``missed_targets``)."""
    previous_regressions: list[Comparison] = field(default_factory=list)
    """Regressions against the history's previous run: flagged, not failing."""

    @property
    def ok(self) -> bool:
        return (
            not self.failed_runs
            and not self.missed_targets
            and not self.regressions
            and not self.interrupted
        )


def write_report(
    results: Results,
    path: Path,
    baseline: Results | None = None,
    *,
    strict_targets: bool = False,
    previous: tuple[str, Results] | None = None,
    baseline_name: str = "the baseline",
) -> tuple[Outcome, list[Comparison] | None]:
    """Write ``report.html`` to ``path``; returns the outcome and the comparisons.

    ``strict_targets``: a missed informational target (CPU overhead) fails the outcome
    too; by default it is reported only. ``previous``: the history's previous run (its
    id, its results): compared and flagged, never failing."""
    comparisons = (
        compare(results, baseline, strict_targets=strict_targets) if baseline is not None else None
    )
    before = (
        (previous[0], compare(results, previous[1], strict_targets=strict_targets))
        if previous is not None
        else None
    )
    evaluations = evaluate(results.runs)
    page = html.build(
        results,
        comparisons,
        evaluations,
        strict_targets=strict_targets,
        previous=before,
        baseline_name=baseline_name,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, "utf-8")
    failing = missed(evaluations, strict=strict_targets)
    outcome = Outcome(
        failed_runs=sum(1 for r in results.runs if r.failed),
        missed_targets=failing,
        regressions=regressions(comparisons or []),
        interrupted=results.interrupted,
        evaluations=evaluations,
        informational_missed=[e for e in missed(evaluations) if e not in failing],
        previous_regressions=regressions(before[1]) if before is not None else [],
    )
    return outcome, comparisons


__all__ = ["Comparison", "Outcome", "compare", "regressions", "write_report"]
