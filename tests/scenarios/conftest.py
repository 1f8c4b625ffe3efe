"""The scenario tier uses the fixtures it ships to users."""

from collections.abc import Iterator

import pytest

from unbroken.scenarios import run as run_module
from unbroken.scenarios.pytest_plugin import (  # noqa: F401
    answers,
    chaos_client,
    chaos_harness,
    chaos_proxy,
    network,
    run_scenario,
)


@pytest.fixture(autouse=True, scope="session")
def _one_baseline_run() -> Iterator[None]:
    """One fault-free run per baseline instead of the best of two (it is still checked
    exact), except where a check reads a baseline figure: TC1's "total time <=
    baseline + 5 s" (``Case.checks_baseline``) keeps its best of two. Fault plans read
    the baseline too (a throttle's rate, a gradual fault's ramp point, a byte cut's
    offset: faults.py) and take the one run: a fault lands at its byte offset or at its
    count of events received, whichever comes first. ``unbroken chaos run`` keeps the
    best of two for its reports."""
    before = run_module.max_baseline_runs
    run_module.max_baseline_runs = 1
    yield
    run_module.max_baseline_runs = before
