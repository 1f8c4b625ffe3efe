"""uvicorn's WebSocket keepalive pings under unbroken's layer: one shared timer per
loop checks every connection's due ping and awaited pong (no timer of its own per
connection, ~0.5 KB each: issue 21). A peer that answers stays; one that does not
is given up on with 1011, as uvicorn does."""

from __future__ import annotations

import pytest

from unbroken.server import websocket
from unbroken.server.ticker import ticker
from unbroken.server.websocket import UnbrokenWebSocketProtocol

from ...waiting import until
from .conftest import make_kit
from .hardened import serve_hardened
from .wire import Wire

TICK = 0.05


async def test_pings_go_from_the_shared_ticker_and_answered_ones_keep_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "KEEPALIVE_TICK", TICK)
    kit = make_kit()
    async with serve_hardened(kit.app, ws_ping_interval=0.2, ws_ping_timeout=5.0) as srv:
        w = await Wire.open(srv.url)
        (proto,) = srv.server.server_state.connections
        assert isinstance(proto, UnbrokenWebSocketProtocol)
        await until(lambda: proto.last_ping_rtt > 0)  # a ping went, its pong came back
        first = proto.last_ping_rtt
        await until(lambda: proto.last_ping_rtt != first)  # and the next one
        assert proto.ping_timer is None and proto.pong_timer is None  # no timer of its own
        assert proto in ticker(TICK)
        await w.ping()  # still served
        w.abort()
        await until(lambda: proto not in ticker(TICK))  # left with its connection


async def test_a_peer_that_does_not_answer_is_closed_1011(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "KEEPALIVE_TICK", TICK)
    kit = make_kit()
    async with serve_hardened(kit.app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as srv:
        w = await Wire.open(srv.url)
        (proto,) = srv.server.server_state.connections
        w.ws.transport.pause_reading()  # no pong goes back
        await until(lambda: proto.close_sent)
        w.ws.transport.resume_reading()
        assert await w.expect_close() == 1011
        await until(lambda: proto not in ticker(TICK))
