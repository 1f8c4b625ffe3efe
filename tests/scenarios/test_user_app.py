"""Chaos against a user's own service: an app defined here (not the built-in answering
agent), from pytest (the plugin's fixtures with ``chaos_app``) and from the command line
(``--app`` and ``--url``), judged by the digest chain against a fault-free run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from unbroken import Unbroken
from unbroken.errors import ConfigError
from unbroken.scenarios.catalog import RunSpec
from unbroken.scenarios.harness import ChaosHarness
from unbroken.scenarios.results import RunResult
from unbroken.scenarios.user_app import (
    Call,
    Reference,
    Service,
    judge,
    reference_in,
    reference_run,
    run_user_spec,
    select_user_runs,
    skip_reason,
)
from unbroken.testing import serve

#: The user's service, as a module of theirs (the CLI tests import it from tmp_path).
USER_MODULE = '''
import asyncio
import random

from unbroken import Output, Request, Unbroken

app = Unbroken(allow_anonymous=True)


@app.agent("report")
async def report(req: Request, out: Output) -> None:
    """A multi-part report: text, then a JSON part, then a table."""
    topic = req.input["q"]
    for i in range(int(req.input.get("lines", 400))):
        await out.text(f"{i:04d} finding about {topic}: " + "x" * (i % 37) + "\\n")
        if i % 20 == 0:
            await asyncio.sleep(0.01)
    async with out.json("summary") as part:
        await part.write('{"topic": ' + '"' + topic + '", "rows": [')
        await part.write(",".join(str(i) for i in range(200)))
        await part.write("]}")
    await out.data("table", mime="text/csv", body="a,b\\n1,2\\n")


@app.agent("dice")
async def dice(req: Request, out: Output) -> None:
    """An answer that differs every time (a sampled model)."""
    for _ in range(300):
        await out.text(f"{random.random():.6f}\\n")
        await asyncio.sleep(0.001)
'''


def user_app() -> Unbroken:
    """A fresh copy of the user's app (its module run here)."""
    scope: dict[str, object] = {}
    exec(compile(USER_MODULE, "user_service.py", "exec", dont_inherit=True), scope)
    app = scope["app"]
    assert isinstance(app, Unbroken)
    return app


# ------------------------------------------------------------------ pytest, as a user
@pytest.fixture
def chaos_app() -> Unbroken:
    return user_app()


@pytest.mark.parametrize(("condition", "fault"), [("clean", "rst"), ("outage", "blackhole")])
async def test_a_users_app_survives_tc1_from_pytest(
    run_scenario: object, condition: str, fault: str
) -> None:
    assert callable(run_scenario)
    result = await run_scenario(
        "TC1", agent="report", input={"q": "sales"}, condition=condition, fault=fault
    )
    assert isinstance(result, RunResult)
    assert result.passed, (result.error, result.failed_checks(), result.notes)
    assert result.exact and result.streams == 1
    assert result.metrics.drops >= 1, "the fault hit the stream's connection"
    exact = result.checks[0]
    assert "equal to the fault-free run's" in exact.detail, exact.detail


async def test_a_users_app_tc4_six_streams_on_one_connection(run_scenario: object) -> None:
    assert callable(run_scenario)
    result = await run_scenario(
        "TC4",
        agent="report",
        inputs=[{"q": "a"}, {"q": "b", "lines": 300}],
        condition="intermittent",
        fault="fin",
    )
    assert result.passed, (result.error, result.failed_checks(), result.notes)
    assert result.streams == result.streams_exact == 6
    # the app's own stream log held the six answers: measured for the memory target
    assert result.metrics.log_peak_mb is not None and result.metrics.log_peak_mb > 0.01


async def test_the_harness_runs_a_users_agent(chaos_harness: ChaosHarness) -> None:
    # the lower-level way: the harness serves the user's app (chaos_app), h.stream runs
    # an agent through the proxy, judge() compares with a fault-free reference
    assert chaos_harness.own_app
    ref = await reference_in(chaos_harness, Call("report", {"q": "x"}))
    async with chaos_harness.client() as client:
        rec = await chaos_harness.stream(client, "report", {"q": "x"})
        await asyncio.wait_for(chaos_harness.proxy.wait_until(lambda: rec.body_bytes > 5_000), 10)
        assert await chaos_harness.proxy.cut_all("rst") >= 1
        await asyncio.wait_for(rec.done(), 30)
    verdict = await judge(chaos_harness, rec, ref)
    assert verdict.exact, verdict.detail
    # the built-in answers are not the user's app's
    with pytest.raises(ConfigError, match=r"h\.stream"):
        await chaos_harness.start(client, None)  # type: ignore[arg-type]


def _files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir()}


async def test_the_judgement_can_fail(chaos_app: Unbroken, tmp_path: Path) -> None:
    service = Service(app=chaos_app)
    ref = await reference_run(service, Call("report", {"q": "x", "lines": 200}))
    # one byte of one event changed in the reference: the stream is not exact
    seq, kind, part, body = ref.events[50]
    tampered = Reference(
        ref.call,
        (*ref.events[:50], (seq, kind, part, body[:-1] + b"#"), *ref.events[51:]),
        ref.seconds,
        ref.conn_bytes,
    )
    spec = RunSpec("TC1", "small", "mid", "clean", "rst")
    bad = await run_user_spec(service, [tampered], spec, artefacts=tmp_path / "artefacts")
    assert not bad.passed and bad.streams_exact == 0 and bad.streams_complete == 1
    assert f"event {seq} differs from the fault-free run's" in bad.checks[0].detail
    # a failed run leaves its debugging files, as the built-in suite's do
    assert bad.artefacts is not None
    files = _files(tmp_path / bad.artefacts)
    assert {"client.log", "server.log", "proxy-faults.jsonl", "sequence.jsonl"} <= set(files)
    assert "rst" in files["proxy-faults.jsonl"]


async def test_an_answer_that_varies_is_refused_or_judged_by_its_digest_chain(
    chaos_app: Unbroken,
) -> None:
    service = Service(app=chaos_app)
    with pytest.raises(ConfigError, match="not repeatable"):
        await reference_run(service, Call("dice"))
    ref = await reference_run(service, Call("dice"), repeatable=False)
    spec = RunSpec("TC1", "small", "mid", "clean", "rst")
    result = await run_user_spec(service, [ref], spec)
    assert result.passed, (result.error, result.failed_checks())
    assert "digest chain verified" in result.checks[0].detail


def test_which_scenarios_apply_to_a_users_service() -> None:
    # the faults on the network path run; those that need the built-in server do not
    for sid in ("TC1", "TC4", "TC5", "TC6", "TC7", "TC8", "TC9"):
        assert skip_reason(sid) is None, sid
    reason = skip_reason("TC2")
    assert reason is not None and "TC1 runs them" in reason
    runs = select_user_runs("quick")
    assert {r.scenario for r in runs} >= {"TC1", "TC4", "TC9"}
    assert not any(r.condition.startswith("kernel") for r in runs)
    ids = [r.id for r in runs]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ the command line
def _cli_env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)
    return env


async def _cli(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from unbroken.cli import main; main()",
        *args,
        cwd=cwd,
        env=_cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _check_results(out: Path, said: str, runs: list[str]) -> dict[str, object]:
    data = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in data["runs"]] == runs, said
    for r in data["runs"]:
        if r["spec"]["scenario"] == "TC2":
            assert r["status"] == "skip", (r, said)  # TC1's faults: it runs them
            continue
        assert r["status"] == "pass" and r["exact"], (r, said)
    assert "agent 'report'" in data["service"]
    assert (out / "report.html").exists()
    return data


async def test_chaos_run_against_a_users_app_module(tmp_path: Path) -> None:
    (tmp_path / "user_service.py").write_text(textwrap.dedent(USER_MODULE))
    out = tmp_path / "out"
    code, said = await _cli(
        "chaos",
        "run",
        "--app",
        "user_service:app",
        "--agent",
        "report",
        "--input",
        '{"q": "sales"}',
        "-s",
        "1,2",
        "--conditions",
        "clean,outage",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert "Traceback" not in said, said
    runs = ["TC1-small-mid-clean-rst-r0", "TC1-small-final-outage-rst-r0"]
    data = _check_results(out, said, [*runs, "TC2-small-early-clean-fin-r0"])
    assert code == 0, said
    assert "SKIP TC2" in said and "TC1 runs them" in " ".join(said.split())
    assert "--app user_service:app --agent report" in str(data["command"])


@pytest.fixture
async def deployed() -> AsyncIterator[str]:
    """The user's service running (uvicorn on this loop), as a deployment would be."""
    async with serve(user_app(), path="/agent/ws") as srv:
        yield srv.url


async def test_chaos_run_against_a_running_service_url(deployed: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, said = await _cli(
        "chaos",
        "run",
        "--url",
        deployed,
        "--agent",
        "report",
        "--input",
        '{"q": "ops"}',
        "-s",
        "1",
        "--conditions",
        "intermittent",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert "Traceback" not in said, said
    _check_results(out, said, ["TC1-small-late-intermittent-blackhole-r0"])
    assert code == 0, said
    assert deployed in said


async def test_chaos_run_against_a_service_refuses_what_does_not_apply(tmp_path: Path) -> None:
    # four processes of their own, at once (each is mostly the CLI's start-up)
    no_agent, wss, nowhere, neither = await asyncio.gather(
        _cli("chaos", "run", "--url", "ws://127.0.0.1:9/ws", cwd=tmp_path),
        _cli("chaos", "run", "--url", "wss://example.com/ws", "--agent", "a", cwd=tmp_path),
        _cli("chaos", "run", "--app", "nowhere:app", "--agent", "a", "--list", cwd=tmp_path),
        _cli("chaos", "run", "--agent", "a", "--list", cwd=tmp_path),
    )
    code, said = no_agent
    assert code == 2 and "--agent" in said
    code, said = wss
    assert code == 2 and "plain ws://" in said, said
    code, said = nowhere
    assert code == 2 and "could not import module 'nowhere'" in said, said
    code, said = neither
    assert code == 2 and "give --app or --url" in said, said


async def test_a_fault_after_the_answer_is_not_a_pass(chaos_app: Unbroken) -> None:
    # an answer of a few events is over before a fault timed 50 ms after the start
    # (the "immediate" point, on the clock): the run says so, it is not a pass
    service = Service(app=chaos_app)
    ref = await reference_run(service, Call("report", {"q": "x", "lines": 0}))
    spec = RunSpec("TC1", "small", "immediate", "asymmetric", "rst")
    result = await run_user_spec(service, [ref], spec)
    assert not result.passed
    hit = next(c for c in result.checks if c.name == "the fault hit while the answer streamed")
    assert not hit.ok and "the answer is too short for this scenario" in hit.detail


def test_the_user_app_runner_never_names_a_scenario() -> None:
    # which scenarios apply is each case's (Case.foreign_app), never the runner's
    import re

    import unbroken.scenarios.user_app as module

    source = Path(module.__file__).read_text("utf-8")
    assert re.findall(r"(?i)tc[0-9]+", source) == []
