"""The server's per-stream record of frames in flight stays bounded over a real
socket when the client does not ack (it is only unit-tested without sockets
elsewhere): ``max(64, 2 x window / record bytes)`` records, the oldest merged."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.protocol import server_session
from unbroken.protocol.client_session import StreamEvents
from unbroken.protocol.frames import Ack
from unbroken.server import Output, Request
from unbroken.server.connection import Connection

from .conftest import token
from .wire import Wire, assert_exact, text_of

pytestmark = pytest.mark.timeout(30)
N = 300


async def test_a_client_that_never_acks_holds_the_server_to_its_record_bound(
    served: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every frame a record of its own (the span is time: 0.2 s a record otherwise,
    # so a trickle would take a minute to pass the bound); the socket is real
    monkeypatch.setattr(server_session, "COALESCE_SPAN", 0.0)
    kit, srv = await served(window=64 * 1024)  # type: ignore[operator]
    step, finish = asyncio.Semaphore(0), asyncio.Event()

    @kit.app.agent("trickle")
    async def trickle(req: Request, out: Output) -> None:
        for i in range(N):  # one token a frame: the next once the client got it
            await out.text(token(i))
            await out.flush()
            await step.acquire()
        await finish.wait()

    w = await Wire.open(srv.url)
    try:
        w.cs.ack_every = 1 << 40  # never acks (until the end)
        stream = await w.start("r1", "trickle")
        (conn,) = kit.app.connections
        assert isinstance(conn, Connection)
        flow = conn.session.flows[stream]
        bound = flow.max_records()
        assert bound == server_session.MAX_RECORDS  # max(64, 2 x 64 KiB / 4 KiB)
        most = 0
        while w.seq(stream) < N + 1:  # part_start, then N tokens
            out = await w.next()
            if isinstance(out, StreamEvents):
                most = max(most, len(flow.inflight_last))
                assert len(flow.inflight_last) <= bound
                step.release()
        assert flow.acked <= 0  # nothing acked: all N frames still in flight
        assert most == bound  # the bound was reached and held (records merged)
        assert flow.inflight_bytes == flow.sent_bytes  # merging lost no byte
        await w.send(Ack(stream, w.seq(stream)))  # the client acks at last
        await w.ping()  # (the ack was read before the pong)
        assert len(flow.inflight_last) == 0 and flow.inflight_bytes == 0
        finish.set()
        events = await w.read_to_end(stream)
    finally:
        finish.set()
        await w.close()
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(N))
