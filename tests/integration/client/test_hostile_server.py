"""A hostile or broken server must not hang or crash the client (issue 13, items 8, 9, 12):
every wait has a bound, a bad part fails its stream only, an oversized frame is fatal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

from unbroken import BackoffPolicy, ProtocolError, RequestTimeout
from unbroken.client import Client
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start
from unbroken.protocol.frames import (
    Ping,
    Pong,
    Start,
    Started,
    Welcome,
    decode_client,
    encode,
    encode_events_frame,
    encode_items,
)

EPOCH = "ZXBvY2g"
STREAM = "hostile-stream-0001"
FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=3, deadline=5)

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def hostile(handler: Handler, max_size: int | None = None) -> AsyncIterator[str]:
    """A raw WebSocket server speaking just enough protocol v1 to misbehave."""

    async def run(ws: ServerConnection) -> None:
        decode_client(await ws.recv())  # hello
        await ws.send(encode(Welcome(session="h", heartbeat_ms=100, epoch=EPOCH)).decode())
        await handler(ws)

    async with serve(
        run, "127.0.0.1", 0, subprotocols=["unbroken.v1"], max_size=max_size, ping_interval=None
    ) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        yield f"ws://127.0.0.1:{port}/ws"


def events_frame(events: list[Event]) -> str:
    digest = chain(STREAM, EPOCH, events)[-1]
    return encode_events_frame(STREAM, 1, encode_items(events), digest).decode()


async def answer_start(ws: ServerConnection) -> None:
    """Answer pings until the client's ``start`` comes, then answer it."""
    while True:
        frame = decode_client(await ws.recv())
        if isinstance(frame, Ping):
            await ws.send(encode(Pong(frame.n)).decode())
        elif isinstance(frame, Start):
            await ws.send(encode(Started(frame.req, STREAM, EPOCH)).decode())
            return


async def pong_forever(ws: ServerConnection) -> None:
    """Stay alive (answer pings), ignore the rest."""
    async for message in ws:
        frame = decode_client(message)
        if isinstance(frame, Ping):
            await ws.send(encode(Pong(frame.n)).decode())


async def test_a_server_that_never_answers_start_raises_request_timeout() -> None:
    async def alive_but_stuck(ws: ServerConnection) -> None:
        await pong_forever(ws)  # answers pings, never a start

    async with hostile(alive_but_stuck) as url, Client(url, request_timeout=1.0) as client:
        with pytest.raises(RequestTimeout):
            await client.start("anything")


async def test_a_welcome_heartbeat_of_1e12_ms_does_not_switch_silence_detection_off() -> None:
    async def run(ws: ServerConnection) -> None:
        decode_client(await ws.recv())
        welcome = Welcome(session="h", heartbeat_ms=10**12, epoch=EPOCH)
        await ws.send(encode(welcome).decode())
        await answer_start(ws)
        await pong_forever(ws)

    async with serve(run, "127.0.0.1", 0, subprotocols=["unbroken.v1"]) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[index]
        async with Client(f"ws://127.0.0.1:{port}/ws", policy=FAST) as client:
            await client.start("x")
            # clamped: heartbeats of at most 10 s, so silence is found within ~30 s
            assert client.silence_limit <= 3 * 10.0 + 1.0


@pytest.mark.parametrize(
    "schema",
    ["{not json", '{"type": 12}', "[" * 100_000 + "]" * 100_000],
    ids=["schema-not-json", "invalid-schema", "100k-deep-schema"],
)
async def test_a_bad_json_part_fails_that_part_only(schema: str) -> None:
    events = [
        part_start(1, "bad", "json", schema=schema),
        chunk(2, Kind.JSON, "bad", "{}"),
        part_end(3, "bad"),
        part_start(4, "deep", "json"),
        chunk(5, Kind.JSON, "deep", "[" * 100_000 + "]" * 100_000),
        part_end(6, "deep"),
        part_start(7, "text", "text"),
        chunk(8, Kind.TEXT, "text", "still here"),
        part_end(9, "text"),
        end(10, "completed"),
    ]

    async def bad_parts(ws: ServerConnection) -> None:
        await answer_start(ws)
        await ws.send(events_frame(events))
        await pong_forever(ws)

    async with hostile(bad_parts) as url, Client(url, policy=FAST) as client:
        st = await client.start("x")
        answer = await asyncio.wait_for(st.wait(), 30)
        assert answer.text == "still here"
        assert answer.parts["bad"].error and answer.parts["deep"].error
        assert "invalid JSON" in answer.parts["deep"].error


async def test_an_oversized_frame_from_the_server_is_a_protocol_error_not_a_retry() -> None:
    attempts = 0

    async def too_big(ws: ServerConnection) -> None:
        nonlocal attempts
        attempts += 1
        await answer_start(ws)
        await ws.send("x" * 300_000)
        await pong_forever(ws)

    async with hostile(too_big) as url:
        client = Client(url, policy=FAST, max_frame=100_000)
        async with client:
            st = await client.start("x")
            with pytest.raises(ProtocolError, match="1009"):
                await asyncio.wait_for(st.wait(), 10)
    assert attempts == 1  # raised at once, never retried


async def test_a_start_over_the_servers_client_frame_limit_is_refused_before_sending() -> None:
    from unbroken.errors import RequestRefused
    from unbroken.server import Unbroken
    from unbroken.testing import serve as serve_app

    app = Unbroken(allow_anonymous=True, max_client_frame=64 * 1024)

    @app.agent("echo")
    async def echo(req, out):  # type: ignore[no-untyped-def]
        await out.text(str(len(req.input)))

    async with serve_app(app) as srv, Client(srv.url) as client:
        with pytest.raises(RequestRefused, match="too_big"):
            await client.start("echo", "x" * 100_000)
        st = await client.start("echo", "x" * 1000)  # the connection is unharmed
        assert (await st.wait()).text == "1000"


async def test_an_overloaded_refusal_before_welcome_is_retried_no_sooner_than_asked() -> None:
    """A full server answers ``hello`` with ``error overloaded`` and closes 4008
    (protocol §2): a drop to retry after ``retry_after_ms``, not a refused request."""
    from unbroken.protocol.frames import Error

    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def run(ws: ServerConnection) -> None:
        decode_client(await ws.recv())  # hello
        attempts.append(loop.time())
        if len(attempts) == 1:
            refusal = Error(code="overloaded", message="full", retry_after_ms=400)
            await ws.send(encode(refusal).decode())
            await ws.close(4008, "overloaded")
            return
        await ws.send(encode(Welcome(session="h", heartbeat_ms=100, epoch=EPOCH)).decode())
        await answer_start(ws)
        events = [chunk(1, Kind.TEXT, "text", "ok"), end(2, "completed")]
        await ws.send(events_frame(events))
        await pong_forever(ws)

    async with serve(run, "127.0.0.1", 0, subprotocols=["unbroken.v1"], ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]  # type: ignore[index]
        async with Client(f"ws://127.0.0.1:{port}/ws", policy=FAST) as client:
            stream = await client.start("a", {})
            answer = await asyncio.wait_for(stream.wait(), 10)
    assert answer.text == "ok"
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.4  # the server's floor, above FAST's 0.05 s cap
