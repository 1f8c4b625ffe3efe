"""Admission control over real sockets: live-run caps (global, per principal),
event-loop lag, RSS; a refused start gets ``overloaded`` + ``retry_after_ms``, a
repeated start of a known request still gets its stream, in-flight streams are
never shed; the stall watchdog fails a silent agent with a clear reason."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from unbroken import Client
from unbroken.errors import ConfigError, StreamFailed
from unbroken.protocol.codes import ErrorCode
from unbroken.protocol.events import Kind
from unbroken.protocol.frames import Start, encode
from unbroken.server import Output, Request
from unbroken.server.admission import Admission, AdmissionLimits

from .conftest import authenticate
from .wire import Wire, assert_exact, text_of

Served = Any


def limits(**kw: Any) -> AdmissionLimits:
    """No limit but the ones given (the lag/RSS defaults must not interfere)."""
    base: dict[str, Any] = {
        "max_runs": None,
        "max_runs_per_principal": None,
        "max_loop_lag": None,
        "max_rss": None,
    }
    return AdmissionLimits(**(base | kw))


async def refused(w: Wire, req: str, agent: str = "forever", input: Any = None) -> Any:
    """Send a start that must be refused; return its error frame."""
    n = len(w.errors)
    await w.send(w.cs.start(req, agent, input))
    await w.until(lambda _o: len(w.errors) > n or req in w.started)
    assert req not in w.started, f"{req} was admitted"
    return w.errors[-1]


async def test_per_principal_cap_refuses_the_next_run_but_not_another_principal(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served(
        authenticate=authenticate,
        admission=limits(max_runs_per_principal=3, retry_after=0.5),
    )
    alice = await Wire.open(srv.url, token="alice-token")
    sids = [await alice.start(f"a{i}", "forever", f"g{i}") for i in range(3)]
    err = await refused(alice, "a3")
    assert err.code == ErrorCode.OVERLOADED and err.req == "a3"
    assert err.retry_after_ms is not None and 500 <= err.retry_after_ms <= 1000
    assert "max_runs_per_principal" in err.message
    assert kit.calls["a3"] == 0  # never ran
    # another principal is not affected
    bob = await Wire.open(srv.url, token="bob-token")
    bob_sid = await bob.start("b0", "forever", "gb")
    # a repeated start of a request alice already made still gets its stream
    again = await Wire.open(srv.url, token="alice-token")
    assert await again.start("a1", "forever", "g1") == sids[1]
    assert kit.calls["a1"] == 1
    # in-flight streams are untouched: they all complete exact
    for i in range(3):
        kit.gates[f"g{i}"].set()
    for sid in sids:
        assert_exact(await alice.read_to_end(sid))
    kit.gates["gb"].set()
    assert_exact(await bob.read_to_end(bob_sid))
    # slots freed: the same request is admitted now
    await kit.wait_meta(sids[-1], lambda m: m is not None and m.status != "running")
    await asyncio.wait_for(_until(lambda: kit.app.hub.gate.runs == 0), 10)
    sid = await again_(alice, "a3", "echo", "late")
    assert text_of(await alice.read_to_end(sid)) == "late"
    assert kit.app.hub.gate.refused == {"principal_runs": 1}
    assert any("start refused req=a3" in r.getMessage() for r in caplog_info.records)  # warned


async def test_global_cap_refuses_anyone_until_a_run_ends(served: Served) -> None:
    kit, srv = await served(
        authenticate=authenticate, admission=limits(max_runs=2, retry_after=0.2)
    )
    alice = await Wire.open(srv.url, token="alice-token")
    bob = await Wire.open(srv.url, token="bob-token")
    a0 = await alice.start("a0", "forever", "g0")
    await bob.start("b0", "forever", "g1")
    err = await refused(bob, "b1", "echo", "x")
    assert err.code == ErrorCode.OVERLOADED and "max_runs" in err.message
    assert 200 <= err.retry_after_ms <= 400
    kit.gates["g0"].set()
    assert_exact(await alice.read_to_end(a0))
    await asyncio.wait_for(_until(lambda: kit.app.hub.gate.runs == 1), 10)
    sid = await again_(bob, "b1", "echo", "x")
    assert text_of(await bob.read_to_end(sid)) == "x"
    kit.gates["g1"].set()


async def test_python_client_retries_a_refused_start_after_retry_after_and_completes(
    served: Served,
) -> None:
    kit, srv = await served(admission=limits(max_runs=1, retry_after=0.3))
    hub = kit.app.hub
    seen: list[tuple[str, float, str]] = []  # (req, time, outcome) as the hub saw them
    real_start = hub.start

    async def recording_start(principal: Any, req: str, agent: str, input: Any, **kw: Any) -> Any:
        try:
            created = await real_start(principal, req, agent, input, **kw)
        except Exception as exc:
            seen.append((req, time.monotonic(), type(exc).__name__))
            raise
        seen.append((req, time.monotonic(), "started"))
        return created

    hub.start = recording_start  # type: ignore[method-assign]
    async with Client(srv.url) as c:
        first = await c.start("forever", "g")
        second_task = asyncio.create_task(c.start("echo", "second", req="second"))
        await asyncio.wait_for(_until(lambda: any(o == "Overloaded" for *_, o in seen)), 10)
        kit.gates["g"].set()
        answer = await first.wait()
        assert answer.text == "started done"
        second = await asyncio.wait_for(second_task, 20)
        assert (await second.wait()).text == "second"
    tries = [(t, o) for r, t, o in seen if r == "second"]
    assert [o for _, o in tries][-1] == "started"
    assert tries[0][1] == "Overloaded"
    # every retry came no sooner than the server's floor (0.3 s; jitter only adds)
    for (t0, _), (t1, _) in itertools.pairwise(tries):
        assert t1 - t0 >= 0.3 * 0.95


async def test_loop_lag_refuses_new_runs_while_in_flight_streams_complete(
    served: Served,
) -> None:
    kit, srv = await served(admission=limits(max_loop_lag=0.03, lag_interval=0.01))
    hog_done = asyncio.Event()

    @kit.app.agent("hog")
    async def hog(req: Request, out: Output) -> None:
        """Blocks the loop 60 ms at a time (a CPU-bound agent) until told to stop."""
        i = 0
        while not hog_done.is_set():
            time.sleep(0.06)  # noqa: ASYNC251 - the point: a loop that falls behind
            await out.text(f"{i} ")
            i += 1
            await asyncio.sleep(0)

    w = await Wire.open(srv.url)
    steady = await w.start("steady", "count", {"n": 300, "yield_every": 1})
    hog_sid = await w.start("hog", "hog")
    gate = kit.app.hub.gate
    await asyncio.wait_for(_until(lambda: gate.lag > 0.03), 10)
    err = await refused(w, "new", "echo", "x")
    assert err.code == ErrorCode.OVERLOADED and "max_loop_lag" in err.message
    assert gate.refused.get("loop_lag", 0) >= 1
    hog_done.set()
    assert_exact(await w.read_to_end(steady, limit=30))
    hog_events = await w.read_to_end(hog_sid, limit=30)
    assert_exact(hog_events)
    await asyncio.wait_for(_until(lambda: gate.lag < 0.03), 10)
    sid = await again_(w, "new", "echo", "x")
    assert text_of(await w.read_to_end(sid)) == "x"


async def test_rss_above_max_rss_refuses_new_runs(served: Served) -> None:
    # 1 MiB: far below any real process, read from the real process by psutil
    kit, srv = await served(admission=limits(max_rss=1 << 20, lag_interval=0.01))
    gate = kit.app.hub.gate
    w = await Wire.open(srv.url)
    await asyncio.wait_for(_until(lambda: gate.rss > 0), 10)
    err = await refused(w, "r", "echo", "x")
    assert err.code == ErrorCode.OVERLOADED and "max_rss" in err.message


async def test_a_burst_of_starts_is_never_admitted_past_the_cap(served: Served) -> None:
    """Starts sent back to back on one connection: exactly the cap is admitted."""
    kit, srv = await served(admission=limits(max_runs_per_principal=5))
    w = await Wire.open(srv.url)
    for i in range(20):
        w.cs.start(f"s{i}", "forever", f"g{i}")
        await w.send_raw(encode(Start(f"s{i}", "forever", f"g{i}")).decode())
    await w.until(lambda _o: len(w.started) + len(w.errors) >= 20)
    assert len(w.started) == 5
    assert all(e.code == ErrorCode.OVERLOADED for e in w.errors)
    assert len(kit.app.hub.runs) == 5
    for i in range(20):
        kit.gates[f"g{i}"].set()
    for sid in w.started.values():
        assert_exact(await w.read_to_end(sid))


# ---------------------------------------------------------------- stall watchdog
async def test_a_silent_agent_fails_stalled_and_the_client_sees_why(served: Served) -> None:
    kit, srv = await served(admission=limits(stall_timeout=0.3))
    async with Client(srv.url) as c:
        st = await c.start("forever", "never-set")
        with pytest.raises(StreamFailed) as info:
            await asyncio.wait_for(st.wait(), 10)
    assert info.value.status == "failed"
    assert info.value.error == "stalled: no output for 0.3s"
    assert st.result.text == "started "
    meta = await kit.meta(st.id)
    assert meta is not None and meta.error == "stalled: no output for 0.3s"
    assert not kit.app.hub.runs


async def test_a_slow_but_steady_agent_is_not_stalled(served: Served) -> None:
    kit, srv = await served(admission=limits(stall_timeout=0.3))

    @kit.app.agent("steady")
    async def steady(req: Request, out: Output) -> None:
        for i in range(8):
            await out.text(f"{i} ")
            await asyncio.sleep(0.1)

    w = await Wire.open(srv.url)
    sid = await w.start("s", "steady")
    events = await w.read_to_end(sid)
    assert_exact(events)
    assert events[-1].kind is Kind.END and events[-1].status == "completed"


# ---------------------------------------------------------------- the policy alone
def test_limits_are_validated() -> None:
    for bad in (
        {"max_runs": 0},
        {"max_runs_per_principal": -1},
        {"max_loop_lag": 0},
        {"retry_after": 0},
        {"stall_timeout": -1},
        {"lag_interval": 2},
    ):
        with pytest.raises(ConfigError):
            AdmissionLimits(**bad)
    assert AdmissionLimits().rss_limit is not None  # derived from this machine
    assert AdmissionLimits.unlimited().rss_limit is None


def test_one_long_tick_does_not_refuse_but_a_loop_that_stays_behind_does() -> None:
    a = Admission(limits(max_loop_lag=0.25), jitter=lambda: 0.5)
    a.observe_lag(0.9)  # one 900 ms stall
    assert a.check(("p", "")) is None
    for _ in range(10):
        a.observe_lag(0.4)
    refusal = a.check(("p", ""))
    assert refusal is not None and refusal.reason == "loop_lag"
    assert refusal.error.retry_after == pytest.approx(1.5)
    for _ in range(20):
        a.observe_lag(0.0)
    assert a.check(("p", "")) is None


def test_counts_are_per_principal_and_released() -> None:
    a = Admission(limits(max_runs=3, max_runs_per_principal=2))
    a.admitted(("alice", ""))
    a.admitted(("alice", ""))
    assert a.check(("alice", "")) is not None
    assert a.check(("bob", "")) is None
    a.admitted(("bob", ""))
    assert a.check(("bob", "")) is not None  # the global cap now
    a.released(("alice", ""))
    assert a.check(("bob", "")) is None and a.per_principal == {("alice", ""): 1, ("bob", ""): 1}


async def again_(w: Wire, req: str, agent: str, input: Any) -> str:
    """Send a refused start again (as a client's retry does); its stream id."""
    await w.send(Start(req, agent, input))
    await w.until(lambda _o: req in w.started)
    return w.started[req]


async def _until(cond: Any) -> None:
    while not cond():  # noqa: ASYNC110 - polled under the caller's timeout
        await asyncio.sleep(0.01)


async def test_a_per_agent_stall_limit_overrides_the_servers(served: Served) -> None:
    kit, srv = await served(admission=limits(stall_timeout=30.0))
    kit.app.hub.stall_timeouts["forever"] = 0.2  # what @app.agent(stall_timeout=0.2) sets
    w = await Wire.open(srv.url)
    sid = await w.start("f", "forever", "never-set")
    events = await w.read_to_end(sid)
    assert_exact(events)
    end = events[-1]
    assert (end.status, end.error) == ("failed", "stalled: no output for 0.2s")
    # the open text part was closed with the error (an error part, not a dangling one)
    part_ends = [e for e in events if e.kind is Kind.PART_END]
    assert part_ends and part_ends[-1].error


async def test_set_admission_replaces_the_limits_and_keeps_the_live_counts(
    served: Served,
) -> None:
    kit, srv = await served(admission=limits(max_runs=10))
    w = await Wire.open(srv.url)
    sid = await w.start("held", "forever", "g")
    kit.app.hub.set_admission(limits(max_runs=1, stall_timeout=5.0))  # what a CLI flag does
    assert kit.app.hub.gate.runs == 1 and kit.app.hub.stall_timeout == 5.0
    err = await refused(w, "next", "echo", "x")
    assert err.code == ErrorCode.OVERLOADED and "max_runs" in err.message
    kit.gates["g"].set()
    assert_exact(await w.read_to_end(sid))
    await asyncio.wait_for(_until(lambda: kit.app.hub.gate.runs == 0), 10)


async def test_app_agent_stall_timeout_fails_a_silent_run_for_its_client() -> None:
    from unbroken import Unbroken
    from unbroken.testing import serve

    app = Unbroken(allow_anonymous=True)
    never = asyncio.Event()

    @app.agent("hangs", stall_timeout=0.3)
    async def hangs(req: Request, out: Output) -> None:
        await out.text("first words, then nothing ")
        await never.wait()

    assert app.hub.stall_timeouts == {"hangs": 0.3}
    with pytest.raises(ConfigError):
        app.agent("bad", stall_timeout=0)
    async with serve(app) as srv, Client(srv.url) as client:
        stream = await client.start("hangs", None)
        with pytest.raises(StreamFailed) as failed:
            async with asyncio.timeout(20):
                await stream.wait()
    assert "stalled: no output for 0.3s" in str(failed.value)
    assert stream.result.text.startswith("first words")


async def test_a_resume_too_soon_after_a_shed_is_refused_to_its_owner_only(
    served: Served,
) -> None:
    """The shed memory answers only a resume that would be granted: the owner coming
    back too soon gets ``overloaded`` + 4008; anyone else gets the usual refusal, learns
    nothing of the stream, and their connection goes on."""
    kit, srv = await served(authenticate=authenticate, admission=limits())
    alice = await Wire.open(srv.url, token="alice-token")
    sid = await alice.start("s1", "forever", "gs")
    kit.app.hub.gate.remember_shed([sid], time.monotonic() + 60.0)

    bob = await Wire.open(srv.url, token="bob-token")
    await bob.replay(sid, kit.app.store.epoch)
    await bob.until(lambda _o: sid in bob.gone)
    assert bob.gone[sid].reason == "forbidden" and not bob.errors
    bsid = await bob.start("b1", "echo", "still here")
    assert text_of(await bob.read_to_end(bsid)) == "still here"

    again = await Wire.open(srv.url, token="alice-token")
    await again.replay(sid, kit.app.store.epoch)
    assert await again.expect_close() == 4008
    err = again.errors[-1]
    assert err.code == ErrorCode.OVERLOADED
    assert err.retry_after_ms is not None and err.retry_after_ms > 50_000

    kit.gates["gs"].set()  # the first connection was never shed: it reads on, exact
    assert_exact(await alice.read_to_end(sid))
    for w in (alice, bob):
        await w.close()
