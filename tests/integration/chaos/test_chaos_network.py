"""NetworkSimulator over the proxy, and the toolkit end to end on a toy resumable stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest
from chaos_peers import PeerServer, connect

from unbroken.chaos import (
    Bandwidth,
    FaultProxy,
    NetworkSimulator,
    StateVerifier,
    StreamingResponseSimulator,
)
from unbroken.protocol.events import Event, Kind

T = 5.0


async def test_clean_disconnect_is_a_fin_and_abrupt_is_a_reset(echo_proxy: FaultProxy) -> None:
    net = NetworkSimulator(echo_proxy)
    first = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    assert await net.simulate_clean_disconnect(0.01) == 1
    await asyncio.wait_for(first.ended, T)
    assert first.eof
    second = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(2), T)
    assert await net.simulate_clean_disconnect(abrupt=True) == 1
    assert isinstance(await asyncio.wait_for(second.lost, T), ConnectionResetError)


async def test_gradual_degradation_reaches_the_bad_level_and_restore_undoes_it(
    echo_proxy: FaultProxy,
) -> None:
    net = NetworkSimulator(echo_proxy)
    await asyncio.wait_for(
        net.simulate_gradual_degradation(10.0, max_latency=0.05, min_rate=2_000), T
    )
    latency = echo_proxy.get_toxic("ramp_latency_downstream")
    bandwidth = echo_proxy.get_toxic("ramp_bandwidth_downstream")
    assert latency is not None and latency.toxic.to_attributes() == {"latency": 50, "jitter": 0}
    assert bandwidth is not None and bandwidth.toxic.to_attributes() == {"rate": 2}
    await net.restore()
    assert echo_proxy.toxics == []


async def test_intermittent_drops_cut_the_given_number_of_times(echo_proxy: FaultProxy) -> None:
    net = NetworkSimulator(echo_proxy)
    client = await connect(echo_proxy.port)
    await asyncio.wait_for(echo_proxy.wait_connection(1), T)
    assert await asyncio.wait_for(net.simulate_intermittent_drops(3, duration=0.15), T) == 3
    drops = [r for r in echo_proxy.records if r.kind == "intermittent_drop"]
    assert len(drops) == 3 and drops[0].detail["connections"] == 1
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)


async def test_bandwidth_throttling_caps_both_directions_until_restored(
    echo_proxy: FaultProxy,
) -> None:
    net = NetworkSimulator(echo_proxy)
    added = await net.simulate_bandwidth_throttling(200_000)
    assert [t.stream for t in added] == ["upstream", "downstream"]
    assert all(isinstance(t.toxic, Bandwidth) and t.toxic.rate == 200_000 for t in added)
    client = await connect(echo_proxy.port)
    payload = os.urandom(40_000)
    start = asyncio.get_running_loop().time()
    client.send(payload)
    assert await asyncio.wait_for(client.wait_bytes(len(payload)), T) == payload
    assert asyncio.get_running_loop().time() - start >= 0.18
    await net.restore()
    assert echo_proxy.toxics == []
    timed = await net.simulate_bandwidth_throttling(1000, duration=0.01, stream="upstream")
    assert len(timed) == 1 and echo_proxy.toxics == []


async def test_complete_outage_and_asymmetric_failure(
    sink_proxy: FaultProxy, sink: PeerServer
) -> None:
    net = NetworkSimulator(sink_proxy)
    await asyncio.wait_for(net.simulate_complete_outage(0.05), T)
    kinds = [r.kind for r in sink_proxy.faults]
    assert kinds[-2:] == ["disabled", "enabled"] and sink_proxy.enabled
    client = await connect(sink_proxy.port)
    server_peer = await asyncio.wait_for(sink.peer(0), T)
    failure = asyncio.create_task(net.simulate_asymmetric_failure("downstream", 0.1))
    await asyncio.wait_for(sink_proxy.wait_record("asymmetric"), T)
    server_peer.send(b"unheard")
    client.send(b"heard")
    assert await asyncio.wait_for(server_peer.wait_bytes(5), T) == b"heard"
    await asyncio.wait_for(failure, T)
    assert bytes(client.data) == b""
    assert isinstance(await asyncio.wait_for(client.lost, T), ConnectionResetError)


# -- end to end: a toy resumable stream through fin, rst and blackhole cuts ------------------
def _encode(event: Event) -> bytes:
    fields = {
        f: getattr(event, f)
        for f in ("seq", "part", "body", "part_kind", "mime", "schema", "status", "error", "count")
    }
    fields["kind"] = int(event.kind)
    return json.dumps(fields).encode() + b"\n"


def _decode(line: bytes) -> Event:
    fields = json.loads(line)
    fields["kind"] = Kind(fields["kind"])
    return Event(**fields)


async def test_a_resuming_client_gets_the_exact_answer_through_three_kinds_of_cut() -> None:
    answer = StreamingResponseSimulator(seed=21).multipart_answer(
        [{"type": "text", "size": 60_000, "chunk_size": 500}, {"type": "table", "rows": 300}]
    )
    events = answer.expected_events()
    wire = [_encode(e) for e in events]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            after = int((await reader.readline()).split()[1])
            for line in wire[after:]:
                writer.write(line)
                await writer.drain()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    verifier = StateVerifier()
    try:
        async with FaultProxy(upstream=("127.0.0.1", port), close_grace=0.2) as proxy:
            cuts = [
                proxy.cut_after_bytes(offset, direction="downstream", mode=mode)
                for offset, mode in ((20_000, "fin"), (25_000, "rst"), (30_000, "blackhole"))
            ]
            last = 0
            for _attempt in range(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(f"resume {last}\n".encode())
                try:
                    while True:  # 0.3 s of silence = dead connection, as a heartbeat would
                        line = await asyncio.wait_for(reader.readline(), 0.3)
                        if not line.endswith(b"\n"):
                            break  # EOF (or a partial line before it): resume
                        event = _decode(line)
                        verifier.record(event)
                        last = event.seq
                        if event.kind == Kind.END:
                            break
                except (ConnectionError, TimeoutError):
                    pass
                writer.close()
                if last == len(events):
                    break
            assert all(c.count == 1 for c in cuts)
            assert [r.detail["mode"] for r in proxy.faults if r.kind == "cut"] == [
                "fin",
                "rst",
                "blackhole",
            ]
    finally:
        server.close()
        await server.wait_closed()
    verdict = verifier.verify_answer(answer)
    assert verdict.ok, verdict.detail
    assert await verifier.verify_data_completeness(answer.content_hash())
    assert await verifier.verify_message_sequencing(list(range(1, len(events) + 1)))


@pytest.mark.parametrize("rate", [0, -1])
async def test_throttling_rejects_non_positive_rates(echo_proxy: FaultProxy, rate: int) -> None:
    from unbroken.errors import ConfigError

    with pytest.raises(ConfigError):
        await NetworkSimulator(echo_proxy).simulate_bandwidth_throttling(rate)
