from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from chaos_peers import PeerServer

from unbroken.chaos import FaultProxy


@pytest.fixture
async def echo() -> AsyncIterator[PeerServer]:
    server = await PeerServer(echo=True).start()
    yield server
    await server.close()


@pytest.fixture
async def sink() -> AsyncIterator[PeerServer]:
    server = await PeerServer().start()
    yield server
    await server.close()


@pytest.fixture
async def echo_proxy(echo: PeerServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(upstream=echo.address, seed=7, close_grace=0.5) as proxy:
        yield proxy


@pytest.fixture
async def sink_proxy(sink: PeerServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(upstream=sink.address, seed=7, close_grace=0.5) as proxy:
        yield proxy
