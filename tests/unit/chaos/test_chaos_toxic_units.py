"""Toxics without sockets: Toxiproxy units, validation, and each toxic's chunk logic."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from unbroken.chaos import (
    TOXIC_TYPES,
    Bandwidth,
    FaultRecord,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    format_address,
    parse_address,
)
from unbroken.chaos.toxics import Chunk, CutMode, Direction, toxic_from_json
from unbroken.errors import ConfigError


class FakeContext:
    """A ToxicContext that records what a toxic does, with a virtual clock."""

    def __init__(self, seed: int = 0) -> None:
        self.state: dict[str, float] = {}
        self.clock = 100.0
        self.slept: list[float] = []
        self.dropped: list[bytes] = []
        self.cuts: list[tuple[str, str]] = []
        self.records: list[str] = []
        self._rng = random.Random(seed)

    @property
    def connection_id(self) -> int:
        return 1

    @property
    def direction(self) -> Direction:
        return "downstream"

    @property
    def rng(self) -> random.Random:
        return self._rng

    def now(self) -> float:
        return self.clock

    async def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        self.clock += seconds
        return True

    def drop(self, chunk: Chunk) -> None:
        self.dropped.append(chunk.data)

    def cut(self, mode: CutMode, reason: str, **detail: object) -> None:
        self.cuts.append((mode, reason))

    def record(self, kind: str, **detail: object) -> None:
        self.records.append(kind)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        coro.close()
        self.records.append("spawned")


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def __call__(self, chunk: Chunk) -> None:
        self.chunks.append(chunk.data)


def test_toxic_types_are_toxiproxys() -> None:
    assert set(TOXIC_TYPES) == {
        "noop",
        "latency",
        "bandwidth",
        "slicer",
        "timeout",
        "reset_peer",
        "limit_data",
        "slow_close",
    }


@pytest.mark.parametrize(
    ("type_name", "attributes", "field", "python_value"),
    [
        ("latency", {"latency": 100, "jitter": 10}, "latency", 0.1),
        ("latency", {"latency": 100, "jitter": 10}, "jitter", 0.01),
        ("bandwidth", {"rate": 100}, "rate", 100_000.0),
        ("slicer", {"average_size": 64, "size_variation": 8, "delay": 250}, "delay", 0.00025),
        ("slicer", {"average_size": 64}, "average_size", 64),
        ("timeout", {"timeout": 1500}, "timeout", 1.5),
        ("reset_peer", {"timeout": 20}, "timeout", 0.02),
        ("limit_data", {"bytes": 4096}, "bytes", 4096),
        ("slow_close", {"delay": 300}, "delay", 0.3),
    ],
)
def test_toxiproxy_units_convert_both_ways(
    type_name: str, attributes: dict[str, int], field: str, python_value: float
) -> None:
    toxic = toxic_from_json(type_name, attributes)
    assert getattr(toxic, field) == pytest.approx(python_value)
    back = toxic.to_attributes()
    for key, value in attributes.items():
        assert back[key] == value and isinstance(back[key], int)


def test_update_merges_and_rejects_bad_values() -> None:
    toxic = Latency.from_attributes({"latency": 10, "jitter": 2})
    toxic.update_attributes({"latency": 50})
    assert toxic.to_attributes() == {"latency": 50, "jitter": 2}
    for bad in ({"latency": "fast"}, {"latency": -1}, {"latency": True}, {"jitter": float("nan")}):
        with pytest.raises(ValueError):
            toxic.update_attributes(bad)
    with pytest.raises(ValueError):
        Bandwidth(rate=-5).validate()
    with pytest.raises(KeyError):
        toxic_from_json("packet_loss", {})


def test_latency_jitter_stays_within_bounds_and_is_seeded() -> None:
    toxic = Latency(latency=0.1, jitter=0.02)
    ctx = FakeContext(seed=4)
    delays = [toxic.delay(ctx) for _ in range(500)]
    assert all(0.08 <= d <= 0.12 for d in delays) and len(set(delays)) > 100
    assert [toxic.delay(FakeContext(seed=4)) for _ in range(3)] == [
        Latency(latency=0.1, jitter=0.02).delay(FakeContext(seed=4)) for _ in range(3)
    ]


async def test_latency_waits_from_the_read_time() -> None:
    ctx = FakeContext()
    sink = Sink()
    await Latency(latency=0.5).transmit(Chunk(b"late", at=99.8), ctx, sink)
    assert ctx.slept == [pytest.approx(0.3)] and sink.chunks == [b"late"]


async def test_bandwidth_paces_pieces_at_the_rate() -> None:
    ctx = FakeContext()
    sink = Sink()
    await Bandwidth(rate=1000).transmit(Chunk(b"x" * 450, 100.0), ctx, sink)
    assert b"".join(sink.chunks) == b"x" * 450
    assert all(len(c) <= 100 for c in sink.chunks)  # 100 ms of data per piece
    assert sum(ctx.slept) == pytest.approx(0.45)


@pytest.mark.parametrize(("average", "variation"), [(1, 0), (10, 3), (64, 16), (100, 0)])
def test_slicer_boundaries_cover_the_chunk_in_small_pieces(average: int, variation: int) -> None:
    toxic = Slicer(average_size=average, size_variation=variation)
    cuts = toxic.boundaries(5000, FakeContext(seed=1))
    assert cuts[0] == 0 and cuts[-1] == 5000
    sizes = [b - a for a, b in itertools.pairwise(cuts)]
    assert all(0 < s <= average + variation for s in sizes)


async def test_slicer_emits_unchanged_bytes_with_delays() -> None:
    ctx = FakeContext()
    sink = Sink()
    data = bytes(range(256)) * 4
    await Slicer(average_size=32, size_variation=4, delay=0.001).transmit(
        Chunk(data, 0.0), ctx, sink
    )
    assert b"".join(sink.chunks) == data and len(sink.chunks) > 10
    assert len(ctx.slept) == len(sink.chunks) - 1


async def test_limit_data_passes_exactly_n_bytes_across_chunks_then_cuts() -> None:
    ctx = FakeContext()
    sink = Sink()
    toxic = LimitData(bytes=10)
    await toxic.transmit(Chunk(b"abcdef", 0), ctx, sink)
    assert ctx.cuts == []
    await toxic.transmit(Chunk(b"ghijkl", 0), ctx, sink)
    assert b"".join(sink.chunks) == b"abcdefghij"
    assert ctx.dropped == [b"kl"] and ctx.cuts == [("fin", "limit_data")]


async def test_timeout_drops_and_reset_peer_cuts_with_rst() -> None:
    ctx = FakeContext()
    sink = Sink()
    hole = Timeout(timeout=0.5)
    hole.activate(ctx)
    await hole.transmit(Chunk(b"gone", 0), ctx, sink)
    assert sink.chunks == [] and ctx.dropped == [b"gone"] and ctx.records == ["spawned"]
    Timeout(timeout=0).activate(ctx)
    assert ctx.records == ["spawned"]  # 0 holds forever: no timer
    reset = ResetPeer(timeout=0.1)
    await reset.transmit(Chunk(b"a", 0), ctx, sink)
    await reset.transmit(Chunk(b"b", 0), ctx, sink)
    assert ctx.cuts == [("rst", "reset_peer")] and ctx.slept == [0.1]


async def test_slow_close_waits_before_the_close() -> None:
    ctx = FakeContext()
    await SlowClose(delay=0.25).finish(ctx)
    assert ctx.slept == [0.25] and ctx.records == ["slow_close"]


def test_addresses_parse_and_format() -> None:
    assert parse_address("127.0.0.1:8474") == ("127.0.0.1", 8474)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert format_address(("::1", 80)) == "[::1]:80"
    for bad in ("localhost", "host:port", "1.2.3.4:70000"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_fault_record_is_one_flat_json_line() -> None:
    record = FaultRecord(
        time=1.5,
        elapsed=0.25,
        proxy="p",
        kind="cut",
        connection=3,
        direction="downstream",
        offsets={"upstream": 10, "downstream": 90},
        detail={"mode": "rst", "reason": "test"},
    )
    line = record.to_json()
    assert "\n" not in line
    assert json.loads(line) == {
        "time": 1.5,
        "elapsed": 0.25,
        "proxy": "p",
        "kind": "cut",
        "connection": 3,
        "direction": "downstream",
        "offsets": {"upstream": 10, "downstream": 90},
        "mode": "rst",
        "reason": "test",
    }
    assert record.is_fault and not FaultRecord(0, 0, "p", "accepted").is_fault
