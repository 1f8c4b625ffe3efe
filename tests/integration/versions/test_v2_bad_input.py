"""Bad v2 input over a real socket: each kind gets its close code, is logged, and a
healthy v2 stream on another connection finishes exact meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from unbroken.client import Client
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.frames import Hello, Ping, Start
from unbroken.protocol.frames_v2 import encode_client
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import RunningServer, serve

TIMEOUT = 10.0
HELLO = encode_client(Hello())

#: (name, frames sent after the upgrade, close code)
ROWS: list[tuple[str, list[bytes | str], int]] = [
    ("not MessagePack", [b"\xc1\x00"], CloseCode.BAD_FRAME),
    ("a text frame", ['{"t":"hello"}'], CloseCode.BAD_FRAME),
    ("unknown tag first", [msgspec.msgpack.encode([99])], CloseCode.AUTH_REQUIRED),
    ("unknown tag after hello", [HELLO, msgspec.msgpack.encode([99, 1])], CloseCode.BAD_FRAME),
    ("a server tag", [HELLO, msgspec.msgpack.encode([1, 0, 1, ["x"], b"\0" * 8])], 4000),
    ("wrong field type", [HELLO, msgspec.msgpack.encode([19, "s", "nine"])], 4000),
    ("trailing bytes", [HELLO, encode_client(Ping(1)) + b"\x00"], CloseCode.BAD_FRAME),
    ("start input not JSON", [HELLO, msgspec.msgpack.encode([17, "r", "say", "{"])], 4000),
    ("hello over the hello limit", [encode_client(Hello(token="x" * 70_000))], 1009),
    ("frame over the limit", [HELLO, encode_client(Start("r", "say", "x" * 2_000_000))], 1009),
]


def make_app() -> Unbroken:
    app = Unbroken(allow_anonymous=True, protocols=("v2",))

    @app.agent("say")
    async def say(req: Request, out: Output) -> None:
        for i in range(200):
            await out.text(f"w{i} ")
            if i % 20 == 0:
                await asyncio.sleep(0.01)

    return app


@pytest.fixture
async def srv() -> AsyncIterator[RunningServer]:
    async with serve(make_app()) as running:
        yield running


@pytest.mark.parametrize(("name", "frames", "code"), ROWS, ids=[r[0] for r in ROWS])
async def test_bad_v2_input_closes_with_its_code_and_harms_no_one(
    srv: RunningServer,
    name: str,
    frames: list[bytes | str],
    code: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "unbroken")
    async with asyncio.timeout(TIMEOUT):
        async with Client(srv.url) as healthy:
            running = await healthy.start("say")
            async with connect(srv.url, subprotocols=["unbroken.v2"], max_size=None) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "unbroken.v2"
                with pytest.raises(ConnectionClosed):
                    for f in frames:
                        await ws.send(f)
                    while True:
                        await ws.recv()
                assert ws.close_code == code, (name, ws.close_code, ws.close_reason)
            answer = await running.wait()
            assert answer.text == "".join(f"w{i} " for i in range(200))
            assert healthy.version == "v2"
    assert any(
        f"code={code}" in r.getMessage() for r in caplog.records if "close" in r.getMessage()
    )
