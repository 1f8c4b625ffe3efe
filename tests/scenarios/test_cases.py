"""Scenarios are plug-ins: one module per case under ``unbroken/scenarios/cases/``, a
generic runner that asks the case wherever scenarios differ."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import unbroken.scenarios as scenarios_pkg
from unbroken.scenarios import run as run_module
from unbroken.scenarios.cases import CASES, Case, case_for, register, unregister
from unbroken.scenarios.cases.tc1 import TC1
from unbroken.scenarios.cases.tc14 import VARIANTS
from unbroken.scenarios.catalog import COVERED, SCENARIO_BY_ID, SIZES, RunSpec
from unbroken.scenarios.context import RunState
from unbroken.scenarios.harness import CHAOS_POLICY
from unbroken.scenarios.run_result import Check, RunResult
from unbroken.scenarios.runner import answers_for, layout, pace, run_one


@contextmanager
def without_case(sid: str) -> Iterator[Case]:
    """Scenario ``sid`` not covered (its case taken out) for the block: what a scenario
    without a case looks like, now that all fifteen have one. Yields the case."""
    case = unregister(sid)
    try:
        yield case
    finally:
        CASES.pop(sid, None)
        register(case)


GENERIC = (
    "runner",
    "run",
    "faults",
    "assess",
    "artefacts",
    "context",
    "sequence",
    "answers",
    "browser",
    "history",
    "dashboard",
)


def test_every_covered_scenario_has_exactly_one_case_module() -> None:
    assert list(CASES) == list(COVERED)
    cases_dir = Path(scenarios_pkg.__file__).parent / "cases"
    modules = sorted(p.stem for p in cases_dir.glob("tc*.py"))
    assert modules == sorted(sid.lower() for sid in COVERED)
    for sid, case in CASES.items():
        assert case.id == sid and type(case).__module__.endswith(f".cases.{sid.lower()}")
    with without_case("TC14"):
        with pytest.raises(LookupError, match="no case for scenario 'TC14'"):
            case_for("TC14")
        assert not SCENARIO_BY_ID["TC14"].covered
    assert SCENARIO_BY_ID["TC14"].covered


@pytest.mark.parametrize("module", GENERIC)
def test_the_generic_runner_modules_never_name_a_scenario(module: str) -> None:
    source = (Path(scenarios_pkg.__file__).parent / f"{module}.py").read_text("utf-8")
    assert re.findall(r"(?i)tc[0-9]+", source) == []


def test_a_case_with_only_an_id_gets_the_defaults() -> None:
    class Plain(Case):
        id = "TC1"

    case = Plain()
    spec = RunSpec("TC1", "medium", "mid", "clean", "fin")
    (only,) = case.answers(spec)
    assert abs(sum(len(e.body.encode()) for e in only.events) - spec.size_bytes) < 0.2 * (
        spec.size_bytes
    )
    assert case.layout(spec) == (1, 1)
    assert case.pace(spec) == SIZES["medium"].seconds * spec.profile_info.pace
    assert case.policy(spec) is None and not case.gives_up(spec)
    assert case.baseline_as is None and case.plan_grace == 0.0


def test_the_cases_answers_layouts_and_policies() -> None:
    tc4 = RunSpec("TC4", "small", "mid", "clean", "fin")
    assert len(answers_for(tc4)) == 6 and layout(tc4) == (1, 6)
    tc9 = RunSpec("TC9", "small", "mid", "clean", "fin")
    clients, per_client = layout(tc9)
    assert len(answers_for(tc9)) == clients * per_client == 100  # quick tier
    tc8 = RunSpec("TC8", "xlarge", "p50", "clean", "fin")
    assert pace(tc8) == 1.5  # quick tier
    assert pace(replace(tc8, profile="full")) == 2.5
    long = RunSpec("TC5", "small", "mid", "clean", "rst", "long")
    assert run_module.policy(long).max_attempts == 6 and case_for("TC5").gives_up(long)
    short = RunSpec("TC5", "small", "early", "clean", "rst", "short")
    assert not case_for("TC5").gives_up(short)
    # TC5 and TC6 stream TC1's answer: they share its fault-free baseline
    tc1 = RunSpec("TC1", "small", "mid", "clean", "fin")
    tc6 = RunSpec("TC6", "small", "mid", "clean", "fin", "after_started")
    assert run_module._baseline_key(tc6) == run_module._baseline_key(tc1)
    assert run_module.policy(tc1) is CHAOS_POLICY
    outage = RunSpec("TC1", "small", "mid", "long_outage", "fin")
    deadline = run_module.policy(outage).deadline
    assert deadline is not None and deadline > outage.profile_info.long_outage
    # TC14: one baseline per wire version the stream begins on (v1 for upgrade and
    # refused, v2 for downgrade); only the refused old client's 4005 is expected
    up, down, refused = (RunSpec("TC14", "small", "mid", "clean", "rst", v) for v in VARIANTS)
    key = run_module._baseline_key
    assert key(up) == key(refused) != key(down) and key(up) != key(tc1)
    assert [case_for("TC14").expected_closes(s) for s in (up, down, refused)] == [
        frozenset(),
        frozenset(),
        frozenset({4005}),
    ]
    assert [case_for("TC14").disruption(s) for s in (up, down, refused)] == [
        "recovers",
        "recovers",
        "gives_up",
    ]


class _Watched(TC1):
    """TC1 with every hook the runner calls recorded, and one check of its own."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        self.calls.append("plan_faults")
        await super().plan_faults(run, total_events)

    async def at_cut(self, run: RunState) -> None:
        self.calls.append("at_cut")

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        self.calls.append("checks")
        own = await super().checks(run, result)
        return [*own, Check("watched: the runner asked this case", True, "asked")]


async def test_the_runner_asks_the_case_at_each_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    watched = _Watched()
    monkeypatch.setitem(CASES, "TC1", watched)
    result = await run_one(RunSpec("TC1", "small", "mid", "clean", "rst"))
    assert result.passed, [c for c in result.checks if not c.ok] or result.error
    assert watched.calls == ["plan_faults", "at_cut", "checks"]
    names = [c.name for c in result.checks]
    assert "watched: the runner asked this case" in names
    assert "TC1 total time <= baseline + 5 s" in names


def test_a_new_case_is_found_by_the_catalog() -> None:
    """Covering a scenario is its case and nothing else: registered, the catalog lists it
    covered and puts its rows in both tiers' matrices; taken out, all is as before. (Every
    scenario has a case: TC14's is taken out for the test.)"""
    with without_case("TC14"):
        _a_new_case_is_found_by_the_catalog()


def _a_new_case_is_found_by_the_catalog() -> None:
    from unbroken.scenarios import catalog

    # the last one not covered (its rows placed after every covered case's)
    sid = next(s.id for s in reversed(catalog.SCENARIOS) if not s.covered)
    quick_before, full_before = catalog.quick_matrix(), catalog.full_matrix()

    class New(Case):
        id = sid
        quick_order = 1000  # after every case, whatever its number
        quick_sample = (("large", "late", "throttled", "fin", ""),)
        full_kernel_sample = (("small", "mid", "kernel_loss", "rst", ""),)

    case = register(New())
    try:
        assert catalog.SCENARIO_BY_ID[sid].covered and sid in catalog.covered()
        assert case_for(sid) is case and sid in CASES
        quick, full = catalog.quick_matrix(), catalog.full_matrix()
        mine = [s for s in quick if s.scenario == sid]
        # its five seed-condition runs after every other case's, then its sample
        assert mine == [*case.quick_rows(), RunSpec(sid, "large", "late", "throttled", "fin")]
        assert [s for s in quick if s.scenario != sid] == quick_before
        assert quick.index(mine[0]) == len(quick_before) - len(catalog.QUICK_SAMPLE)
        full_mine = [s for s in full if s.scenario == sid]
        assert full_mine[:-1] == case.full_rows() and len(full_mine) == 4 * 5 * 3 + 1
        assert full_mine[-1] == RunSpec(sid, "small", "mid", "kernel_loss", "rst", profile="full")
        assert [s for s in full if s.scenario != sid] == full_before
        assert catalog.select(quick, scenarios=[sid]) == mine
        with pytest.raises(ValueError, match="has a case already"):
            register(New())
    finally:
        unregister(sid)
    assert not catalog.SCENARIO_BY_ID[sid].covered and sid not in CASES
    assert catalog.quick_matrix() == quick_before and catalog.full_matrix() == full_before


def test_a_case_needs_a_scenario_record() -> None:
    from unbroken.scenarios import catalog

    class Stray(Case):
        id = "TC99"

    register(Stray())
    try:
        with pytest.raises(LookupError, match=r"without a Scenario record.*TC99"):
            catalog.quick_matrix()
    finally:
        unregister("TC99")


def test_scenarios_sort_by_number() -> None:
    from unbroken.scenarios.catalog import scenario_order

    assert sorted(["TC10", "TC9", "TC1", "TC15", "TC2"], key=scenario_order) == [
        "TC1",
        "TC2",
        "TC9",
        "TC10",
        "TC15",
    ]


async def test_tc11_without_a_browser_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No chromium, no Playwright or no bundle: TC11's runs are skipped with the
    reason (as the kernel conditions are without root), never failed."""
    from unbroken.scenarios import browser

    monkeypatch.setattr(browser, "missing", lambda: "chromium not found at /nowhere")
    result = await run_one(case_for("TC11").quick_rows()[0])
    assert result.skipped and result.status == "skip"
    assert result.error == "chromium not found at /nowhere"


class _OtherClient(Case):
    """A case whose faulty run is consumed by a client of its own (here Python's, with
    a fault of its own), reported as a ForeignStream: the generic checks judge it.
    ``tamper``: the client reports a part that differs from what it received."""

    id = "TC14"

    def __init__(self, tamper: bool) -> None:
        self.tamper = tamper

    async def drive(self, run: RunState, python_clients: Any) -> None:
        from unbroken.scenarios.context import EventWatch, ForeignStream

        if not run.faulty:
            await python_clients(run)
            return
        h = run.h
        (expected,) = self.answers(run.spec)
        watch = EventWatch(0)
        run.watches.append(watch)
        run.t_start = time.monotonic()
        async with h.client(on_event=watch) as client:
            rec = await h.start(
                client,
                expected,
                seconds=self.pace(run.spec),
                key="other",
                on_event=run.gate.on_event,
            )
            await run.gate.reached(len(expected.events) // 2)
            run.mark("cut by the other client's driver")
            await h.proxy.cut_all("rst")
            await rec.done()
        assert rec.answer is not None
        parts = {pid: p.text for pid, p in rec.answer.parts.items()}
        if self.tamper:
            first = next(iter(parts))
            parts[first] = parts[first][:-1] + "?"
        run.foreign.append(
            ForeignStream(
                key="other",
                expected=expected,
                stream_id=rec.stream.id,
                parts=parts,
                digest=rec.answer.digest,
                status=rec.answer.status,
                complete=rec.answer.complete,
                error=None,
                started_at=run.t_start,
                ended_at=rec.ended_at,
            )
        )


@pytest.mark.parametrize("tamper", [False, True])
async def test_a_stream_another_client_consumed_is_judged_by_the_generic_checks(
    tamper: bool, tmp_path: Path
) -> None:
    import json

    with without_case("TC14"):
        register(_OtherClient(tamper))
        try:
            result = await run_one(
                RunSpec("TC14", "small", "mid", "clean", "rst"),
                artefacts=tmp_path,
                keep_artefacts=True,
            )
        finally:
            unregister("TC14")
    timing = json.loads((tmp_path / result.id / "timing.json").read_text())
    (stream,) = timing["streams"]
    assert stream["answer"] == "other" and stream["status"] == "completed"
    checks = {c.name: c for c in result.checks}
    assert checks["the agent ran once per stream"].ok
    assert checks[
        "the client's verified end digest equals the server log's (a client of another language)"
    ].ok
    assert result.metrics.drops >= 1 and result.metrics.recovery_s is not None
    exact = checks["every stream complete and exact"]
    if tamper:
        assert not exact.ok and result.status == "fail" and not result.recovered
        assert any("the client's parts differ" in n for n in result.notes)
    else:
        assert exact.ok and result.passed, [c for c in result.checks if not c.ok]
        assert result.recovered is True and result.streams_exact == result.streams == 1


def test_tc12_reference_is_one_frame_an_event_and_coalescing_beats_it() -> None:
    """TC12's slow-link check holds the slow figure to the same events sent one frame
    each (computed, load-independent); the answer's events in a single frame are well
    under the check's share of it, one frame each is not."""
    from unbroken.protocol import frames, frames_v2, items
    from unbroken.protocol.digest import DIGEST_SIZE
    from unbroken.scenarios.answers import answer
    from unbroken.scenarios.cases.tc12 import SLOW_RATIO_SHARE, one_frame_each

    events = list(answer("text", 400_000, 1).events)
    stream = "s_" + "x" * 22
    each = one_frame_each(events, stream, "v2")
    body = sum(len(e.body.encode()) for e in events)
    assert 1.2 < each < 2.0  # ~21 bytes of frame per ~48-byte token in v2
    assert one_frame_each(events, stream, "v1") > each  # v1 names the stream in every frame
    codec = frames_v2.ServerCodec()
    codec.encode(frames.Started(req="r", stream=stream, epoch="e"))
    state = codec.attached(stream)
    whole = codec.events(
        stream, 1, items.encode(events), bytes(DIGEST_SIZE), events[-1].kind, state
    )
    assert (len(whole) + 10) / body < SLOW_RATIO_SHARE * each


def test_a_case_whose_check_reads_its_baseline_keeps_the_best_of_two() -> None:
    # the scenario tier caps fault-free runs at one (conftest), but TC1's check "total
    # time <= baseline + 5 s" reads the baseline: one run would loosen that bound
    assert run_module.max_baseline_runs == 1, "the tier's cap is on"
    assert run_module.baseline_runs(case_for("TC1")) == 2
    others = [c for c in CASES.values() if not c.checks_baseline]
    assert others, "cases whose checks read no baseline figure"
    assert all(run_module.baseline_runs(c) == 1 for c in others)
