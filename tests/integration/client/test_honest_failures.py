"""Honest failures, fast: misuse of the client is an error at once, never a hang."""

from __future__ import annotations

import asyncio

import pytest

from unbroken import ConfigError, Cursor, UnbrokenError
from unbroken.client import Client


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
