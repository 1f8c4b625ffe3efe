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

Your own app: override the ``chaos_app`` fixture (or ``chaos_url`` for a running
service, ``ws://host:port/path``); the harness then serves it, and ``run_scenario`` runs
the scenario's faults against your agent, judged by the digest chain against a
fault-free run of the same agent and input (no expected text)::

    @pytest.fixture
    def chaos_app():
        return myservice.app  # your Unbroken app

    @pytest.mark.parametrize("condition", ["clean", "intermittent", "outage", "asymmetric"])
    async def test_report_survives_the_network(run_scenario, condition):
        result = await run_scenario("TC1", agent="report", input={"q": "x"}, condition=condition)
        assert result.passed, result.failed_checks()
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
from ..server import Unbroken
from .cases import CASES
from .catalog import FaultMode, RunSpec
from .harness import ChaosHarness
from .results import RunResult
from .runner import run_one
from .user_app import Call, Reference, Service, reference_run, run_user_spec


@pytest.fixture
def chaos_app() -> Unbroken | None:
    """The app the harness serves: override it with yours (None: the built-in test app,
    whose ``answer`` agent replays generated answers)."""
    return None


@pytest.fixture
def chaos_url() -> str | None:
    """A running service to put the fault proxy in front of (``ws://host:port/path``):
    override it to test a deployment (None: an app served here)."""
    return None


def _yours(request: pytest.FixtureRequest) -> tuple[Unbroken | None, str | None]:
    """The ``chaos_app`` and ``chaos_url`` fixtures' values (None where not defined: a
    conftest may import only some of these fixtures)."""

    def value(name: str) -> Any:
        try:
            return request.getfixturevalue(name)
        except pytest.FixtureLookupError:
            return None

    app, url = value("chaos_app"), value("chaos_url")
    if app is not None and not isinstance(app, Unbroken):
        raise ConfigError(f"the chaos_app fixture must return an Unbroken app, not {app!r}")
    return app, (None if url is None else str(url))


@pytest_asyncio.fixture
async def chaos_harness(request: pytest.FixtureRequest) -> AsyncIterator[ChaosHarness]:
    """A running :class:`ChaosHarness` (server thread + fault proxy, or the proxy in front
    of ``chaos_url``), stopped after."""
    app, url = _yours(request)
    async with ChaosHarness(app=app, url=url) as harness:
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
    """The standard network conditions (NetworkSimulator) on the harness's proxy."""
    return NetworkSimulator(chaos_proxy)


@pytest.fixture
def answers() -> StreamingResponseSimulator:
    """Seeded, reproducible answers (text, JSON from a schema, multi-part)."""
    return StreamingResponseSimulator(seed=1)


RunScenario = Callable[..., Awaitable[RunResult]]


@pytest.fixture
def run_scenario(tmp_path: Path, request: pytest.FixtureRequest) -> RunScenario:
    """Run one scenario of the catalog (quick profile); artefacts of a failed run go to
    ``tmp_path/artefacts``. Keyword arguments are :class:`RunSpec` fields.

    With your app (``chaos_app``) or service (``chaos_url``): ``agent=`` and ``input=``
    (or ``inputs=[...]``, taken in turn by the streams) name what the streams run, and
    ``same_answer=False`` judges an agent whose answer varies by its digest chain alone;
    ``token=`` for a service that requires one."""
    refs: dict[tuple[str, str, bool], Reference] = {}
    chaos_app, chaos_url = _yours(request)

    async def run(scenario: str, **fields: Any) -> RunResult:
        case = CASES.get(scenario)
        if chaos_app is not None or chaos_url is not None:
            return await _run_yours(scenario, fields)
        if "agent" in fields:
            raise ConfigError("agent= runs your own agent: override the chaos_app fixture")
        spec = RunSpec(
            scenario=scenario,
            size=str(fields.pop("size", case.default_size if case else "small")),
            timing=str(fields.pop("timing", case.default_timing if case else "mid")),
            condition=str(fields.pop("condition", "clean")),
            fault=_fault(fields.pop("fault", "rst")),
            **fields,
        )
        return await run_one(spec, artefacts=tmp_path / "artefacts")

    async def _run_yours(scenario: str, fields: dict[str, Any]) -> RunResult:
        import json

        agent = fields.pop("agent", None)
        if agent is None:
            raise ConfigError("name your agent: run_scenario(..., agent='name', input=...)")
        given = fields.pop("inputs", None) or [fields.pop("input", None)]
        same = bool(fields.pop("same_answer", True))
        service = Service(
            app=chaos_app,
            url=chaos_url,
            token=fields.pop("token", None),
            path=str(fields.pop("path", "/ws")),
        )
        calls = []
        for value in given:
            key = (str(agent), json.dumps(value, sort_keys=True, default=str), same)
            if key not in refs:
                refs[key] = await reference_run(service, Call(str(agent), value), repeatable=same)
            calls.append(refs[key])
        case = CASES.get(scenario)
        spec = RunSpec(
            scenario=scenario,
            size="small",
            timing=str(fields.pop("timing", case.default_timing if case else "mid")),
            condition=str(fields.pop("condition", "clean")),
            fault=_fault(fields.pop("fault", "rst")),
            **fields,
        )
        return await run_user_spec(service, calls, spec)

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
    "chaos_app",
    "chaos_client",
    "chaos_harness",
    "chaos_proxy",
    "chaos_url",
    "network",
    "run_scenario",
]
