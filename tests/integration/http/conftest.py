"""Fixtures: the server test app (its agents), served on a real loopback socket, read over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from unbroken.testing import RunningServer, serve

from ..server.conftest import Kit, make_kit

ServeKit = Callable[..., Awaitable[tuple[Kit, RunningServer]]]


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    """``await served(**app_kwargs)``: a kit and its running server (stopped after the test)."""
    stack: list[Any] = []

    async def start(**kw: Any) -> tuple[Kit, RunningServer]:
        kit = make_kit(**kw)
        cm = serve(kit.app)
        srv = await cm.__aenter__()
        stack.append(cm)
        return kit, srv

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
