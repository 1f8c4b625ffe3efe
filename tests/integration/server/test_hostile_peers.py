"""Hostile peers against a server run as ``unbroken serve`` runs it (issue 13, items
2, 4, 7, 12): silent and slowloris connections, connection floods, oversized and
unfinished frames, invalid UTF-8, forged log lines. Real uvicorn, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from unbroken.protocol.codes import CloseCode, ErrorCode
from unbroken.server.guard import ConnectionLimits

from .conftest import make_kit
from .hardened import Hardened, closed_after, raw, serve_hardened, upgrade_request
from .wire import SUBPROTOCOL, Closed, Wire, assert_exact, text_of

TIMEOUT = 10.0


async def wait_for(cond: Callable[[], bool], limit: float = TIMEOUT) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110 - polled under a timeout
            await asyncio.sleep(0.01)


async def stream_one(srv: Hardened, req: str = "healthy", n: int = 300) -> None:
    """A legitimate client: connects, streams a run to its end, exact."""
    w = await Wire.open(srv.url)
    sid = await w.start(req, "count", {"n": n})
    events = await w.read_to_end(sid)
    assert_exact(events)
    assert len(events) == n + 3
    await w.close()


# ------------------------------------------------------------------ item 2: descriptors
async def test_silent_and_slowloris_connections_are_closed_at_the_handshake_deadline() -> None:
    """100 connections that never finish a request head (50 silent, 50 trickling
    header lines) are all closed once ``handshake_timeout`` has passed, not
    before; meanwhile a legitimate client connects and streams."""
    deadline = 1.0
    kit = make_kit(connection_limits=ConnectionLimits(handshake_timeout=deadline))
    async with serve_hardened(kit.app) as srv:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        silent = [await raw(srv.port) for _ in range(50)]
        loris = [await raw(srv.port, b"GET /ws HTTP/1.1\r\n") for _ in range(50)]

        async def trickle(w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                for i in range(100):
                    w.write(f"X-Slow-{i}: 1\r\n".encode())
                    await w.drain()
                    await asyncio.sleep(0.1)

        tricklers = [loop.create_task(trickle(w)) for _, w in loris]
        await wait_for(lambda: srv.guard.open >= 100)
        await stream_one(srv)  # served while the 100 are held
        closed_at = await asyncio.gather(
            *(closed_after(r, deadline + 5) for r, _ in silent + loris)
        )
        elapsed = loop.time() - opened
        assert all(data == b"" for data in closed_at)  # closed, not answered
        assert elapsed >= deadline * 0.9
        assert srv.guard.counts["handshake_timeouts"] == 100
        await wait_for(lambda: srv.guard.open == 0)
        for t in tricklers:
            t.cancel()
        for _, w in silent + loris:
            w.close()
        # and the server still serves
        await stream_one(srv, "after")


async def test_the_deadline_times_each_request_head_on_a_keep_alive_connection() -> None:
    """A slowloris after one legitimate request (uvicorn's keep-alive timer stops at
    the first byte of the next request) is timed too."""
    kit = make_kit(connection_limits=ConnectionLimits(handshake_timeout=1.0), health_detail=True)
    async with serve_hardened(kit.app) as srv:
        r, w = await raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        w.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        await w.drain()
        rest = await closed_after(r, 5.0)
        assert b"HTTP/1.1" not in rest  # no second answer: the head never ended
        assert srv.guard.counts["handshake_timeouts"] == 1
        w.close()


async def test_over_the_connection_cap_a_client_gets_503_with_retry_after() -> None:
    kit = make_kit(connection_limits=ConnectionLimits(max_connections=10, retry_after=2))
    async with serve_hardened(kit.app) as srv:
        held = [await Wire.open(srv.url) for _ in range(10)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(srv.url, subprotocols=[SUBPROTOCOL], open_timeout=TIMEOUT)
        response = refused.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        # a raw connection over the cap that sends nothing: answered within a second
        r, w = await raw(srv.port)
        assert (await closed_after(r, 3.0)).startswith(b"HTTP/1.1 503 Service Unavailable")
        w.close()
        assert srv.guard.counts["refused_full"] == 2
        # a place frees: the next client is served
        await held.pop().close()
        await wait_for(lambda: srv.guard.open < 10)
        await stream_one(srv)
        for h in held:
            await h.close()


async def test_the_per_ip_cap_refuses_the_extra_connection_with_429() -> None:
    kit = make_kit(connection_limits=ConnectionLimits(max_per_ip=3))
    async with serve_hardened(kit.app) as srv:
        held = [await Wire.open(srv.url) for _ in range(3)]
        r, w = await raw(srv.port, upgrade_request())
        answer = await closed_after(r)
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests")
        assert b"\r\nRetry-After: 1\r\n" in answer
        w.close()
        # another address (127.0.0.2 is loopback too) has its own count
        r2, w2 = await raw(srv.port, upgrade_request(), local="127.0.0.2")
        async with asyncio.timeout(TIMEOUT):
            assert (await r2.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        w2.close()
        assert srv.guard.counts["refused_ip"] == 1
        for h in held:
            await h.close()


async def test_a_flood_of_refusals_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kit = make_kit(connection_limits=ConnectionLimits(max_connections=1))
    async with serve_hardened(kit.app) as srv:
        holder = await Wire.open(srv.url)
        flood = [await raw(srv.port, upgrade_request()) for _ in range(200)]
        answers = await asyncio.gather(*(closed_after(r) for r, _ in flood))
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers)
        for _, w in flood:
            w.close()
        await holder.close()
    refused = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert srv.guard.counts["refused_full"] == 200
    assert 1 <= len(refused) <= 10  # the guard's burst per 10 s
    assert srv.guard._flood.suppressed_total == 200 - len(refused)


# ------------------------------------------------------------------ item 4: frame sizes
async def test_before_hello_a_frame_over_64_kib_closes_1009() -> None:
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url, hello=False)
        await w.send_raw('{"t":"hello","pad":"' + "x" * (64 * 1024) + '"}')
        assert await w.expect_close() == CloseCode.TOO_BIG
        # a hello with a large token (a 16 KB JWT) still fits
        w = await Wire.open(srv.url, token="j" * 16_000)
        await w.ping()
        await w.close()


async def test_after_hello_client_frames_are_held_to_max_client_frame() -> None:
    kit = make_kit(max_client_frame=256 * 1024)
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url)
        big = "y" * (200 * 1024)  # fits: over the hello limit, under the client limit
        sid = await w.start("fits", "echo", big)
        assert text_of(await w.read_to_end(sid)) == big
        assert w.cs.welcome is not None
        assert w.cs.welcome.limits.max_client_frame == 256 * 1024
        await w.send_raw('{"t":"ping","pad":"' + "x" * (256 * 1024) + '"}')
        assert await w.expect_close() == CloseCode.TOO_BIG


async def test_an_unfinished_fragmented_message_is_cut_at_the_limit() -> None:
    """Fragments of a message whose last fragment never comes: the server holds at
    most ``max_client_frame`` and closes 1009 (it used to hold 15 MiB each)."""
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        ws = await connect(srv.url, subprotocols=[SUBPROTOCOL], max_size=None, compression=None)
        await ws.send('{"t":"hello"}')
        await ws.recv()
        never = asyncio.Event()

        async def fragments() -> object:
            for _ in range(15 * 16):  # 15 MiB in 64 KiB fragments, then wait forever
                yield "z" * 65536
            await never.wait()

        sender = asyncio.get_running_loop().create_task(ws.send(fragments()))
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionClosed):
                await sender
        assert ws.close_code == CloseCode.TOO_BIG


# ------------------------------------------------------------------ item 12: UTF-8, health
async def test_invalid_utf8_closes_1007_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="unbroken")  # whatever an earlier test set
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        for _ in range(3):
            w = await Wire.open(srv.url)
            await w.ws.send(b'{"t":"ping","x":"\xc3\x28"}', text=True)
            assert await w.expect_close() == CloseCode.INVALID_DATA
        await stream_one(srv)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    lines = [r for r in caplog.records if "invalid UTF-8 in a text" in r.getMessage()]
    assert len(lines) == 3
    assert all(r.levelno == logging.WARNING for r in lines)
    # the close line is written once the connection is gone: polled under a deadline
    async with asyncio.timeout(10):
        while (  # noqa: ASYNC110 - polled under a timeout
            sum("code=1007 reason=invalid UTF-8" in r.getMessage() for r in caplog.records) < 3
        ):
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("detail", [False, True])
async def test_healthz_shows_counts_only_when_asked(detail: bool) -> None:
    kit = make_kit(health_detail=detail)
    async with serve_hardened(kit.app) as srv, httpx.AsyncClient(base_url=srv.http) as http:
        body = (await http.get("/healthz")).json()
    if detail:
        assert body["epoch"] == kit.app.store.epoch
        assert {"ok", "runs", "connections", "sockets"} <= set(body)
    else:
        assert body == {"ok": True}


async def expect_unknown_agent(srv: Hardened) -> str:
    w = await Wire.open(srv.url)
    await w.send(w.cs.start("r", "no-such-agent", None))
    await w.until(lambda _o: bool(w.errors))
    assert w.errors[0].code == ErrorCode.UNKNOWN_AGENT
    await w.close()
    return w.errors[0].message


async def test_unknown_agent_does_not_list_the_agents_by_default() -> None:
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        message = await expect_unknown_agent(srv)
    assert "no-such-agent" in message
    assert "count" not in message and "echo" not in message
    assert "check the name given to @app.agent" in message  # what to do about it


async def test_unknown_agent_lists_the_agents_when_exposed() -> None:
    kit = make_kit(expose_agent_names=True)
    async with serve_hardened(kit.app) as srv:
        message = await expect_unknown_agent(srv)
    assert "count" in message and "echo" in message


# ------------------------------------------------------------------ item 7: log injection
FORGERIES = [
    '{"t":"q\\nINFO: hello conn=FORGED principal=root"}',
    '{"t":"hello\\r\\nINFO: close conn=FORGED"}',
    '{"t":"\\u001b[2K\\rINFO: fake"}',
]


@pytest.mark.parametrize("frame", FORGERIES)
async def test_a_frame_cannot_forge_a_log_line(
    caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    caplog.set_level(logging.DEBUG)
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url, hello=False)
        await w.send_raw(frame)
        with pytest.raises(Closed) as closed:
            while True:
                await w.next()
        assert closed.value.code in (CloseCode.BAD_FRAME, CloseCode.AUTH_REQUIRED)
        assert closed.value.reason.isprintable()
        await kit.wait_no_connections()
    messages = [r.getMessage() for r in caplog.records]
    assert any("FORGED" in m or "fake" in m for m in messages)  # logged, escaped
    assert all(m.isprintable() for m in messages if "FORGED" in m or "fake" in m)
    assert not any(m.startswith("INFO:") for m in messages)


async def test_the_client_frame_limit_holds_through_a_fastapi_router() -> None:
    """Mounted as a FastAPI router, the unbroken path moves the WebSocket layer's
    limit too (Starlette passes the scope extension through)."""
    from fastapi import FastAPI

    kit = make_kit(max_client_frame=256 * 1024)
    api = FastAPI(lifespan=kit.app.lifespan)
    api.include_router(kit.app.router(), prefix="/r")
    async with serve_hardened(api, path="/r/ws") as srv:
        w = await Wire.open(srv.url)
        big = "y" * (200 * 1024)
        sid = await w.start("fits", "echo", big)
        assert text_of(await w.read_to_end(sid)) == big
        await w.send_raw('{"t":"ping","pad":"' + "x" * (256 * 1024) + '"}')
        assert await w.expect_close() == CloseCode.TOO_BIG
