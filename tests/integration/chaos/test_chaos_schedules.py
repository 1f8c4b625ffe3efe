"""Schedules: a cut at time T, intermittent drops, outage, ramp, asymmetric failure."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from chaos_peers import PeerServer, connect

from unbroken.chaos import Bandwidth, FaultProxy, Latency

T = 5.0


async def test_cut_after_delay_resets_live_connections(echo_proxy: FaultProxy) -> None:
    client = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    handle = echo_proxy.cut_after(0.1, "rst")
    await asyncio.wait_for(handle.wait(), T)
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)
    timed = await echo_proxy.wait_record("timed_cut")
    listening = await echo_proxy.wait_record("listening")
    assert timed.detail["connections"] == 1
    assert timed.elapsed - listening.elapsed >= 0.1


async def test_cut_every_fires_count_times_at_the_interval(echo_proxy: FaultProxy) -> None:
    client = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    handle = echo_proxy.cut_every(0.05, "rst", count=3)
    await asyncio.wait_for(handle.wait(), T)
    ticks = [r for r in echo_proxy.records if r.kind == "intermittent_drop"]
    assert [r.detail["index"] for r in ticks] == [1, 2, 3]
    assert ticks[0].detail["connections"] == 1  # the client connected before the first tick
    assert all(b.elapsed - a.elapsed >= 0.03 for a, b in itertools.pairwise(ticks))
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)
    assert handle.done


async def test_cut_every_with_outage_refuses_until_cancelled(echo_proxy: FaultProxy) -> None:
    handle = echo_proxy.cut_every(0.01, "fin", count=1, outage=30.0)
    await asyncio.wait_for(echo_proxy.wait_record("disabled"), T)
    with pytest.raises(ConnectionRefusedError):
        await connect(echo_proxy.port)
    handle.cancel()
    await asyncio.wait_for(echo_proxy.wait_until(lambda: echo_proxy.enabled), T)
    client = await connect(echo_proxy.port)
    client.send(b"up")
    assert await asyncio.wait_for(client.wait_bytes(2), T) == b"up"


async def test_outage_refuses_for_its_duration_then_recovers(echo_proxy: FaultProxy) -> None:
    client = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    handle = echo_proxy.outage(0.15)
    await asyncio.wait_for(echo_proxy.wait_record("disabled"), T)
    await asyncio.wait_for(client.ended, T)
    with pytest.raises(ConnectionRefusedError):
        await connect(echo_proxy.port)
    await asyncio.wait_for(handle.wait(), T)
    disabled = await echo_proxy.wait_record("disabled")
    enabled = await echo_proxy.wait_record("enabled")
    assert enabled.elapsed - disabled.elapsed >= 0.15
    again = await connect(echo_proxy.port)
    again.send(b"ok")
    assert await asyncio.wait_for(again.wait_bytes(2), T) == b"ok"


async def test_ramp_moves_latency_up_and_bandwidth_down_then_holds(
    echo_proxy: FaultProxy,
) -> None:
    handle = echo_proxy.ramp(0.15, latency=(0.0, 0.08), rate=(1_000_000, 50_000), step=0.02)
    await asyncio.wait_for(handle.wait(), T)
    latency = echo_proxy.get_toxic("ramp_latency_downstream")
    bandwidth = echo_proxy.get_toxic("ramp_bandwidth_downstream")
    assert latency is not None and isinstance(latency.toxic, Latency)
    assert bandwidth is not None and isinstance(bandwidth.toxic, Bandwidth)
    assert latency.toxic.latency == pytest.approx(0.08)
    assert bandwidth.toxic.rate == pytest.approx(50_000)
    end = await echo_proxy.wait_record("ramp", where=lambda r: r.detail["phase"] == "end")
    start = await echo_proxy.wait_record("ramp", where=lambda r: r.detail["phase"] == "start")
    assert end.elapsed - start.elapsed >= 0.15
    # held: a new connection sees the degraded link, bytes still intact
    client = await connect(echo_proxy.port)
    t0 = asyncio.get_running_loop().time()
    client.send(b"slow")
    assert await asyncio.wait_for(client.wait_bytes(4), T) == b"slow"
    assert asyncio.get_running_loop().time() - t0 >= 0.08
    handle.cancel()
    await asyncio.wait_for(echo_proxy.wait_until(lambda: not echo_proxy.toxics), T)


async def test_asymmetric_failure_drops_one_direction_while_the_other_flows(
    sink_proxy: FaultProxy, sink: PeerServer
) -> None:
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    conn = await asyncio.wait_for(sink_proxy.wait_connection(1), T)
    handle = sink_proxy.asymmetric("upstream", 0.2, then="rst")
    await asyncio.wait_for(sink_proxy.wait_record("asymmetric"), T)
    client.send(b"request")
    await asyncio.wait_for(sink_proxy.wait_until(lambda: conn.upstream.received == 7), T)
    server_peer.send(b"still streaming")
    assert await asyncio.wait_for(client.wait_bytes(15), T) == b"still streaming"
    assert conn.upstream.dropped == 7 and bytes(server_peer.data) == b""
    await asyncio.wait_for(handle.wait(), T)
    # the connection lost bytes, so it is reset; a new one is healthy
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)
    fresh = await connect(sink_proxy.port)
    fresh_server = await asyncio.wait_for(sink.peer(1), T)
    fresh.send(b"hi")
    assert await asyncio.wait_for(fresh_server.wait_bytes(2), T) == b"hi"
    assert sink_proxy.get_toxic("asymmetric_upstream") is None


async def test_reset_cancels_schedules_and_removes_toxics(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_toxic(Latency(latency=1.0))
    handle = echo_proxy.outage(60.0)
    await asyncio.wait_for(echo_proxy.wait_record("disabled"), T)
    await echo_proxy.reset()
    assert handle.done and echo_proxy.enabled and not echo_proxy.toxics
    client = await connect(echo_proxy.port)
    client.send(b"clean")
    assert await asyncio.wait_for(client.wait_bytes(5), T) == b"clean"
