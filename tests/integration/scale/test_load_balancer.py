"""Three ``unbroken serve`` nodes on one real redis-server behind Debian's
HAProxy (round robin, no sticky sessions): kill -9 of a node mid-stream, a
drain of a node (SIGTERM → 1012) and a restart of the load balancer each leave
every stream exact.

Streams are started on chosen nodes (directly, so which node runs each agent is
known) and followed through the load balancer, where each resume lands on the
next node in turn."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..redis.conftest import RedisServer
from .conftest import Follower, HAProxy, Served, all_past, need_haproxy, redis_env

pytestmark = pytest.mark.timeout(60)
APP = "examples.redis_app:app"
N = 3000  # tokens a stream: about 3 s at 50 tokens / 0.04 s


@dataclass
class Cluster:
    nodes: list[Served]
    lb: HAProxy

    def resumed_on(self, node: Served, stream: str) -> bool:
        return any("resume conn=" in line and f"stream={stream}" in line for line in node.p.lines)


@pytest.fixture
async def cluster(redis: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    binary = need_haproxy()
    env = redis_env(redis, lease=1.0)
    nodes = list(
        await asyncio.gather(
            *(Served.start(APP, "--timeout-graceful-shutdown", "30", env=env) for _ in range(3))
        )
    )
    lb = HAProxy(binary, tmp_path, [n.port for n in nodes])
    try:
        await lb.start()
        yield Cluster(nodes, lb)
    finally:
        await lb.stop()
        for n in nodes:
            await n.stop()


async def follow(c: Cluster, starts: list[int]) -> list[tuple[int, Follower]]:
    """One stream started on node ``i`` for each ``i`` in ``starts``, each
    followed through the load balancer."""
    out = []
    for i in starts:
        out.append((i, await Follower.begin([c.nodes[i].url], [c.lb.url], N, 0.04)))
    return out


async def test_kill_9_of_a_node_mid_stream_every_stream_exact(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    # six runs on nodes 1 and 2, two on node 0 (the victim): six consecutive round-robin
    # resumes put two of the first six readers on node 0, whatever its starting point
    streams = await follow(cluster, [1, 2, 1, 2, 1, 2, 0, 0])
    await all_past([f for _, f in streams], 100)
    read_on_a = [f.stream.id for _, f in streams if cluster.resumed_on(a, f.stream.id)]
    a.signal(signal.SIGKILL)
    outcomes = {f.stream.id: (i, await f.settle()) for i, f in streams}
    for sid, (i, outcome) in outcomes.items():
        # a run on the dead node ends producer_lost (exact prefix); every other is whole
        assert outcome == ("producer_lost" if i == 0 else "completed"), (sid, i, outcome)
    moved = [s for s in read_on_a if outcomes[s][0] != 0]
    assert len(moved) >= 1, (read_on_a, outcomes)
    print(f"\nread on the killed node: {len(read_on_a)}; whole after moving: {len(moved)}")


async def test_drain_of_a_node_1012_every_stream_exact(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    streams = await follow(cluster, [0, 1, 2, 0, 1, 2, 0, 1])
    await all_past([f for _, f in streams], 100)
    read_on_a = {f.stream.id for _, f in streams if cluster.resumed_on(a, f.stream.id)}
    assert read_on_a
    a.signal(signal.SIGTERM)
    outcomes = [await f.settle() for _, f in streams]
    # node 0's runs drained to their end; its readers were told 1012 and moved
    assert outcomes == ["completed"] * len(streams)
    for _, f in streams:
        assert f.heard(1012) == (f.stream.id in read_on_a), f.stream.id
    assert await a.wait(30) == 0


async def test_restart_of_the_load_balancer_every_stream_exact(cluster: Cluster) -> None:
    streams = await follow(cluster, [0, 1, 2, 0, 1, 2])
    await all_past([f for _, f in streams], 100)
    await cluster.lb.stop()  # hard stop: every connection through it is cut
    await cluster.lb.start()  # the same port, a new process
    outcomes = [await f.settle() for _, f in streams]
    assert outcomes == ["completed"] * len(streams)
    cut = Counter(sum(e.kind == "disconnected" for e in f.client.history) >= 1 for _, f in streams)
    assert cut[True] == len(streams), cut  # every reader was cut and came back
