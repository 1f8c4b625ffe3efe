"""Each toxic against plain echo/sink servers over real loopback sockets."""

from __future__ import annotations

import asyncio
import os

from chaos_peers import PeerServer, connect

from unbroken.chaos import (
    Bandwidth,
    FaultProxy,
    Latency,
    LimitData,
    Noop,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
)

T = 5.0


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


async def test_noop_alters_nothing(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_toxic(Noop(), stream="upstream")
    echo_proxy.add_toxic(Noop(), stream="downstream")
    payload = os.urandom(1_000_000)
    client = await connect(echo_proxy.port)
    client.send(payload)
    assert await asyncio.wait_for(client.wait_bytes(len(payload)), T) == payload
    conn = echo_proxy.history[0]
    assert conn.upstream.toxics == ["noop_upstream"]
    assert conn.downstream.sent == len(payload)


async def test_latency_delays_each_round_trip_but_pipelines_a_burst(
    echo_proxy: FaultProxy,
) -> None:
    echo_proxy.add_toxic(Latency(latency=0.05), stream="downstream")
    client = await connect(echo_proxy.port)
    start = _loop_time()
    client.send(b"ping")
    await asyncio.wait_for(client.wait_bytes(4), T)
    assert _loop_time() - start >= 0.05
    # a burst of 40 writes is delayed once, not 40 times (2 s if serial)
    start = _loop_time()
    payload = os.urandom(40 * 5000)
    for i in range(40):
        client.send(payload[i * 5000 : (i + 1) * 5000])
    got = await asyncio.wait_for(client.wait_bytes(4 + len(payload)), T)
    elapsed = _loop_time() - start
    assert got == b"ping" + payload
    assert 0.05 <= elapsed < 1.0  # half the serial time: a loaded machine's margin


async def test_latency_added_to_a_live_connection_and_removed_mid_delay(
    echo_proxy: FaultProxy,
) -> None:
    client = await connect(echo_proxy.port)
    client.send(b"a")
    await asyncio.wait_for(client.wait_bytes(1), T)
    echo_proxy.add_toxic(Latency(latency=30.0), stream="downstream", name="slow")
    client.send(b"b")
    conn = echo_proxy.history[0]
    await asyncio.wait_for(echo_proxy.wait_until(lambda: conn.downstream.received == 2), T)
    assert conn.downstream.sent == 1  # held by the 30 s latency
    echo_proxy.remove_toxic("slow")  # releases the held chunk at once
    assert await asyncio.wait_for(client.wait_bytes(2), T) == b"ab"


async def test_bandwidth_paces_bytes_without_altering_them(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_toxic(Bandwidth(rate=100_000), stream="downstream")
    payload = os.urandom(20_000)
    client = await connect(echo_proxy.port)
    start = _loop_time()
    client.send(payload)
    assert await asyncio.wait_for(client.wait_bytes(len(payload)), T) == payload
    assert _loop_time() - start >= 0.18  # 20 kB at 100 kB/s is 0.2 s


async def test_slicer_splits_writes_into_small_pieces(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_toxic(Slicer(average_size=50, size_variation=20, delay=0.001))
    payload = os.urandom(2000)
    client = await connect(echo_proxy.port)
    client.send(payload)
    assert await asyncio.wait_for(client.wait_bytes(len(payload)), T) == payload
    assert client.reads >= 5  # ~40 pieces, 1 ms apart


async def test_timeout_passes_no_byte_for_its_duration_then_closes(
    sink_proxy: FaultProxy, sink: PeerServer
) -> None:
    sink_proxy.add_toxic(Timeout(timeout=0.2), stream="upstream")
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    client.send(b"x" * 1000)
    cut = await asyncio.wait_for(sink_proxy.wait_record("cut"), T)
    applied = await sink_proxy.wait_record("toxic_applied")
    conn = sink_proxy.history[0]
    assert cut.detail["reason"] == "timeout" and cut.detail["mode"] == "fin"
    assert cut.elapsed - applied.elapsed >= 0.2
    assert cut.offsets["upstream"] == 0  # nothing passed during the timeout
    assert conn.upstream.sent == 0 and conn.upstream.dropped == 1000
    await asyncio.wait_for(server_peer.ended, T)
    assert server_peer.eof and bytes(server_peer.data) == b""


async def test_timeout_zero_is_a_blackhole_that_holds_until_removed(
    sink_proxy: FaultProxy, sink: PeerServer
) -> None:
    hole = sink_proxy.add_toxic(Timeout(timeout=0), stream="upstream")
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    client.send(b"lost")
    conn = await sink_proxy.wait_connection(1)
    await asyncio.wait_for(sink_proxy.wait_until(lambda: conn.upstream.received == 4), T)
    assert conn.upstream.sent == 0 and conn.upstream.dropped == 4
    assert conn.state == "open"
    server_peer.send(b"down flows")  # the other direction is untouched
    assert await asyncio.wait_for(client.wait_bytes(10), T) == b"down flows"
    sink_proxy.remove_toxic(hole.name)
    client.send(b"found")
    assert await asyncio.wait_for(server_peer.wait_bytes(5), T) == b"found"


async def test_reset_peer_gives_both_peers_connection_reset(
    echo_proxy: FaultProxy, echo: PeerServer
) -> None:
    echo_proxy.add_toxic(ResetPeer(timeout=0.05), stream="upstream")
    client = await connect(echo_proxy.port)
    server_peer = await asyncio.wait_for(echo.peer(0), T)
    client.send(b"hello")
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)
    assert isinstance(await asyncio.wait_for(server_peer.lost, T), ConnectionResetError)
    cut = await echo_proxy.wait_record("cut")
    applied = await echo_proxy.wait_record("toxic_applied")
    assert cut.detail["mode"] == "rst" and cut.detail["reason"] == "reset_peer"
    assert cut.elapsed - applied.elapsed >= 0.05
    assert bytes(server_peer.data) == b""


async def test_limit_data_delivers_exactly_n_bytes_then_closes(
    sink_proxy: FaultProxy, sink: PeerServer
) -> None:
    sink_proxy.add_toxic(LimitData(bytes=1000), stream="downstream")
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    payload = os.urandom(5000)
    for i in range(0, 5000, 300):
        server_peer.send(payload[i : i + 300])
    await asyncio.wait_for(client.ended, T)
    assert client.eof and bytes(client.data) == payload[:1000]
    cut = await sink_proxy.wait_record("cut")
    assert cut.detail["reason"] == "limit_data" and cut.offsets["downstream"] == 1000


async def test_slow_close_delays_the_fin(sink_proxy: FaultProxy, sink: PeerServer) -> None:
    sink_proxy.add_toxic(SlowClose(delay=0.2), stream="downstream")
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    server_peer.send(b"bye")
    assert server_peer.transport is not None
    server_peer.transport.write_eof()
    fin_sent = _loop_time()
    await asyncio.wait_for(client.ended, T)
    assert _loop_time() - fin_sent >= 0.2
    assert client.eof and bytes(client.data) == b"bye"
    record = await sink_proxy.wait_record("slow_close")
    assert record.detail["delay"] == 0.2 and record.direction == "downstream"


async def test_toxicity_is_a_per_connection_probability(echo: PeerServer) -> None:
    async def applied_count(seed: int) -> int:
        async with FaultProxy(upstream=echo.address, seed=seed) as proxy:
            proxy.add_toxic(Noop(), toxicity=0.5)
            for n in range(1, 21):
                await connect(proxy.port)
                await asyncio.wait_for(proxy.wait_connection(n), T)
            return sum(1 for c in proxy.history if c.downstream.toxics)

    first = await applied_count(seed=3)
    assert 0 < first < 20
    assert await applied_count(seed=3) == first  # reproducible for a seed


async def test_toxicity_zero_never_applies(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_toxic(Timeout(timeout=0), toxicity=0.0)
    client = await connect(echo_proxy.port)
    client.send(b"through")
    assert await asyncio.wait_for(client.wait_bytes(7), T) == b"through"
    assert not [r for r in echo_proxy.records if r.kind == "toxic_applied"]
