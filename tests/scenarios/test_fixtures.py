"""The fixtures users get (``unbroken.scenarios.pytest_plugin``), used as a user would,
and proof that the checks behind the suite can fail."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.chaos import FaultProxy, NetworkSimulator, StreamingResponseSimulator
from unbroken.client import Client
from unbroken.protocol.events import Event, Kind
from unbroken.scenarios.harness import ChaosHarness, TapFrame
from unbroken.scenarios.results import RunResult


async def test_a_users_chaos_test_with_the_fixtures(
    chaos_harness: ChaosHarness,
    chaos_client: Client,
    chaos_proxy: FaultProxy,
    answers: StreamingResponseSimulator,
) -> None:
    answer = answers.text_answer(120_000, 64)
    rec = await chaos_harness.start(chaos_client, answer, seconds=0.4)
    conn = await asyncio.wait_for(chaos_proxy.wait_connection(1), 5)
    await asyncio.wait_for(chaos_proxy.wait_until(lambda: conn.downstream.sent > 40_000), 10)
    assert await chaos_proxy.cut_all("rst") == 1
    await asyncio.wait_for(rec.done(), 20)
    assert rec.answer is not None and rec.answer.text == answer.body("text")
    assert chaos_harness.verify_client(rec).ok
    assert (await chaos_harness.verify_log(rec)).ok
    # the wire tap saw the resume and the replay right after it
    assert chaos_harness.tap is not None
    frames = chaos_harness.tap.frames()
    resume = next(f for f in frames if f.kind == "resume")
    replay = next(f for f in frames if f.kind == "events" and f.conn == resume.conn)
    assert replay.seq == resume.seq + 1
    assert chaos_harness.book.calls[rec.key] == 1


async def test_network_fixture_plays_an_outage(
    chaos_harness: ChaosHarness,
    chaos_client: Client,
    network: NetworkSimulator,
    answers: StreamingResponseSimulator,
) -> None:
    rec = await chaos_harness.start(chaos_client, answers.text_answer(30_000, 64), seconds=0.3)
    await network.simulate_complete_outage(0.3, mode="fin")
    await asyncio.wait_for(rec.done(), 20)
    kinds = [e.kind for e in chaos_client.history]
    assert "disconnected" in kinds and "resumed" in kinds
    assert chaos_harness.verify_client(rec).ok


async def test_the_verifiers_catch_a_tampered_answer(
    chaos_harness: ChaosHarness, chaos_client: Client, answers: StreamingResponseSimulator
) -> None:
    rec = await chaos_harness.start(chaos_client, answers.text_answer(5_000, 64))
    await asyncio.wait_for(rec.done(), 20)
    assert chaos_harness.verify_client(rec).ok
    i = next(i for i, e in enumerate(rec.events) if e.kind == Kind.TEXT)
    rec.events[i] = Event(rec.events[i].seq, Kind.TEXT, part="text", body="tampered")
    verdict = chaos_harness.verify_client(rec)
    assert not verdict.ok and verdict.problem == "altered"
    rec.events.insert(i, rec.events[i])
    assert chaos_harness.verify_client(rec).problem in ("duplicated", "altered")


async def test_run_scenario_fixture_runs_a_catalog_case(run_scenario) -> None:  # type: ignore[no-untyped-def]
    result: RunResult = await run_scenario("TC1", condition="clean", fault="fin")
    assert result.passed and result.exact and result.metrics.drops >= 1
    with pytest.raises(Exception, match="fault must be"):
        await run_scenario("TC1", fault="smoke")


def test_resend_accounting_flags_a_full_retransmission() -> None:
    """A server that resumed from 0 instead of the client's seq breaks TC8's bound."""
    from unbroken.scenarios.runner import FRAME_CAP, _Episode

    ok = _Episode(
        "s",
        2,
        after=100,
        max_sent=150,
        first_replayed=101,
        inflight=5000.0,
        resent=5000.0,
        resent_events=50,
    )
    assert ok.position_ok and ok.within_limit
    full = _Episode(
        "s",
        2,
        after=100,
        max_sent=150,
        first_replayed=1,
        inflight=5000.0,
        resent=5000.0 + FRAME_CAP + 1,
        resent_events=150,
    )
    assert not full.position_ok and not full.within_limit
    frame = TapFrame(0.0, 1, True, "events", 100, "s", seq=5, count=3)
    assert frame.last == 7
