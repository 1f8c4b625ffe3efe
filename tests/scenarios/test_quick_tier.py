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


@pytest.mark.parametrize("spec", quick_matrix(), ids=lambda s: s.id)
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
