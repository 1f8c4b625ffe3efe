"""tests/linenos.py: a failure whose traceback has an entry without a line number (what
pytest-timeout's SIGALRM leaves when it lands on such an instruction) is reported as a
failure and the run goes on; without the hook pytest stops with an INTERNALERROR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASE = """
import sys
import types

import pytest


def test_times_out_where_python_has_no_line_number() -> None:
    unnumbered = types.TracebackType(None, sys._getframe(), 1 << 20, -1)
    assert unnumbered.tb_lineno is None
    try:
        raise KeyError("what the test was doing")
    except KeyError:
        raise pytest.fail.Exception("Timeout (>60.0s) from pytest-timeout.").with_traceback(
            unnumbered
        ) from None


def test_the_run_goes_on() -> None:
    pass
"""


def test_a_failure_without_a_line_number_is_reported_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_case.py").write_text(CASE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.linenos",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:langsmith_plugin",
            "-q",
            "test_case.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = out.stdout + out.stderr
    assert "INTERNALERROR" not in text, text
    assert "1 failed, 1 passed" in text, text
    assert "Timeout (>60.0s) from pytest-timeout." in text, text
    assert "test_times_out_where_python_has_no_line_number" in text, text
