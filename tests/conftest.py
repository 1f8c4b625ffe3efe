"""Settings for the whole test run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings

# a failure whose traceback has an entry without a line number (pytest-timeout's SIGALRM
# on such an instruction) is reported, not an INTERNALERROR that stops the run
from tests.linenos import pytest_runtest_makereport  # noqa: F401

# Playwright's driver is a Node process started for every browser test (and every TC11
# run), and loading its JavaScript takes most of a second each time; Node's on-disk
# compile cache (NODE_COMPILE_CACHE, Node 22.1+; its entries are checked against each
# file's content) roughly halves that once the first start has filled it.
os.environ.setdefault(
    "NODE_COMPILE_CACHE", str(Path(tempfile.gettempdir()) / "unbroken-node-compile-cache")
)

# Hypothesis times each example (200 ms) and its data generation (the too_slow health
# check) on the wall clock, except under CI=true, whose "ci" profile has no deadline. On
# a loaded machine a process stalled for a few hundred ms fails a property test with
# "Unreliable test timings" (FlakyFailure): a timed assertion in a correctness test.
# Speed is measured by benchmarks/, so every run is judged as CI's is (the current
# profile, ci or default, without the wall-clock checks).
settings.register_profile(
    "unbroken-tests",
    settings.get_profile(settings.get_current_profile_name()),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("unbroken-tests")
