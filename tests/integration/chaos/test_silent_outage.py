"""NetworkSimulator.simulate_silent_outage: nothing passes, nothing is refused, then the
link comes back and the connections that lost bytes are reset."""

from __future__ import annotations

import asyncio

import pytest
from chaos_peers import connect

from unbroken.chaos import FaultProxy, NetworkSimulator
from unbroken.errors import ConfigError

T = 5.0


async def test_a_silent_outage_accepts_new_connections_and_passes_nothing(
    echo_proxy: FaultProxy,
) -> None:
    net = NetworkSimulator(echo_proxy)
    before = await connect(echo_proxy.port)
    before.send(b"ping")
    assert await asyncio.wait_for(before.wait_bytes(4), T) == b"ping"
    # long enough that the checks below run inside it on a loaded machine
    outage = asyncio.create_task(net.simulate_silent_outage(1.5, mode="blackhole"))
    await asyncio.wait_for(echo_proxy.wait_until(lambda: len(echo_proxy.toxics) == 2), T)
    # a connection made during the outage is accepted (not refused) and hears nothing
    during = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(2), T)
    during.send(b"hello?")
    before.send(b"anyone?")
    heard = asyncio.ensure_future(during.wait_bytes(1))
    done, _ = await asyncio.wait({heard}, timeout=0.2)  # waits on the bytes, bounded
    heard.cancel()
    assert not done, "a byte crossed a silent outage"
    assert not before.lost.done() and not during.lost.done()  # silent: nothing closes
    # afterwards the link works again, and the connections that lost bytes are reset
    assert await asyncio.wait_for(outage, T) == 2
    assert echo_proxy.toxics == []
    assert isinstance(await asyncio.wait_for(before.lost, T), ConnectionResetError)
    assert isinstance(await asyncio.wait_for(during.lost, T), ConnectionResetError)
    after = await connect(echo_proxy.port)
    after.send(b"back")
    assert await asyncio.wait_for(after.wait_bytes(4), T) == b"back"


async def test_a_silent_outage_cuts_with_the_mode_first(echo_proxy: FaultProxy) -> None:
    net = NetworkSimulator(echo_proxy)
    client = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    outage = asyncio.create_task(net.simulate_silent_outage(0.3, mode="rst"))
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)
    assert await asyncio.wait_for(outage, T) == 0  # nothing was left to lose bytes
    cuts = [r for r in echo_proxy.records if r.kind == "cut"]
    assert [r.detail["mode"] for r in cuts] == ["rst"]


async def test_a_silent_outage_needs_a_duration(echo_proxy: FaultProxy) -> None:
    with pytest.raises(ConfigError):
        await NetworkSimulator(echo_proxy).simulate_silent_outage(0)
