"""The catalog as data: the seed's fifteen cases, the axes, the tiers, the selection."""

from __future__ import annotations

from collections import Counter

import pytest

from unbroken.chaos.kernel import kernel_skip_reason
from unbroken.errors import ConfigError
from unbroken.scenarios.catalog import (
    CONDITIONS,
    FAULTS,
    KERNEL_CONDITIONS,
    PROFILES,
    QUICK_SAMPLE,
    SCENARIOS,
    SEED_CONDITIONS,
    SEED_TARGETS,
    SIZES,
    TC8_CUTS,
    TIMINGS,
    RunSpec,
    full_matrix,
    quick_matrix,
    select,
)
from unbroken.scenarios.runner import answers_for, layout, run_one


def test_the_catalog_lists_the_seeds_fifteen_cases_and_all_run() -> None:
    assert [s.number for s in SCENARIOS] == list(range(1, 16))
    assert [s.id for s in SCENARIOS if not s.covered] == []
    for s in SCENARIOS:
        assert s.seed_scenario and s.seed_validation, s.id
        assert s.must_hold and s.fault_plan and s.answer != "none", s.id


def test_the_axes_are_the_seeds() -> None:
    assert list(SIZES) == ["small", "medium", "large", "xlarge"]
    assert [(s.lo, s.hi) for s in SIZES.values()] == [
        (1_000, 10_000),
        (10_000, 100_000),
        (100_000, 1_000_000),
        (1_000_000, 10_000_000),
    ]
    for size in SIZES.values():
        for r in range(6):
            assert size.lo <= size.pick(r) <= size.hi
    assert list(TIMINGS) == ["immediate", "early", "mid", "late", "final"]
    for t in TIMINGS.values():
        for r in range(6):
            if t.at is None:
                assert t.lo <= t.fraction(r) <= t.hi
    assert TIMINGS["immediate"].at is not None and TIMINGS["immediate"].at < 0.1
    assert list(TC8_CUTS) == ["p10", "p25", "p50", "p75", "p95"]
    assert list(CONDITIONS) == [
        "clean",
        "gradual",
        "intermittent",
        "outage",
        "asymmetric",
        "receive_only",
        "long_outage",
        "throttled",
        "kernel_loss",
        "kernel_receive_only",
        "kernel_blackhole",
    ]
    assert list(SEED_CONDITIONS) == list(CONDITIONS)[:5]
    assert list(FAULTS) == ["fin", "rst", "blackhole"]
    assert len(SEED_TARGETS) == 9


def test_quick_tier_runs_every_scenario_under_every_seed_condition_with_small_answers() -> None:
    specs = quick_matrix()
    base = [
        s
        for s in specs
        if (s.scenario, s.size, s.timing, s.condition, s.fault, s.variant) not in set(QUICK_SAMPLE)
    ]
    pairs = {(s.scenario, s.condition) for s in base}
    for sid in (f"TC{i}" for i in range(1, 10)):
        for cond in SEED_CONDITIONS:
            assert (sid, cond) in pairs, (sid, cond)
    assert {s.size for s in base if s.scenario not in ("TC8", "TC11")} == {"small"}
    assert {s.fault for s in specs} == set(FAULTS)
    assert {s.variant for s in specs if s.scenario == "TC5"} == {"long", "short", "silent"}
    assert {s.variant for s in specs if s.scenario == "TC6"} == {"before_started", "after_started"}
    assert {s.timing for s in specs if s.scenario == "TC8"} == set(TC8_CUTS)
    # TC11's browser faults (a real browser: a few runs, the rest in the full tier)
    assert [s.variant for s in specs if s.scenario == "TC11"] == ["freeze", "offline", "reload"]
    tc9 = next(s for s in specs if s.scenario == "TC9")
    assert len(answers_for(tc9)) >= 100
    assert len({s.id for s in specs}) == len(specs)


def test_quick_tier_samples_larger_answers_and_every_other_condition() -> None:
    specs = quick_matrix()
    # medium, large and extra-large answers, each in at least two scenarios
    for size in ("medium", "large", "xlarge"):
        assert len({s.scenario for s in specs if s.size == size and s.scenario != "TC8"}) >= 2
    # every condition beyond the seed's five at least once, against unbroken itself
    others = set(CONDITIONS) - set(SEED_CONDITIONS) - KERNEL_CONDITIONS
    assert others == {"receive_only", "long_outage", "throttled"}
    assert others <= {s.condition for s in specs}
    # a receive-only failure only stalls an answer larger than the server's window
    assert all(s.size_bytes > 1024 * 1024 for s in specs if s.condition == "receive_only")
    # CI stays fast: at most two 30 s outages
    assert 1 <= sum(s.condition == "long_outage" for s in specs) <= 2


def test_full_tier_crosses_the_axes_and_runs_a_thousand_streams_in_tc9() -> None:
    specs = full_matrix()
    crossed = [*SEED_CONDITIONS, "throttled"]
    tc1 = {
        (s.size, s.timing, s.condition, s.fault)
        for s in specs
        if s.scenario == "TC1" and s.condition in crossed
    }
    assert len(tc1) == len(SIZES) * len(TIMINGS) * len(crossed) * len(FAULTS)
    tc8 = {(s.timing, s.condition, s.fault) for s in specs if s.scenario == "TC8"}
    assert len(tc8) >= len(TC8_CUTS) * (len(crossed) + 1) * len(FAULTS)
    assert {s.condition for s in specs} == set(CONDITIONS)
    assert all(s.size_bytes > 1024 * 1024 for s in specs if s.condition == "receive_only")
    longs = [s for s in specs if s.condition == "long_outage"]
    assert {s.fault for s in longs} == set(FAULTS) and len(longs) <= 20
    assert {s.variant for s in specs if s.scenario == "TC5"} == {"long", "short", "silent"}
    tc9 = next(s for s in specs if s.scenario == "TC9")
    clients, per_client = layout(tc9)
    assert len(answers_for(tc9)) >= 1000 and clients * per_client >= 1000
    assert all(s.size_bytes >= 10_000_000 for s in specs if s.scenario == "TC8")
    assert len({s.id for s in specs}) == len(specs)


def test_select_filters_and_repeats() -> None:
    specs = select(quick_matrix(), scenarios=["1,TC8"], conditions=["outage"], repeat=2)
    assert {s.scenario for s in specs} == {"TC1", "TC8"}
    assert {s.condition for s in specs} == {"outage"}
    assert sorted({s.repeat for s in specs}) == [0, 1]
    assert len(specs) == 4
    # repeats get their own sizes within the class
    sizes = {s.size_bytes for s in specs if s.scenario == "TC1"}
    assert len(sizes) == 2


def test_select_by_size_keeps_the_cases_whose_size_is_their_own() -> None:
    """TC8's answers are always 10 MB+ (its case is not ``sized``): a size filter keeps
    its runs, and drops the other scenarios' runs of other sizes."""
    specs = select(quick_matrix(), sizes=["small"])
    assert {s.size for s in specs if s.scenario != "TC8"} == {"small"}
    assert [s for s in specs if s.scenario == "TC8"] == [
        s for s in quick_matrix() if s.scenario == "TC8"
    ]
    assert all(s.size_bytes > 10_000_000 for s in specs if s.scenario == "TC8")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"scenarios": ["TC99"]}, "unknown scenario"),
        ({"sizes": ["huge"]}, "unknown size"),
        ({"conditions": ["flaky"]}, "unknown condition"),
        ({"repeat": 0}, "at least 1"),
    ],
)
def test_select_refuses_unknown_names(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select(quick_matrix(), **kw)  # type: ignore[arg-type]


def test_select_refuses_a_scenario_without_a_case() -> None:
    from .test_cases import without_case

    with without_case("TC14"), pytest.raises(ConfigError, match="TC14 are not covered yet"):
        select(quick_matrix(), scenarios=["TC14"])


def test_run_spec_round_trips_through_json() -> None:
    for spec in quick_matrix()[:10]:
        assert RunSpec.from_dict(spec.to_dict()) == spec


def test_kernel_conditions_are_sampled_not_crossed() -> None:
    full = [s for s in full_matrix() if s.condition in KERNEL_CONDITIONS]
    assert {s.condition for s in full} == set(KERNEL_CONDITIONS)
    per_scenario = Counter(s.scenario for s in full)
    assert set(per_scenario) >= {"TC1", "TC2", "TC3", "TC4", "TC7", "TC8", "TC9"}
    assert max(per_scenario.values()) <= 10  # a handful, not the cross product
    # a receive-only failure only stalls an answer past the server's flow window
    assert all(s.size_bytes > 1024 * 1024 for s in full if s.condition == "kernel_receive_only")
    quick = [s for s in quick_matrix() if s.condition in KERNEL_CONDITIONS]
    assert 1 <= len(quick) <= 2 and all(s.size in ("small", "medium") for s in quick)
    assert all(10.0 <= PROFILES["full"].loss_percent(r) <= 20.0 for r in range(20))


async def test_kernel_runs_are_skipped_with_the_reason_where_they_cannot_run() -> None:
    reason = kernel_skip_reason()
    if reason is None:
        pytest.skip("kernel-level faults can run here: the tiers run them")
    result = await run_one(RunSpec("TC1", "small", "mid", "kernel_loss", "rst"))
    assert result.skipped and not result.passed and not result.failed
    assert result.error == reason


def test_tc11_runs_every_browser_fault_and_stays_short_in_the_quick_tier() -> None:
    from unbroken.scenarios.cases.tc11 import CASE, HOLD, VARIANTS

    quick = [s for s in quick_matrix() if s.scenario == "TC11"]
    full = [s for s in full_matrix() if s.scenario == "TC11"]
    assert {s.variant for s in full} == set(VARIANTS)
    assert all(s.fault == VARIANTS[s.variant] and s.condition == "clean" for s in full + quick)
    # the quick tier's browser time: each run streams for its pace and holds its fault
    seconds = sum(CASE.pace(s) + HOLD["quick"].get(s.variant, 0.0) for s in quick)
    assert seconds <= 15, seconds
