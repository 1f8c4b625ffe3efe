"""``unbroken chaos run``: a real (one-run) matrix through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from unbroken.cli import app
from unbroken.scenarios.catalog import CONDITIONS, full_matrix, quick_matrix

from .test_cases import without_case


def test_chaos_run_writes_results_and_report_and_exit_status(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "chaos",
            "run",
            "--scenarios",
            "1",
            "--conditions",
            "clean",
            "--sizes",
            "small",
            "--out",
            str(out),
        ],
    )
    data = json.loads((out / "results.json").read_text())
    # exit 1 exactly when a run failed or a measured target was missed, informational
    # ones (CPU overhead, noisy on one run) aside
    missed = [e["id"] for e in data["evaluation"] if e["met"] is False and not e["informational"]]
    failed = [r["id"] for r in data["runs"] if r["status"] != "pass"]
    assert result.exit_code == (1 if missed or failed else 0), result.output
    assert [r["id"] for r in data["runs"]] == ["TC1-small-mid-clean-rst-r0"]
    run = data["runs"][0]
    assert run["status"] == "pass" and run["exact"] is True
    assert run["metrics"]["reconnect_s"] is not None and run["metrics"]["drops"] >= 1
    assert data["command"].startswith("unbroken chaos run --quick --scenarios 1")
    assert "--sizes small" in data["command"]
    page = (out / "report.html").read_text()
    assert "TC1-small-mid-clean-rst-r0" in page
    assert ("PASS" in page) == (not missed and not failed)
    assert "targets" in result.output
    assert ("NOT OK" in result.output) == bool(missed or failed)
    assert not (out / "artefacts").exists(), "artefacts are kept for failed runs only"


def test_chaos_run_lists_and_refuses_bad_names(tmp_path: Path) -> None:
    cli = CliRunner()
    listed = cli.invoke(app, ["chaos", "run", "--full", "--scenarios", "TC9", "--list"])
    assert listed.exit_code == 0
    tc9 = [s for s in full_matrix() if s.scenario == "TC9"]
    assert "TC9-small-mid-outage-blackhole-r0" in listed.output
    assert f"{len(tc9)} runs" in listed.output
    bad = cli.invoke(app, ["chaos", "run", "--scenarios", "TC42", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output
    with without_case("TC14"):  # (every scenario has a case: one taken out)
        uncovered = cli.invoke(app, ["chaos", "run", "-s", "TC14", "--out", str(tmp_path)])
    assert uncovered.exit_code == 2 and "not covered yet" in uncovered.output


def test_the_help_counts_the_runs_from_the_matrix() -> None:
    shown = CliRunner().invoke(app, ["chaos", "run", "--help"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())  # the help is wrapped: one line of words
    assert f"({len(full_matrix()):,} runs, 1,000 streams in TC9)" in text
    assert f"{len(quick_matrix())} runs)" in text
    assert ", ".join(CONDITIONS) in text


#: A sitecustomize that makes matplotlib (the ``report`` extra) unimportable.
NO_MATPLOTLIB = """
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Blocked())
"""


def test_chaos_run_in_ci_plain_lines_and_no_charts_without_matplotlib(tmp_path: Path) -> None:
    # as in CI: stdout a pipe (no terminal), and no report extra installed
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_MATPLOTLIB)
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    for var in ("FORCE_COLOR", "FORCE_TERMINAL", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(var, None)
    blocked = subprocess.run(
        [sys.executable, "-c", "import matplotlib"], env=env, capture_output=True, text=True
    )
    assert blocked.returncode != 0, "the sitecustomize did not block matplotlib"
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from unbroken.cli import main; main()",
            "chaos",
            "run",
            "-s",
            "1",
            "--conditions",
            "clean",
            "--sizes",
            "small",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said, said
    data = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in data["runs"]] == ["TC1-small-mid-clean-rst-r0"]
    # one plain line per run, no live display (no bar, no cursor movement)
    assert "[1/1] PASS TC1-small-mid-clean-rst-r0" in proc.stdout, said
    assert "\x1b[" not in proc.stdout and "━" not in proc.stdout.split("targets")[0], said
    # how to get the charts, and a page without them
    assert "pip install 'unbroken[report]'" in proc.stdout, said
    assert f"unbroken chaos report {out / 'results.json'}" in " ".join(proc.stdout.split())
    page = (out / "report.html").read_text()
    assert "No charts" in page and "<svg" not in page
    assert proc.returncode == (0 if data["runs"][0]["status"] == "pass" else 1), said


def test_axis_filters_run_the_values_named_under_the_default_tier() -> None:
    cli = CliRunner()
    # the quick tier has no extra-large TC2 run: the full matrix's are taken
    listed = cli.invoke(app, ["chaos", "run", "-s", "2", "--sizes", "xlarge", "--list"])
    assert listed.exit_code == 0, listed.output
    ids = [line for line in listed.output.split() if line.startswith("TC2-")]
    want = [s.id for s in full_matrix() if s.scenario == "TC2" and s.size == "xlarge"]
    assert ids == want and want
    said = " ".join(listed.output.split())
    assert "no run with sizes=xlarge: those runs come from the full matrix" in said
    # values the quick tier has come from it alone, and both kinds mix
    mixed = cli.invoke(app, ["chaos", "run", "-s", "2", "--sizes", "small,xlarge", "--list"])
    quick_small = [s.id for s in quick_matrix() if s.scenario == "TC2" and s.size == "small"]
    got = [line for line in mixed.output.split() if line.startswith("TC2-")]
    assert got == quick_small + want
    # --full is the full matrix filtered, as before
    full = cli.invoke(app, ["chaos", "run", "--full", "-s", "2", "--sizes", "xlarge", "--list"])
    assert [line for line in full.output.split() if line.startswith("TC2-")] == want
