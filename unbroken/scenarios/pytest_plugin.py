"""pytest fixtures for your own chaos tests: a real server, a fault proxy, clients,
generated answers and verifiers.

Enable with ``-p unbroken.scenarios.pytest_plugin`` (or ``pytest_plugins =
["unbroken.scenarios.pytest_plugin"]`` in your top-level ``conftest.py``). Needs
``pytest-asyncio``. ::

    async def test_my_answer_survives_a_reset(chaos_harness, chaos_client, answers):
        rec = await chaos_harness.start(chaos_client, answers.text_answer(200_000), seconds=0.5)
        await chaos_harness.proxy.wait_until(lambda: rec.body_bytes > 50_000)
        await chaos_harness.proxy.cut_all("rst")
        await rec.done()
        assert chaos_harness.verify_client(rec).ok           # every event once, digest exact
        assert (await chaos_harness.verify_log(rec)).ok      # the server's log is intact

Fixtures: ``chaos_harness`` (:class:`~unbroken.scenarios.harness.ChaosHarness`: server on
its own thread + :class:`~unbroken.chaos.FaultProxy`), ``chaos_proxy``, ``chaos_client``
(a connected :class:`~unbroken.client.Client` through the proxy), ``network``
(:class:`~unbroken.chaos.NetworkSimulator` on the proxy), ``answers`` (a seeded
:class:`~unbroken.chaos.StreamingResponseSimulator`) and ``run_scenario`` (runs a catalog
scenario, e.g. ``await run_scenario("TC1", condition="outage", fault="blackhole")``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ..chaos import FaultProxy, NetworkSimulator, StreamingResponseSimulator
from ..client import Client
from ..errors import ConfigError
from .cases import CASES
from .catalog import FaultMode, RunSpec
from .harness import ChaosHarness
from .results import RunResult
from .runner import run_one


@pytest_asyncio.fixture
async def chaos_harness() -> AsyncIterator[ChaosHarness]:
    """A running :class:`ChaosHarness` (server thread + fault proxy), stopped after."""
    async with ChaosHarness() as harness:
        yield harness


@pytest.fixture
def chaos_proxy(chaos_harness: ChaosHarness) -> FaultProxy:
    """The harness's :class:`FaultProxy` (between ``chaos_client`` and the server)."""
    return chaos_harness.proxy


@pytest_asyncio.fixture
async def chaos_client(chaos_harness: ChaosHarness) -> AsyncIterator[Client]:
    """A connected :class:`Client` through the proxy (fast backoff, 0.5 s pings)."""
    async with chaos_harness.client() as client:
        yield client


@pytest.fixture
def network(chaos_proxy: FaultProxy) -> NetworkSimulator:
    """The seed's network conditions on the harness's proxy."""
    return NetworkSimulator(chaos_proxy)


@pytest.fixture
def answers() -> StreamingResponseSimulator:
    """Seeded, reproducible answers (text, JSON from a schema, multi-part)."""
    return StreamingResponseSimulator(seed=1)


RunScenario = Callable[..., Awaitable[RunResult]]


@pytest.fixture
def run_scenario(tmp_path: Path) -> RunScenario:
    """Run one scenario of the catalog (quick profile); artefacts of a failed run go to
    ``tmp_path/artefacts``. Keyword arguments are :class:`RunSpec` fields."""

    async def run(scenario: str, **fields: Any) -> RunResult:
        case = CASES.get(scenario)
        spec = RunSpec(
            scenario=scenario,
            size=str(fields.pop("size", case.default_size if case else "small")),
            timing=str(fields.pop("timing", case.default_timing if case else "mid")),
            condition=str(fields.pop("condition", "clean")),
            fault=_fault(fields.pop("fault", "rst")),
            **fields,
        )
        return await run_one(spec, artefacts=tmp_path / "artefacts")

    return run


def _fault(value: object) -> FaultMode:
    if value == "fin":
        return "fin"
    if value == "blackhole":
        return "blackhole"
    if value == "rst":
        return "rst"
    raise ConfigError(f"fault must be fin, rst or blackhole, not {value!r}")


__all__ = [
    "answers",
    "chaos_client",
    "chaos_harness",
    "chaos_proxy",
    "network",
    "run_scenario",
]
