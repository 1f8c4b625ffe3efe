"""Bad v2 input over a real socket: each kind gets its close code, is logged, and a
healthy v2 stream on another connection finishes exact meanwhile."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from unbroken.client import Client
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.frames import Ack, Cancel, Hello, Ping, Resume, Start
from unbroken.protocol.frames_v2 import encode_client
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import RunningServer, serve

TIMEOUT = 10.0
HELLO = encode_client(Hello())
DEEP = "[" * 5000 + "]" * 5000
DUP = '{"a": 1, "a": 2}'

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
    ("extra elements", [HELLO, msgspec.msgpack.encode([22, 1, 2])], CloseCode.BAD_FRAME),
    ("a map, not an array", [HELLO, msgspec.msgpack.encode({"t": 22})], CloseCode.BAD_FRAME),
    ("an empty message", [HELLO, b""], CloseCode.BAD_FRAME),
    ("a zlib frame from the client", [HELLO, msgspec.msgpack.encode([13, b"x"])], 4000),
    ("invalid UTF-8 in a str", [HELLO, b"\x93\x11\xa2\xff\xfe\xa3say"], 4000),
    ("start input nested too deep", [HELLO, msgspec.msgpack.encode([17, "r", "say", DEEP])], 4000),
    ("start input repeats a key", [HELLO, msgspec.msgpack.encode([17, "r", "say", DUP])], 4000),
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


async def test_v2_frames_naming_unknown_or_foreign_streams_are_answered_and_harm_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over v2 binary frames, a connection naming a stream that is not its own (unknown,
    another client's, attached elsewhere) or acking past what was sent gets an error or
    ``gone`` for that stream, logged; its connection stays open, and the other client's
    stream goes on and ends exact. A start repeated on the connection its stream is
    attached to is ignored (logged)."""
    caplog.set_level(logging.INFO, "unbroken")
    app = Unbroken(allow_anonymous=True, protocols=("v2",))
    go = asyncio.Event()

    @app.agent("hold")
    async def hold(req: Request, out: Output) -> None:
        await out.text("before ")
        await out.flush()
        await go.wait()
        await out.text("after")

    def logged(*parts: str) -> bool:
        return any(all(p in r.getMessage() for p in parts) for r in caplog.records)

    async with asyncio.timeout(TIMEOUT), serve(app) as srv, Client(srv.url) as victim:
        theirs = await victim.start("hold")
        async with connect(srv.url, subprotocols=["unbroken.v2"], max_size=None) as ws:  # type: ignore[list-item]
            await ws.send(HELLO)
            welcome = msgspec.msgpack.decode(await ws.recv())
            epoch = welcome[3]

            async def answer(frame: Any) -> list[Any]:
                """Send ``frame``; the next answer that is not an hb or events frame."""
                await ws.send(encode_client(frame))
                while True:
                    got = msgspec.msgpack.decode(await ws.recv())
                    if got[0] not in (1, 8):  # events, hb
                        return got

            ghost = secrets.token_urlsafe(16)
            assert await answer(Ack(ghost, 1)) == [7, "bad_ack", ANY_TEXT, ghost]
            assert await answer(Ack(theirs.id, 1)) == [7, "bad_ack", ANY_TEXT, theirs.id]
            assert await answer(Cancel(theirs.id)) == [7, "forbidden", ANY_TEXT, theirs.id]
            assert await answer(Resume(ghost, 0, epoch)) == [5, ghost, "unknown", ANY_TEXT]
            mine = await answer(Start("mine", "hold", None))
            assert mine[:2] == [3, "mine"]
            assert await answer(Ack(mine[2], 500)) == [7, "bad_ack", ANY_TEXT, mine[2]]
            await ws.send(encode_client(Start("mine", "hold", None)))  # again: ignored
            assert await answer(Ping(7)) == [9, 7]  # still open, nothing else answered
            go.set()
            answered = await theirs.wait()
    assert answered.text == "before after" and answered.complete
    assert logged("error conn=", "code=bad_ack", ghost)
    assert logged("cancel refused", theirs.id)
    assert logged("resume refused", ghost, "reason=unknown")
    assert logged("start ignored", "req=mine")


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT: Any = _AnyText()
