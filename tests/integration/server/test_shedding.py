"""Shedding slow readers under sustained pressure (issue 16): a reader behind a slow
link is detached with ``error overloaded`` + ``retry_after_ms`` and close 4008, comes
back no sooner than that and ends exact; a reader that keeps up is not shed; the agents
are neither paused nor restarted (real server, real clients, the fault proxy)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from unbroken import Client
from unbroken.chaos import Bandwidth, FaultProxy, NetworkSimulator
from unbroken.errors import ConfigError
from unbroken.protocol.codes import CloseCode
from unbroken.server import Output, Request
from unbroken.server.admission import SLOW_READER, Admission, AdmissionLimits
from unbroken.testing import serve

from ...waiting import until
from .conftest import Kit, make_kit
from .hardened import ROOT

TIMEOUT = 10.0
CHUNKS, SIZE, GAP = 100, 1000, 0.025  # 100 KB over ~2.5 s: 40 KB/s
NEVER = 1 << 40  # an RSS limit never reached: the monitor runs, no pressure


def chunk(i: int) -> str:
    return f"{i:05d}".ljust(SIZE, ".")


@pytest.mark.timeout(30)
async def test_a_slow_reader_is_shed_under_pressure_and_resumes_exact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="unbroken")
    kit, written = paced_kit(retry_after=0.5)
    want = "".join(chunk(i) for i in range(CHUNKS))
    async with (
        serve(kit.app) as srv,
        FaultProxy(f"127.0.0.1:{srv.port}") as proxy,
    ):
        net = NetworkSimulator(proxy)
        throttles = await net.simulate_bandwidth_throttling(10_000)  # 10 KB/s, both ways
        gate = kit.app.hub.gate
        async with (
            Client(srv.url.replace(f"127.0.0.1:{srv.port}", proxy.listen)) as slow,
            Client(srv.url) as fast,
        ):
            s_stream = await slow.start("paced", "slow")
            f_stream = await fast.start("paced", "fast")
            # the slow reader falls behind its window; then the server comes under
            # sustained pressure (the real RSS path: its limit is now below the RSS)
            await until(lambda: any(r.behind() >= SLOW_READER for r in kit.app.connections))
            gate.max_rss = 1
            await until(lambda: gate.shed_total >= 1)
            # the link recovers: what was queued for the shed reader (its last events,
            # the error, the close) arrives now
            for t in throttles:
                proxy.remove_toxic(t.name)
            shed_at = written["slow"]
            await until(lambda: any(e.kind == "disconnected" for e in slow.history))
            gate.max_rss = NEVER  # the pressure is over: the resumed reader stays
            s_answer = await asyncio.wait_for(s_stream.wait(), TIMEOUT)
            f_answer = await asyncio.wait_for(f_stream.wait(), TIMEOUT)
        # both exact, each agent ran once, to its end
        assert s_answer.text == want and f_answer.text == want
        assert kit.calls == {"slow": 1, "fast": 1}
        assert written == {"slow": CHUNKS, "fast": CHUNKS}
        # the slow reader was detached with 4008 mid-answer, its agent still writing
        assert shed_at < CHUNKS
        gone = [e for e in slow.history if e.kind == "disconnected"]
        assert len(gone) == 1 and gone[0].code == CloseCode.OVERLOADED
        # it came back no sooner than the server's retry_after_ms, then resumed
        shed_lines = [r.getMessage() for r in caplog.records if "shed slow reader" in r.message]
        assert len(shed_lines) == 1, shed_lines
        m = re.search(r"retry_after_ms=(\d+)", shed_lines[0])
        assert m is not None
        retry_after = int(m.group(1)) / 1000
        assert 0.5 <= retry_after <= 1.0
        again = [e for e in slow.history if e.kind == "reconnecting"]
        assert again and again[0].delay >= retry_after
        resumed = [e for e in slow.history if e.kind == "resumed"]
        assert resumed and resumed[0].at - gone[0].at >= retry_after
        # the fast reader was never shed; only one reader was
        assert not [e for e in fast.history if e.kind == "disconnected"]
        assert gate.shed_total == 1


class ShedTimes(logging.Handler):
    """When (monotonic) the server shed a reader, and the ``retry_after_ms`` it gave."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.sheds: list[tuple[float, float]] = []
        self.too_soon: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = re.search(r"retry_after_ms=(\d+)", msg)
        if msg.startswith("shed slow reader") and m:
            self.sheds.append((time.monotonic(), int(m.group(1)) / 1000))
        elif msg.startswith("resume too soon after a shed"):
            self.too_soon.append(msg)


def paced_kit(retry_after: float) -> tuple[Kit, dict[str, int]]:
    limits = AdmissionLimits(
        max_runs=None,
        max_runs_per_principal=None,
        max_loop_lag=None,  # the machine's own load must not be the pressure
        max_rss=NEVER,
        retry_after=retry_after,
        shed_after=0.2,
    )
    kit = make_kit(admission=limits, window=16 * 1024)
    written: dict[str, int] = {}

    @kit.app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        kit.calls[req.input] += 1
        for i in range(CHUNKS):
            await out.text(chunk(i))
            written[req.input] = i + 1
            await asyncio.sleep(GAP)

    return kit, written


def server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``error`` frames the clients logged (code and message)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "unbroken.client.client" and r.getMessage().startswith("server error")
    ]


@pytest.mark.timeout(40)
async def test_a_reader_shed_on_a_5_kbs_link_learns_it_and_waits_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At 5 KB/s a full 16 KiB window is 3 s of events ahead of the shed's error and
    close: the client's silence detector must not cut the link first (its pings
    queue behind those events), so it reads ``error overloaded`` + close 4008 and
    its next attempt waits ``retry_after_ms`` from then."""
    caplog.set_level(logging.INFO, logger="unbroken")
    times = ShedTimes()
    logging.getLogger("unbroken.server.connection").addHandler(times)
    kit, written = paced_kit(retry_after=0.5)
    want = "".join(chunk(i) for i in range(CHUNKS))
    try:
        async with (
            serve(kit.app) as srv,
            FaultProxy(f"127.0.0.1:{srv.port}") as proxy,
        ):
            slow_link = proxy.add_toxic(Bandwidth(rate=5_000), stream="downstream")
            gate = kit.app.hub.gate
            async with (
                Client(srv.url.replace(f"127.0.0.1:{srv.port}", proxy.listen)) as slow,
                Client(srv.url) as fast,
            ):
                s_stream = await slow.start("paced", "slow")
                f_stream = await fast.start("paced", "fast")
                await until(lambda: any(r.behind() >= SLOW_READER for r in kit.app.connections))
                gate.max_rss = 1  # sustained pressure (the real RSS path)
                await until(lambda: gate.shed_total >= 1)
                gate.max_rss = NEVER  # one shed is the test
                # the link stays at 5 KB/s until the client saw its connection end
                await until(lambda: any(e.kind == "disconnected" for e in slow.history), 20)
                proxy.remove_toxic(slow_link.name)  # then the catch-up goes fast
                s_answer = await asyncio.wait_for(s_stream.wait(), TIMEOUT)
                f_answer = await asyncio.wait_for(f_stream.wait(), TIMEOUT)
    finally:
        logging.getLogger("unbroken.server.connection").removeHandler(times)
    assert s_answer.text == want and f_answer.text == want
    assert kit.calls == {"slow": 1, "fast": 1} and written == {"slow": CHUNKS, "fast": CHUNKS}
    assert len(times.sheds) == 1 and gate.shed_total == 1
    shed_at, retry_after = times.sheds[0]
    # the shed reader read the error (code overloaded, connection-level) and the close
    # 4008; its link was never declared silent (no 4004)
    gone = [e for e in slow.history if e.kind == "disconnected"]
    assert len(gone) == 1, slow.history
    assert gone[0].code == CloseCode.OVERLOADED, gone[0]
    assert gone[0].retry_after == pytest.approx(retry_after, abs=1e-3)
    errors = server_errors(caplog)
    assert any("code=overloaded" in e and "slow reader detached" in e for e in errors), errors
    # its next attempt waited retry_after: no sooner than the shed plus retry_after
    again = [e for e in slow.history if e.kind == "reconnecting"]
    assert again and again[0].delay >= retry_after
    back = [e for e in slow.history if e.kind == "connected" and e.at > gone[0].at]
    assert back and back[0].at >= gone[0].at + retry_after
    assert back[0].at >= shed_at + retry_after
    resumed = [e for e in slow.history if e.kind == "resumed"]
    assert resumed and resumed[0].from_seq > 0
    assert not [e for e in fast.history if e.kind == "disconnected"]


@pytest.mark.timeout(40)
async def test_a_shed_reader_that_never_read_its_error_is_refused_until_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shed's error and close are lost (the link is reset while they wait behind
    the events on a slow link): the client reconnects at once and resumes, and the
    server refuses that resume the same way (``error overloaded`` with what is left
    of ``retry_after_ms``, close 4008): the reader comes back after it, not in a loop."""
    caplog.set_level(logging.INFO, logger="unbroken")
    times = ShedTimes()
    logging.getLogger("unbroken.server.connection").addHandler(times)
    kit, written = paced_kit(retry_after=2.0)  # 2-4 s: far longer than a reconnect
    want = "".join(chunk(i) for i in range(CHUNKS))
    try:
        async with (
            serve(kit.app) as srv,
            FaultProxy(f"127.0.0.1:{srv.port}") as proxy,
        ):
            slow_link = proxy.add_toxic(Bandwidth(rate=5_000), stream="downstream")
            gate = kit.app.hub.gate
            async with Client(srv.url.replace(f"127.0.0.1:{srv.port}", proxy.listen)) as slow:
                s_stream = await slow.start("paced", "slow")
                await until(lambda: any(r.behind() >= SLOW_READER for r in kit.app.connections))
                gate.max_rss = 1
                await until(lambda: gate.shed_total >= 1)
                gate.max_rss = NEVER
                # the error and the close are still 3 s behind the events, held by the
                # toxic: reset now (they are lost), then the link is fast again
                await proxy.cut_all("rst")
                proxy.remove_toxic(slow_link.name)
                s_answer = await asyncio.wait_for(s_stream.wait(), TIMEOUT)
    finally:
        logging.getLogger("unbroken.server.connection").removeHandler(times)
    assert s_answer.text == want
    assert kit.calls == {"slow": 1} and written == {"slow": CHUNKS}
    assert len(times.sheds) == 1
    shed_at, retry_after = times.sheds[0]
    gone = [e for e in slow.history if e.kind == "disconnected"]
    assert len(gone) == 2, slow.history
    # the reset: no error, no 4008, no retry_after; it came back at once ...
    assert gone[0].code != CloseCode.OVERLOADED and gone[0].retry_after is None, gone[0]
    # ... and its resume was refused: overloaded, with what was left of retry_after
    assert len(times.too_soon) == 1, times.too_soon
    assert gone[1].code == CloseCode.OVERLOADED, gone[1]
    assert gone[1].retry_after is not None and 0 < gone[1].retry_after <= retry_after
    errors = server_errors(caplog)
    assert any("code=overloaded" in e and "was shed" in e for e in errors), errors
    again = [e for e in slow.history if e.kind == "reconnecting" and e.at >= gone[1].at]
    assert again and again[0].delay >= gone[1].retry_after
    resumed = [e for e in slow.history if e.kind == "resumed"]
    assert len(resumed) == 1 and resumed[0].at >= shed_at + retry_after
    assert resumed[0].from_seq > 0


class FakeReader:
    """A reader as :meth:`Admission.shed_slowest` sees it."""

    def __init__(self, behind: float) -> None:
        self.lag = behind
        self.shed_with: tuple[float, str] | None = None

    def behind(self) -> float:
        return self.lag

    def shed(self, retry_after: float, reason: str) -> None:
        self.shed_with = (retry_after, reason)


def test_shedding_waits_for_sustained_pressure_and_takes_the_slowest_few() -> None:
    lim = AdmissionLimits(max_rss=100, shed_after=2.0, shed_fraction=0.1, retry_after=1.0)
    gate = Admission(lim, rss=lambda: 0, jitter=lambda: 0.5)
    readers = [FakeReader(0.0) for _ in range(17)] + [FakeReader(b) for b in (1.5, 4.0, 2.5)]
    gate.readers = readers
    assert gate.observe_pressure(0.0) == 0 and gate.pressure_since is None
    gate.rss = 200  # over max_rss
    assert gate.observe_pressure(10.0) == 0 and gate.pressure == "rss"
    assert gate.observe_pressure(11.9) == 0  # not yet sustained for shed_after
    # 20 connections, a tenth of them per round: the two furthest behind
    assert gate.observe_pressure(12.0) == 2
    shed = [r.lag for r in readers if r.shed_with is not None]
    assert sorted(shed) == [2.5, 4.0]
    assert readers[-2].shed_with == (1.5, "rss")  # retry_after 1.0 + jitter 0.5
    for r in readers[-2:]:
        r.lag = 0.0  # closed: a real reader is no longer behind
    assert gate.observe_pressure(12.5) == 0  # one round a second at most
    assert gate.observe_pressure(13.0) == 1  # only readers behind at all
    assert readers[-3].shed_with is not None and gate.shed_total == 3
    gate.rss = 50  # pressure over: the count starts again
    assert gate.observe_pressure(14.0) == 0 and gate.pressure_since is None
    gate.rss = 200
    assert gate.observe_pressure(14.1) == 0


def test_readers_that_keep_up_are_never_shed_and_off_by_default() -> None:
    gate = Admission(AdmissionLimits(max_rss=100, shed_after=0.0), rss=lambda: 0)
    gate.readers = [FakeReader(SLOW_READER - 0.01), FakeReader(0.0)]
    gate.rss = 200
    assert gate.observe_pressure(1.0) == 0
    off = Admission(AdmissionLimits(max_rss=100), rss=lambda: 0)
    assert off.limits.shed_after is None
    off.readers = [FakeReader(9.0)]
    off.rss = 200
    assert off.observe_pressure(1.0) == 0 and off.observe_pressure(100.0) == 0


@pytest.mark.parametrize(
    "kw", [{"shed_after": -1.0}, {"shed_fraction": 0.0}, {"shed_fraction": 1.5}]
)
def test_shedding_settings_are_checked(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AdmissionLimits(**kw)


async def test_serve_shed_after_flag_reaches_the_limits() -> None:
    """``--shed-after`` is an AdmissionLimits field: a bad value is refused at start."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("unbroken")),
        "serve",
        "examples.agent_app:app",
        "--port",
        "0",
        "--shed-after",
        "-1",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"shed_after must be 0 or more" in err
