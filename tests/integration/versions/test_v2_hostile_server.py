"""Bad v2 input from a server: the client refuses it with a clear error and never
hangs (an unknown stream handle, malformed MessagePack, an unknown tag, a zip bomb)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from unbroken import BackoffPolicy, ProtocolError
from unbroken.client import Client
from unbroken.protocol.frames import Ping, Pong, Start, Started, Welcome
from unbroken.protocol.frames_v2 import CAP_ZLIB, ServerCodec, decode_client, encode_events

EPOCH = "ZXBvY2g"
STREAM = "hostile-stream-0001"
FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=3, deadline=5)
Handler = Callable[[ServerConnection, ServerCodec], Awaitable[None]]


@asynccontextmanager
async def hostile_v2(handler: Handler, closes: list[int | None]) -> AsyncIterator[str]:
    """A raw WebSocket server speaking just enough protocol v2 to misbehave; the
    close code each connection got goes to ``closes``."""

    async def run(ws: ServerConnection) -> None:
        codec = ServerCodec()
        decode_client(bytes(await ws.recv()), 1 << 20)  # hello
        welcome = Welcome(session="h", heartbeat_ms=100, epoch=EPOCH, caps=[CAP_ZLIB])
        await ws.send(codec.encode(welcome))
        while True:  # until the start, answering pings
            frame = decode_client(bytes(await ws.recv()), 1 << 20)
            if isinstance(frame, Ping):
                await ws.send(codec.encode(Pong(frame.n)))
            elif isinstance(frame, Start):
                await ws.send(codec.encode(Started(frame.req, STREAM, EPOCH)))  # handle 0
                break
        await handler(ws, codec)
        await ws.wait_closed()  # the client closes (4000)
        closes.append(ws.close_code)

    async with serve(run, "127.0.0.1", 0, subprotocols=["unbroken.v2"], ping_interval=None) as s:
        port = s.sockets[0].getsockname()[1]  # type: ignore[index]
        yield f"ws://127.0.0.1:{port}/ws"


async def unknown_handle(ws: ServerConnection, codec: ServerCodec) -> None:
    await ws.send(encode_events(7, 1, [[1, "text", "hi"]], b"\0" * 8, final=False))


async def malformed(ws: ServerConnection, codec: ServerCodec) -> None:
    await ws.send(b"\x95\x01\x00")


async def unknown_tag(ws: ServerConnection, codec: ServerCodec) -> None:
    await ws.send(msgspec.msgpack.encode([99, 1]))


async def zip_bomb(ws: ServerConnection, codec: ServerCodec) -> None:
    await ws.send(msgspec.msgpack.encode([13, zlib.compress(b"\0" * (32 << 20), 9)]))


async def a_text_frame(ws: ServerConnection, codec: ServerCodec) -> None:
    await ws.send('{"t":"hb"}')


@pytest.mark.parametrize(
    ("handler", "text"),
    [
        (unknown_handle, "unknown stream handle 7"),
        (malformed, "malformed frame"),
        (unknown_tag, "invalid frame"),
        (zip_bomb, "inflates past the limit"),
        (a_text_frame, "text frames are not part of protocol v2"),
    ],
    ids=["unknown-handle", "malformed", "unknown-tag", "zip-bomb", "text-frame"],
)
async def test_bad_v2_input_from_a_server_ends_the_stream_with_a_protocol_error(
    handler: Handler, text: str
) -> None:
    closes: list[int | None] = []
    async with hostile_v2(handler, closes) as url:
        async with asyncio.timeout(10):
            async with Client(url, policy=FAST, max_frame=1 << 20) as client:
                st = await client.start("x")
                with pytest.raises(ProtocolError, match=text):
                    await st.wait()
                assert client.version == "v2"
    assert closes and closes[0] in (1009, 4000)
