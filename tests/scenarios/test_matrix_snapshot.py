"""The quick and full matrices are exactly the ones taken before the scenarios became
plug-ins (``fixtures/matrices.json``, written from the catalog of commit 67c186d): the
same runs, in the same order, with the same sizes; the same scenario records. Deliberate
changes since: TC11 (the browser case) joined, then TC10, TC12, TC13, TC15 and TC14 (and
TC5's record reworded): their rows, records and coverage the only difference (each time
the fixture was rewritten with the others' rows checked equal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unbroken.scenarios.catalog import (
    COVERED,
    KERNEL_SAMPLE,
    QUICK_SAMPLE,
    SCENARIOS,
    full_matrix,
    quick_matrix,
)

SNAPSHOT: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "matrices.json").read_text()
)


@pytest.mark.parametrize("tier", ["quick", "full"])
def test_the_matrix_is_the_snapshot(tier: str) -> None:
    built = [s.to_dict() for s in (quick_matrix() if tier == "quick" else full_matrix())]
    want = SNAPSHOT[tier]
    assert len(built) == len(want)
    for i, (got, expected) in enumerate(zip(built, want, strict=True)):
        assert got == expected, f"run {i} of the {tier} matrix differs"


def test_the_scenario_records_are_the_snapshot() -> None:
    assert json.loads(json.dumps([s.to_dict() for s in SCENARIOS])) == SNAPSHOT["scenarios"]
    assert list(COVERED) == SNAPSHOT["covered"]


def test_the_samples_are_the_snapshot() -> None:
    assert [list(r) for r in QUICK_SAMPLE] == SNAPSHOT["quick_sample"]
    assert [list(r) for r in KERNEL_SAMPLE] == SNAPSHOT["kernel_sample"]
