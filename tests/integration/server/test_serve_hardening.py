"""The attacks of issue 13 (items 2 and 4) against ``unbroken serve`` as a real
process: descriptors and log volume under a flood of unfinished connections, memory
under unfinished and huge client frames. Figures are asserted as bounds; the
measured values are printed (``pytest -s``) and quoted in docs/reference/security.md."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from unbroken.protocol.codes import CloseCode

from .hardened import ServeProcess, raw
from .wire import SUBPROTOCOL, Wire, assert_exact

TIMEOUT = 10.0
MiB = 1024 * 1024


async def rss_watch(pid: int, stop: asyncio.Event) -> int:
    """Peak RSS of ``pid`` until ``stop`` is set (sampled every 20 ms)."""
    p = psutil.Process(pid)
    peak = p.memory_info().rss
    while not stop.is_set():
        peak = max(peak, p.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return peak


async def streams_a_run(url: str, limit: float = 20.0) -> float:
    """A legitimate client: retries while refused (503: after its Retry-After; a
    connection closed unanswered, when even refusals are full: after 0.2 s), then
    streams a run to its end; returns how long it waited to get in."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(limit):
        while True:
            try:
                w = await Wire.open(url)
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                await asyncio.sleep(float(exc.response.headers["Retry-After"]))
            except (InvalidMessage, OSError):
                await asyncio.sleep(0.2)
    waited = loop.time() - t0
    sid = await w.start("legit", "report", {"topic": "x", "words": 50, "tokens_per_s": 0})
    assert_exact(await w.read_to_end(sid, limit=20))
    await w.close()
    return waited


@contextlib.asynccontextmanager
async def serve(*args: str, nofile: int | None = None) -> AsyncIterator[ServeProcess]:
    p = await ServeProcess.start(*args, nofile=nofile)
    try:
        yield p
    finally:
        await p.stop()


async def test_a_flood_of_unfinished_connections_cannot_exhaust_descriptors() -> None:
    """400 slowloris connections against a process limited to 256 descriptors:
    before the guard, accept() failed with EMFILE (a traceback per try, ~250,000
    in 20 s), every connection stayed open and a legitimate client timed out."""
    async with serve("--handshake-timeout", "2", nofile=256) as srv:
        proc = psutil.Process(srv.proc.pid)
        conns = []
        for _ in range(400):
            with contextlib.suppress(OSError):
                conns.append(await raw(srv.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n"))
        peak_fds = proc.num_fds()
        waited = await streams_a_run(srv.url)
        # every unfinished connection is closed by the deadline (or refused)
        async with asyncio.timeout(TIMEOUT):
            while proc.num_fds() > 20:
                peak_fds = max(peak_fds, proc.num_fds())
                await asyncio.sleep(0.05)
        for _, w in conns:
            w.close()
        print(f"\nfds peak={peak_fds} legit waited {waited:.2f}s; log lines={len(srv.lines)}")
        assert peak_fds < 256
        assert srv.count("out of system resource") == 0
        assert srv.count("handshake timeout") >= 1
        assert len(srv.lines) < 200


@pytest.mark.full  # ~25 s at the descriptor limit
async def test_at_the_descriptor_limit_accept_errors_log_a_bounded_number_of_lines() -> None:
    """A cap set above the descriptor limit (warned at start) lets accept() fail;
    asyncio's traceback per failed accept goes through the flood filter."""
    # asyncio's loop: under uvloop libuv drops such a connection without a log line;
    # a 10 s handshake deadline: on a loaded machine opening 300 connections took longer
    # than 3 s, the first ones were closed meanwhile and the limit was never reached
    async with serve(
        "--max-connections", "1000", "--handshake-timeout", "10", "--loop", "asyncio", nofile=128
    ) as srv:
        await srv.wait_line("above what the descriptor limit")
        conns = []
        for _ in range(300):
            with contextlib.suppress(OSError):
                conns.append(await raw(srv.port, b"GET /ws HTTP/1.1\r\n"))
        await srv.wait_line("out of system resource")
        # observe the log for a few of asyncio's accept retries (one a second)
        await asyncio.sleep(2.5)
        for _, w in conns:
            w.close()
        errors = srv.count("out of system resource")
        summaries = srv.count("suppressed")
        print(f"\naccept errors logged={errors} (summaries {summaries}); lines={len(srv.lines)}")
        # the filter's burst (20) per 10 s window, the rest counted on one summary line
        # per window: however long the machine took (a loaded one spans more windows)
        assert 1 <= errors - summaries <= 20 * (summaries + 1)
        assert errors > 20 or summaries == 0
        assert len(srv.lines) < 400


async def _fragments_forever(ws: ClientConnection, size: int, never: asyncio.Event) -> None:
    async def gen() -> AsyncIterator[str]:
        for _ in range(size // 65536):
            yield "z" * 65536
        # never the last fragment: wait until the server gives up on us (all 15 MiB may
        # fit in loopback's buffers before the server has read its 1 MiB; waiting on an
        # event nobody sets then hung the test for good)
        await ws.wait_closed()

    with contextlib.suppress(ConnectionClosed):
        await ws.send(gen())


# the example app with a hello deadline past the test's own limit: a client that opens
# its connections first and sends later (masking megabytes in one loop on a loaded
# machine) once got 4001 (no hello in 10 s) instead of the 1009 under test
LONG_HELLO_APP = """
from examples.agent_app import create_app

app = create_app(hello_timeout=120.0)
"""


@pytest.mark.timeout(150)  # a hang guard: 33 s at load 24 (pytest's default is 60 s)
async def test_unfinished_and_huge_client_frames_do_not_hold_memory(tmp_path: Path) -> None:
    """20 connections each sending 8 MiB of a message that never ends (after
    hello), and 20 sending a 4 MiB ``start`` of ``[[],[],…]`` before hello: without
    the 1 MiB limit the server holds 160 MiB (the first) or decodes over a million
    lists per frame (the second), well past the bound; with it, 20 x 1 MiB at most
    (50 x 15 MiB before the limits: 857 MiB held, 1,137 MiB peak)."""
    n = 20
    (tmp_path / "long_hello_app.py").write_text(LONG_HELLO_APP)
    srv = await ServeProcess.start(target="long_hello_app:app", path=tmp_path)
    try:
        pid = srv.proc.pid
        base = psutil.Process(pid).memory_info().rss
        stop = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(rss_watch(pid, stop))
        never = asyncio.Event()

        async def unfinished() -> int | None:
            ws = await connect(srv.url, subprotocols=[SUBPROTOCOL], max_size=None)
            await ws.send('{"t":"hello"}')
            await ws.recv()
            await _fragments_forever(ws, 8 * MiB, never)
            return ws.close_code

        body = "[" + ",".join(["[]"] * (4 * MiB // 3)) + "]"
        start = '{"t":"start","req":"r","agent":"report","input":' + body + "}"

        async def huge_start() -> int | None:
            ws = await connect(srv.url, subprotocols=[SUBPROTOCOL], max_size=None)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(start)
                await ws.recv()
            return ws.close_code

        # a hang guard (under the test's timeout), not a timing bound
        async with asyncio.timeout(100):
            codes = await asyncio.gather(*(unfinished() for _ in range(n)))
            codes += await asyncio.gather(*(huge_start() for _ in range(n)))
        stop.set()
        peak = await watcher
        growth = (peak - base) / MiB
        print(f"\nRSS base={base / MiB:.1f} MiB peak growth={growth:.1f} MiB")
        assert codes == [CloseCode.TOO_BIG] * (2 * n)
        assert growth < 100  # 20 x 1 MiB at most in flight, plus buffers
        await streams_a_run(srv.url)
    finally:
        await srv.stop()
