"""One hostile client must not hurt the others (issue 13): request floods are read at
a bounded rate, unread answers are bounded in bytes, close reasons always fit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from unbroken.errors import AuthError
from unbroken.protocol.frames import Hello, Refresh, encode
from unbroken.server import ConnectInfo, Principal

from .conftest import token
from .wire import SUBPROTOCOL, Wire, end_of, text_of

Served = Any


async def open_flooder(url: str, port: int) -> ClientConnection:
    """A raw connection, said hello, whose receive buffer is tiny from the start:
    loopback lets the kernel hold up to 32 MB of unread answers (tcp_rmem), which
    would only delay what is under test."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await connect(url, sock=sock, subprotocols=[SUBPROTOCOL], max_queue=4, ping_interval=None)
    await ws.send(encode(Hello()).decode())
    return ws


async def flood(ws: ClientConnection, frame: bytes, stop: asyncio.Event) -> int:
    """Send ``frame`` as fast as the socket takes it, never reading, until ``stop``
    (or until the socket takes nothing more for a second)."""
    sent = 0
    with contextlib.suppress(Exception):
        while not stop.is_set():
            await asyncio.wait_for(ws.send(frame.decode()), 1.0)
            sent += 1
    return sent


async def logged(caplog: pytest.LogCaptureFixture, text: str, limit: float = 10) -> list[str]:
    """The log lines holding ``text``, once there is one (polled under a deadline: the
    close line is written after the connection is gone)."""
    async with asyncio.timeout(limit):
        while True:
            lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
            if lines:
                return lines
            await asyncio.sleep(0.02)


async def test_a_request_flood_is_paced_and_a_healthy_stream_keeps_flowing(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served(request_rate=200.0, request_burst=50)
    rss0 = psutil.Process(os.getpid()).memory_info().rss
    hostile = await open_flooder(srv.url, srv.port)
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(hostile, encode(Refresh("t")), stop))
    await logged(caplog_info, "request rate exceeded conn=")  # the flood is on
    healthy = await Wire.open(srv.url)
    sid = await healthy.start("h", "count", {"n": 2000, "yield_every": 10})
    events = await healthy.read_to_end(sid, limit=30)
    stop.set()
    sent = await flooding
    assert end_of(events).status == "completed"
    assert text_of(events) == "".join(token(i) for i in range(2000))
    grown = psutil.Process(os.getpid()).memory_info().rss - rss0
    assert grown < 64 << 20, f"RSS grew {grown >> 20} MB under a flood of {sent} frames"
    hostile.transport.abort()
    await healthy.close()
    await kit.wait_no_connections()


@pytest.mark.full  # waits out the send timeout, ~30 s
async def test_a_client_that_never_reads_its_answers_is_dropped_with_4008(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    # no pacing: only the outbox bound stands between the flood and the memory
    kit, srv = await served(request_rate=1e9, request_burst=10**9, max_outbox=64 * 1024)
    hostile = await open_flooder(srv.url, srv.port)
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(hostile, encode(Refresh("t")), stop))
    await kit.wait_no_connections(limit=30)  # the server gave up on it
    stop.set()
    await flooding
    closes = await logged(caplog_info, "close conn=")
    assert any("code=4008" in c for c in closes), closes
    assert any("outbox full conn=" in r.getMessage() for r in caplog_info.records)
    hostile.transport.abort()


async def test_a_non_ascii_close_reason_still_closes_with_its_code(served: Served) -> None:
    # a reason of 120 characters but 240 bytes used to make the close frame invalid:
    # the peer saw 1006 and the client retried an AuthError until exhausted
    async def refuse(hello: Hello, info: ConnectInfo) -> Principal:
        raise AuthError("é" * 200)

    _kit, srv = await served(authenticate=refuse)
    w = await Wire.open(srv.url, hello=False)
    await w.send(Hello(token="x"))
    assert await w.expect_close() == 4002  # CloseCode.AUTH_FAILED, not 1006
