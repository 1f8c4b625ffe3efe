"""Honest failures, fast: misuse of the client is an error at once, never a hang."""

from __future__ import annotations

import asyncio

import pytest

from unbroken import ConfigError, Cursor, UnbrokenError
from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import serve

from .conftest import abort_server_side


async def test_start_outside_async_with_raises_at_once() -> None:
    client = Client("ws://127.0.0.1:9/ws")  # never connected: no server is needed
    with pytest.raises(ConfigError, match="async with Client"):
        await asyncio.wait_for(client.start("echo", {}), 5)


async def test_resume_outside_async_with_raises_at_once() -> None:
    client = Client("ws://127.0.0.1:9/ws")
    cursor = Cursor("s" * 22, 0, "00" * 16, "e")
    with pytest.raises(ConfigError, match="async with Client"):
        await asyncio.wait_for(client.resume(cursor), 5)


def test_no_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one URL"):
        Client([])
    assert issubclass(ConfigError, UnbrokenError)


def test_a_url_that_is_not_websocket_is_a_config_error_not_a_websockets_exception() -> None:
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        Client("http://127.0.0.1:9/ws")


async def test_bad_arguments_to_a_connected_client_are_config_errors_and_harm_nothing() -> None:
    app = Unbroken(allow_anonymous=True)

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        await out.text(str(req.input))

    async with serve(app) as srv, Client(srv.url) as client:
        with pytest.raises(ConfigError, match="cannot be sent as JSON"):
            await client.start("echo", {"when": object()})
        with pytest.raises(ConfigError, match="agent name"):
            await client.start("my agent")  # a space: the server would close 4000
        with pytest.raises(ConfigError, match="request id"):
            await client.start("echo", req="")
        with pytest.raises(ConfigError, match="bad digest"):
            await client.resume(Cursor("s" * 22, 3, "not hex", "e"))
        with pytest.raises(ConfigError, match="not a cursor"):
            await client.resume("a cookie that is not a cursor")
        # the connection and the client are fine afterwards
        st = await client.start("echo", "still here")
        assert (await asyncio.wait_for(st.wait(), 10)).text == "still here"


async def test_a_should_retry_hook_that_raises_leaves_the_decision_to_the_retry_table() -> None:
    app = Unbroken(allow_anonymous=True)
    gate = asyncio.Event()

    @app.agent("halves")
    async def halves(_req: Request, out: Output) -> None:
        await out.text("a ")
        await gate.wait()
        await out.text("b")

    calls: list[BaseException] = []

    def broken(exc: BaseException) -> bool:
        calls.append(exc)
        raise RuntimeError("bug in the hook")

    async with serve(app) as srv, Client(srv.url, should_retry=broken) as client:
        events = client.connection_events()
        st = await client.start("halves")
        async for _ in st:
            break
        assert abort_server_side(srv) == 1
        while (await asyncio.wait_for(anext(events), 10)).kind != "resumed":
            pass  # (before: the client's loop died here and the stream waited forever)
        gate.set()
        assert (await asyncio.wait_for(st.wait(), 10)).text == "a b"
    assert calls
