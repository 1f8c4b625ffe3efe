"""Settings for the whole test run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
