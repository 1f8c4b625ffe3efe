"""Regressions found by the fuzzer (``test_fuzz.py``): each is the input that failed
before its fix, over a real socket, served as ``unbroken serve`` serves."""

from __future__ import annotations

import asyncio
import logging

import pytest

from unbroken.protocol.codes import CloseCode

from .conftest import make_kit
from .hardened import serve_hardened
from .wire import Wire


async def test_frames_queued_when_the_layer_closes_1007_are_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a text message with invalid UTF-8 made the WebSocket layer send its
    1007 close while the connection still had frames to send (a stream's events,
    a ``streams`` answer); the next send hit uvicorn's "Unexpected ASGI message
    'websocket.send', after sending 'websocket.close'": logged at ERROR with a
    traceback as a server fault. The peer is gone to the connection: nothing is logged
    above INFO but the 1007 line."""
    caplog.set_level(logging.INFO)
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        for _ in range(3):
            w = await Wire.open(srv.url)
            sid = await w.start("flood", "count", {"n": 200_000})
            await w.read_until_seq(sid, 10)
            # events keep coming: the close goes out among them
            await w.ws.send(b'{"t":"ping","x":"\xff\xfe"}', text=True)
            assert await w.expect_close() == CloseCode.INVALID_DATA
            await w.close()
        async with asyncio.timeout(10):
            await kit.wait_no_connections()
        await kit.app.hub.shutdown(0.1)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r.getMessage() for r in caplog.records if r.exc_info]
