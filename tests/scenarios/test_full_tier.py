"""The full tier (``pytest -m full``, or ``unbroken chaos run --full``): the crossed matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.scenarios.catalog import RunSpec, full_matrix
from unbroken.scenarios.runner import run_one

from .test_quick_tier import explain

pytestmark = [pytest.mark.full, pytest.mark.timeout(300)]


@pytest.mark.parametrize("spec", full_matrix(), ids=lambda s: s.id)
async def test_scenario_holds_in_the_full_matrix(spec: RunSpec, tmp_path: Path) -> None:
    result = await run_one(spec, artefacts=tmp_path)
    if result.skipped:  # a kernel-level condition without root: reported as skipped
        pytest.skip(result.error)
    assert result.passed, explain(result, tmp_path)
    assert result.exact
