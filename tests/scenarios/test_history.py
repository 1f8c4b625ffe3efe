"""The SQLite history of ``chaos run`` and ``chaos trend``: three runs appended (the
first a real one-run matrix through the command line), a clean one not flagged, a
seeded regression flagged, by the trend, by ``--baseline RUN_ID`` and against the
previous run."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from unbroken.cli import app
from unbroken.errors import ConfigError
from unbroken.scenarios.cli import _finish
from unbroken.scenarios.history import History, changes, summarise
from unbroken.scenarios.report import charts, write_report
from unbroken.scenarios.report.regression import SLOWER_ABS
from unbroken.scenarios.results import Results


def _regressed(base: Results) -> Results:
    """``base`` with every recovery 4x slower (+ more than the absolute threshold) and
    one stream of each run not exact: a regression by two of the report's thresholds."""
    worse = copy.deepcopy(base)
    for r in worse.runs:
        m = r.metrics
        if m.recovery_s is not None:
            m.recovery_s = m.recovery_s * 4 + 2 * SLOWER_ABS
        if "recovery" in r.samples:
            r.samples["recovery"] = [v * 4 + 2 * SLOWER_ABS for v in r.samples["recovery"]]
        r.streams_exact = max(0, r.streams_exact - 1)
        r.status = "fail"
    return worse


def _no_report_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report pages without their charts (the slow part, tested elsewhere)."""
    monkeypatch.setattr(charts, "unavailable", lambda: "charts are off in this test")


def test_three_runs_a_seeded_regression_flagged_a_clean_one_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_report_charts(monkeypatch)
    out = tmp_path / "out"
    history = out / "history.sqlite"
    cli = CliRunner()
    # 1: a real run, appended by `chaos run` itself (to the default history in --out)
    one = ["-s", "1", "--sizes", "small", "--timings", "mid", "--conditions", "clean"]
    real = cli.invoke(
        app, ["chaos", "run", *one, "--faults", "rst", "--out", str(out), "--dashboard"]
    )
    assert real.exit_code in (0, 1), real.output
    assert "dashboard:http://127.0.0.1:" in "".join(real.output.split())  # served meanwhile
    assert f"history:{history}(run" in "".join(real.output.split())
    first = Results.read(out / "results.json")
    assert first.runs and first.runs[0].passed, real.output
    assert first.runs[0].metrics.recovery_s is not None
    with History(history) as h:
        (row,) = h.runs()
        real_id = row.run_id
        # 2: the same numbers again (clean); 3: a seeded regression
        clean_id = h.append(copy.deepcopy(first))
        bad_id = h.append(_regressed(first))
        assert [r.run_id for r in h.runs()] == [real_id, clean_id, bad_id]
        rows = h.scenario_rows(["TC1"])
        assert h.results(bad_id).runs[0].status == "fail"
    assert [r.run_id for r in rows] == [real_id, clean_id, bad_id]
    assert rows[0].completion == 100.0 and rows[0].recovery_p95_s is not None
    assert changes(rows[0], rows[1]) == []  # clean: not flagged
    flags = changes(rows[1], rows[2])
    assert any(f.startswith("completion 100.0") for f in flags), flags
    assert any(f.startswith("recovery p95") for f in flags), flags

    # the trend: a table per scenario over the runs, the latest regressed: exit 1
    monkeypatch.undo()  # (with its chart)
    trend = cli.invoke(app, ["chaos", "trend", "--history", str(history)], env={"COLUMNS": "220"})
    _no_report_charts(monkeypatch)
    assert trend.exit_code == 1, trend.output
    lines = {rid: next(x for x in trend.output.splitlines() if rid in x) for rid in rows_ids(rows)}
    assert "recovery p95" not in lines[clean_id] and "completion" not in lines[clean_id]
    assert "recovery p95" in lines[bad_id] and "completion" in lines[bad_id]
    assert "the latest run regressed" in trend.output
    chart = history.with_name("trend.svg")
    assert chart.read_text().lstrip().startswith(("<?xml", "<svg"))
    # without the report extra: the table, no chart, and how to get one
    other = tmp_path / "other.svg"
    plain = cli.invoke(
        app,
        ["chaos", "trend", "--history", str(history), "--chart", str(other), "-s", "1"],
        env={"COLUMNS": "220"},
    )
    assert "no chart: charts are off in this test" in plain.output and not other.exists()
    assert bad_id in plain.output

    # --baseline RUN_ID: the seeded regression against the real run fails, the clean one not
    with History(history) as h:
        h.results(bad_id).write(tmp_path / "bad.json")
        h.results(clean_id).write(tmp_path / "clean.json")
    for name, code in (("bad.json", 1), ("clean.json", 0)):
        rep = cli.invoke(
            app,
            [
                *("chaos", "report", str(tmp_path / name), "--baseline", real_id),
                *("--history", str(history), "--out", str(tmp_path / f"{name}.html")),
            ],
            env={"COLUMNS": "220"},
        )
        regressed = "regression against the baseline" in rep.output
        assert regressed == (code == 1), rep.output
        if code == 0:
            # a clean copy fails only on what the real run missed itself
            assert "regression" not in rep.output
    # the previous run in the history is compared and flagged, not failing
    outcome, _ = write_report(
        Results.read(tmp_path / "clean.json"),
        tmp_path / "prev.html",
        previous=(bad_id, Results.read(tmp_path / "bad.json")),
    )
    assert not outcome.previous_regressions  # clean after bad: better, not worse
    outcome, _ = write_report(
        Results.read(tmp_path / "bad.json"),
        tmp_path / "prev.html",
        previous=(clean_id, Results.read(tmp_path / "clean.json")),
    )
    metrics = {c.metric for c in outcome.previous_regressions}
    assert {"exact streams", "recovery p95"} <= metrics
    assert not outcome.regressions  # no baseline given: nothing fails for it
    page = (tmp_path / "prev.html").read_text()
    assert f"Against the previous run in the history ({clean_id})" in page
    # ... and the run's summary says so, without failing for it
    console = Console(record=True, width=200)
    outcome = _finish(
        Results.read(tmp_path / "bad.json"),
        tmp_path / "summary",
        None,
        console,
        previous=(clean_id, Results.read(tmp_path / "clean.json")),
    )
    said = console.export_text()
    assert f"against the previous run {clean_id}: 4 regressions (flagged, not failing)" in said
    assert "regression against the previous run: TC1 recovery p95" in said
    assert outcome.previous_regressions and not outcome.regressions


def rows_ids(rows: list[object]) -> list[str]:
    return [r.run_id for r in rows]  # type: ignore[attr-defined]


def test_a_bad_baseline_or_history_is_a_clear_error(tmp_path: Path) -> None:
    cli = CliRunner()
    res = cli.invoke(
        app,
        ["chaos", "run", "-s", "1", "--baseline", "no-such-run", "--out", str(tmp_path)],
    )
    assert res.exit_code == 2
    assert "neither a results.json nor a run in a history" in " ".join(res.output.split())
    with History(tmp_path / "history.sqlite") as h:
        assert h.runs() == []
    res = cli.invoke(
        app,
        ["chaos", "run", "-s", "1", "--baseline", "nope", "--out", str(tmp_path)],
        env={"COLUMNS": "220"},
    )
    assert res.exit_code == 2 and "no run 'nope' in the history" in " ".join(res.output.split())
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable history"):
        History(junk).open()
    db = sqlite3.connect(tmp_path / "history.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="history schema 99"):
        History(tmp_path / "history.sqlite").open()
    res = cli.invoke(app, ["chaos", "trend", "--history", str(tmp_path / "none.sqlite")])
    assert res.exit_code == 2 and "no history at" in res.output


def test_summary_leaves_skipped_runs_out() -> None:
    assert summarise([]) == {}
