"""The report and the regression check, from results built by hand (no runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from unbroken.cli import app
from unbroken.scenarios.catalog import SCENARIOS, RunSpec
from unbroken.scenarios.report import write_report
from unbroken.scenarios.report.regression import compare, regressions
from unbroken.scenarios.results import Check, Metrics, Results, RunResult
from unbroken.scenarios.targets import evaluate

from .test_cases import without_case


def run(
    sid: str,
    *,
    passed: bool = True,
    recovery: float = 0.3,
    streams: int = 1,
    fault: str = "rst",
    timing: str = "mid",
) -> RunResult:
    spec = RunSpec(sid, "small", timing, "clean", fault)  # type: ignore[arg-type]
    r = RunResult(spec, status="pass" if passed else "fail", streams=streams)
    r.streams_complete = r.streams_exact = streams if passed else 0
    r.recovered = passed
    r.checks = [Check("every stream complete and exact", passed, "detail <b>x</b>")]
    r.metrics = Metrics(
        detection_s=0.01,
        reconnect_s=0.05,
        resume_s=0.01,
        recovery_s=recovery,
        partial_bytes=1000,
        bytes_resent=100,
        bytes_inflight=200,
        server_cpu_s=0.105,
        baseline_cpu_s=0.1,
        log_peak_mb=1.0,
        drops=1,
    )
    r.samples = {"recovery": [recovery] * streams}
    if not passed:
        r.artefacts = f"artefacts/{r.id}"
    return r


def results(*runs: RunResult) -> Results:
    return Results(
        runs=list(runs),
        tier="quick",
        command="unbroken chaos run --quick",
        started="2025-01-01T00:00:00",
        duration_s=12.0,
        memory=[(0.0, 50.0, 0.1), (1.0, 60.0, 2.0)],
        machine={"cpus": 2, "python": "3.11"},
    )


def test_report_is_self_contained_and_shows_uncovered_cases_as_such(tmp_path: Path) -> None:
    res = results(*(run(f"TC{i}") for i in range(1, 10)))
    with without_case("TC14"):  # (every scenario has a case: one taken out)
        outcome, comparisons = write_report(res, tmp_path / "report.html")
        uncovered = [s.id for s in SCENARIOS if not s.covered]
    page = (tmp_path / "report.html").read_text()
    assert outcome.ok and comparisons is None
    assert "PASS" in page and "FAIL" not in page
    assert page.count("<svg") == 4  # recovery, completion, resent, memory
    assert not re.search(r"""(src|href)=["']?https?:""", page), "no external resources"
    assert uncovered == ["TC14"]
    for sid in uncovered:
        row = re.search(rf"<tr[^>]*><td>{sid}</td>.*?</tr>", page)
        assert row is not None, sid
        assert "not yet covered" in row.group(0) and "passed" not in row.group(0)
    assert "<b>x</b>" not in page, "text is escaped"


def test_a_failed_run_fails_the_report_and_links_its_artefacts(tmp_path: Path) -> None:
    bad = run("TC3", passed=False, fault="blackhole", timing="late")
    res = results(run("TC1"), bad)
    outcome, _ = write_report(res, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert not outcome.ok and outcome.failed_runs == 1
    assert "FAIL" in page
    for name in ("client.log", "server.log", "proxy-faults.jsonl", "sequence.jsonl"):
        assert f"artefacts/{bad.id}/{name}" in page
    for name in ("snapshot.json", "timing.json", "verdicts.json"):
        assert f"artefacts/{bad.id}/{name}" in page
    # the failure-pattern grid marks TC3 x blackhole x late
    assert "1 failed of 1" in page


def test_targets_are_evaluated_from_the_runs() -> None:
    evals = {e.target.id: e for e in evaluate([run("TC1", recovery=6.0), run("TC2")])}
    assert evals["recovery"].met is False  # p95 of [6.0, 0.3] > 5 s
    assert evals["completion"].measured == 100.0 and evals["completion"].met
    assert evals["cpu"].measured is not None and abs(evals["cpu"].measured - 5.0) < 1e-6
    assert evals["timeouts"].met is None  # nothing measured it: not a pass, not a miss
    failing = evaluate([run("TC1"), run("TC2", passed=False)])
    assert {e.target.id: e.met for e in failing}["completion"] is False


def test_regressions_slower_percentiles_lower_completion_lost_targets() -> None:
    before = results(*(run("TC1", recovery=0.3) for _ in range(5)), run("TC2"))
    after = results(*(run("TC1", recovery=0.9) for _ in range(5)), run("TC2", passed=False))
    found = regressions(compare(after, before))
    names = {(c.scenario, c.metric) for c in found}
    assert ("TC1", "recovery p95") in names and ("TC1", "recovery p50") in names
    assert ("TC2", "exact streams") in names
    assert any(c.scenario == "targets" for c in found)
    # the same results are no regression, and noise below 100 ms is not either
    assert not regressions(compare(before, before))
    jitter = results(*(run("TC1", recovery=0.35) for _ in range(5)), run("TC2"))
    assert not regressions(compare(jitter, before))


def test_chaos_report_rebuilds_the_page_and_exits_1_on_regression(tmp_path: Path) -> None:
    good = results(*(run(f"TC{i}") for i in range(1, 10)))
    slow = results(*(run(f"TC{i}", recovery=2.0) for i in range(1, 10)))
    good.write(tmp_path / "good.json")
    slow.write(tmp_path / "slow.json")
    cli = CliRunner()
    ok = cli.invoke(app, ["chaos", "report", str(tmp_path / "good.json")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "report.html").exists()
    same = cli.invoke(
        app,
        ["chaos", "report", str(tmp_path / "good.json"), "--baseline", str(tmp_path / "good.json")],
    )
    assert same.exit_code == 0, same.output
    worse = cli.invoke(
        app,
        [
            "chaos",
            "report",
            str(tmp_path / "slow.json"),
            "--baseline",
            str(tmp_path / "good.json"),
            "--out",
            str(tmp_path / "slow.html"),
        ],
    )
    assert worse.exit_code == 1, worse.output
    assert "regression" in worse.output
    assert "regression</span>" in (tmp_path / "slow.html").read_text()
    missing = cli.invoke(app, ["chaos", "report", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2


def test_results_json_round_trips(tmp_path: Path) -> None:
    res = results(run("TC1"), run("TC4", streams=6))
    res.write(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == 1 and len(data["catalog"]) == 15 and len(data["evaluation"]) == 9
    back = Results.read(tmp_path / "r.json")
    assert [r.id for r in back.runs] == [r.id for r in res.runs]
    assert back.runs[1].streams == 6 and back.runs[1].samples == res.runs[1].samples
    assert back.runs[0].metrics.recovery_s == res.runs[0].metrics.recovery_s


def test_a_missed_informational_target_is_reported_not_failed(tmp_path: Path) -> None:
    # every stream exact; the server used twice the CPU with faults as without (a busy
    # shared box): the CPU target is missed, informational, so the run is still OK
    busy = []
    for i in range(1, 4):
        r = run(f"TC{i}")
        r.metrics.server_cpu_s = 0.2
        busy.append(r)
    res = results(*busy)
    res.write(tmp_path / "busy.json")
    evals = {e.target.id: e for e in evaluate(res.runs)}
    assert evals["cpu"].met is False and evals["cpu"].target.informational
    cli = CliRunner()
    shown = cli.invoke(app, ["chaos", "report", str(tmp_path / "busy.json")])
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())
    assert "informational: Recovery CPU overhead missed; not a failure" in said, said
    assert "NOT OK" not in said
    page = (tmp_path / "report.html").read_text()
    assert "PASS" in page and "missed (informational)" in page
    strict = cli.invoke(app, ["chaos", "report", str(tmp_path / "busy.json"), "--strict-targets"])
    assert strict.exit_code == 1, strict.output
    assert "NOT OK" in strict.output
    # a gating target missed still fails without --strict-targets
    slow = results(run("TC1", recovery=6.0))
    slow.write(tmp_path / "slow.json")
    assert cli.invoke(app, ["chaos", "report", str(tmp_path / "slow.json")]).exit_code == 1
    # and an informational target lost against a baseline is no regression unless strict
    good = results(*(run(f"TC{i}") for i in range(1, 4)))
    assert not regressions(compare(res, good))
    assert regressions(compare(res, good, strict_targets=True))


def test_the_report_and_cli_speak_no_internal_words(tmp_path: Path) -> None:
    res = results(run("TC1"), run("TC2", passed=False))
    write_report(res, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    # the visible text only (tags and attributes carry none, but CSS/SVG ids might)
    text = re.sub(r"<style>.*?</style>|<svg.*?</svg>|<[^>]+>", " ", page, flags=re.S)
    assert "seed" not in text.lower(), re.findall(r".{40}seed.{40}", text, flags=re.I)
    cli = CliRunner()
    res.write(tmp_path / "r.json")
    shown = cli.invoke(app, ["chaos", "report", str(tmp_path / "r.json")])
    assert "seed" not in shown.output.lower(), shown.output
    for args in (["chaos", "--help"], ["chaos", "run", "--help"], ["chaos", "report", "--help"]):
        helped = cli.invoke(app, args, env={"COLUMNS": "200"})
        assert helped.exit_code == 0
        assert "seed" not in helped.output.lower(), helped.output
