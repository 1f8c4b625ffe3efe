"""The quick tier: every seed scenario 1-9 under every network condition, for real,
TC11's browser faults in a real chromium page (skipped with the reason without chromium,
Playwright or the built JS bundle), and TC10, TC12-TC15 with their own faults (TC14: the
server's protocol versions change under the stream).

Each run streams generated answers from a real server (its own thread) through a fault
proxy to real clients over loopback, plays the fault plan, and checks the scenario's
"must hold" list (see ``unbroken.scenarios.catalog``): the verifier's verdict on the
client's events and on the server's log, the end digest, the sequence trace and the
scenario's own checks. A failed run keeps its debugging artefacts under ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.scenarios.cases import case_for
from unbroken.scenarios.catalog import RunSpec, quick_matrix
from unbroken.scenarios.results import RunResult
from unbroken.scenarios.runner import run_one


def explain(result: RunResult, where: Path) -> str:
    lines = [f"{result.id}: {result.status}"]
    lines += [f"  check failed: {c.name}: {c.detail}" for c in result.failed_checks()]
    if result.error:
        lines.append(f"  error: {result.error}")
    lines += [f"  note: {n}" for n in result.notes]
    lines.append(f"  artefacts: {where / result.id}")
    return "\n".join(lines)


#: quick-matrix runs pytest keeps for ``-m full`` (CI's default tier has a time budget;
#: ``unbroken chaos run --quick`` still runs them), each with what covers it by default
IN_FULL = {
    # 30 s of silence; by default: tests/integration/client/test_handshake_after_drop.py
    # ::test_a_long_blackhole_never_leaves_more_than_a_stagger_between_openings (a 5 s
    # silent blackhole, scaled timeouts: ridden out, back within a stagger, exact); the
    # full tier runs 17 long_outage runs of 30 s (this id among them)
    "TC1-small-mid-long_outage-blackhole-r0",
    # an xlarge answer under receive-only: TC1-xlarge-mid-receive_only-rst-r0 is the same
    # condition and size by default; TC8's percentiles by its five xlarge rows
    "TC8-xlarge-p50-receive_only-blackhole-r0",
    # the two longest xlarge rows (~25 and ~17 s quiet): TC8's cut positions stay early,
    # mid and late by default (p10, p50, p95); their conditions by default at smaller
    # sizes (outage-rst: TC9-small-mid-outage-rst; intermittent-blackhole:
    # TC9-small-mid-intermittent-blackhole, TC4-medium-mid-intermittent-blackhole)
    "TC8-xlarge-p25-outage-rst-r0",
    "TC8-xlarge-p75-intermittent-blackhole-r0",
}


def _params() -> list[object]:
    return [
        pytest.param(s, id=s.id, marks=pytest.mark.full if s.id in IN_FULL else ())
        for s in quick_matrix()
    ]


@pytest.mark.parametrize("spec", _params())
async def test_scenario_holds(spec: RunSpec, tmp_path: Path) -> None:
    result = await run_one(spec, artefacts=tmp_path)
    if result.skipped:  # a kernel condition without root, TC11 without a browser: skipped
        pytest.skip(result.error)
    assert result.passed, explain(result, tmp_path)
    assert result.exact and result.streams_exact == result.streams >= 1
    # the fault really broke connections, and the client came back on its own (unless
    # the case says its fault breaks none, or its client must give up)
    disruption = case_for(spec.scenario).disruption(spec)
    if disruption != "none":
        assert result.metrics.drops >= 1, explain(result, tmp_path)
    if disruption == "recovers":
        assert result.recovered is True, explain(result, tmp_path)
        assert result.metrics.reconnect_s is not None
        assert result.metrics.recovery_s is not None
    assert result.metrics.server_cpu_s is not None and result.metrics.server_cpu_s > 0
    assert result.checks and all(c.ok for c in result.checks)
