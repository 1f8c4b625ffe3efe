"""TC14 as it happens in a deployment: a rolling upgrade of the wire protocol while
answers stream. Three ``unbroken serve`` nodes on one real redis-server, behind HAProxy
and the fault proxy, are restarted one by one from "v1 only" to "v1+v2", then one by
one to "v2 only", while streams run for a mix of old clients (pinned to v1: a tab opened
yesterday) and new ones (the default offer, v2 then v1). (Each node's replacement boots
beside it, out of the balancer's rotation, as a deployment with surge does; the restart
puts it in and drains the old process: its clients are told 1012, its runs go on.) Then
the fault proxy cuts every connection once more.

- The streams that end while the fleet still speaks v1 somewhere end exact (every token,
  the end digest computed here), old and new clients alike, across every restart.
- The new clients' streams go on through the whole upgrade (begun on v1, resumed on v2)
  and end exact.
- An old client facing v2-only servers ends with the typed, non-retried
  :class:`~unbroken.UnsupportedVersion` saying which versions each side speaks; what it
  received is a verified prefix (tokens in order, its cursor's digest the chain's), and a
  new client resumes the stream from that cursor to an exact end: nothing was lost.
- Every old node drains its runs and exits 0.

And one stream at a time, begun on a v1-only node and resumed by the same client on a
v2-only node (and the reverse: a rollback), cut by the fault proxy at the seed's timing
points: exact, every connection after the cut on the other version. Two points ride
along in the upgrade (on its processes); the full tier runs every timing point with
every fault mode on two nodes of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from unbroken import UnsupportedVersion
from unbroken.chaos import FaultProxy
from unbroken.chaos.toxics import CutMode
from unbroken.scenarios.cases.base import FAULT_MODES
from unbroken.scenarios.spec import TIMINGS

from ..redis.conftest import RedisServer, expected_text, free_port, full_digest
from .conftest_rolling import (
    TOKEN,
    Followed,
    Node,
    Spoken,
    Versions,
    advance_all,
    client,
    fleet,
    label,
    start_redis,
)

V1: Versions = ("v1",)
V12: Versions = ("v1", "v2")
V2: Versions = ("v2",)
#: each stream: 2 tokens every 0.1 s until its stop file exists (the load is the fleet's)
PACE = {"every": 2, "pause": 0.1}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    srv = start_redis(tmp_path)
    yield srv
    srv.stop()


Point = tuple[str, str, CutMode]
"""(timing, direction, fault) of a stream moved across versions."""


async def rolling_upgrade(
    redis: RedisServer, tmp: Path, clients: int, per_client: int, points: Sequence[Point] = ()
) -> str:
    """The upgrade with ``clients`` clients (every other one pinned to v1) of
    ``per_client`` streams each (every other stream ends once the fleet speaks v1+v2);
    ``points``: streams moved across versions meanwhile (:func:`resume_across`, on node
    1's v1-only and v2-only processes); returns a summary."""
    early, late = tmp / "stop-early", tmp / "stop-late"
    async with fleet(redis, tmp, [V1, V12, V2]) as f, contextlib.AsyncExitStack() as stack:
        followed: list[Followed] = []
        ends: dict[int, Path] = {}
        spoke: dict[int, Spoken] = {}
        for i in range(clients):
            pinned = V1 if i % 2 == 0 else None
            made, spoken = client(f.url, pinned)
            c = await stack.enter_async_context(made)
            for k in range(per_client):
                stop = early if k % 2 == 0 else late
                st = await c.start("ticker", {"stop": str(stop), **PACE})
                s = Followed(c, pinned, st)
                ends[id(s)] = stop
                spoke[id(s)] = spoken
                followed.append(s)
        first = [s for s in followed if ends[id(s)] == early]
        last = [s for s in followed if ends[id(s)] == late]
        old_last = [s for s in last if s.pinned == V1]
        new_last = [s for s in last if s.pinned is None]
        await advance_all(followed, 2)

        # while the replacements boot: single streams begun on node 1's v1-only process
        # and resumed on its v2-only one (not in the balancer's rotation yet), and the
        # reverse, through a fault proxy of their own
        moved = []
        if points:
            nodes = {V1: f.procs[0][0].result(), V2: await f.procs[0][-1]}
            side = FaultProxy(upstream=("127.0.0.1", 0), close_grace=0.5, flush_timeout=0.5)
            await side.start()
            try:
                for j, (timing, direction, fault) in enumerate(points):
                    go = tmp / f"go-{j}"
                    moved.append(await resume_across(nodes, side, go, timing, direction, fault))
            finally:
                await side.stop()

        # pass 1: every node from v1 only to v1+v2, one by one; the streams flow on
        for i in range(len(f.procs)):
            await f.upgrade(i)
            await advance_all(followed, 2)
        await asyncio.to_thread(early.touch)
        await asyncio.wait_for(asyncio.gather(*(s.task for s in first)), 30)
        tokens_first = [s.exact() for s in first]  # old and new clients: exact

        # pass 2: every node from v1+v2 to v2 only, one by one
        for i in range(len(f.procs)):
            await f.upgrade(i)
            await advance_all(last, 2)
        assert f.versions == [V2] * len(f.procs), f.versions
        # a real cut of every connection: each client now meets the v2-only fleet
        await f.front.cut_all("rst", reason="after_upgrade")
        await asyncio.wait_for(asyncio.gather(*(s.task for s in old_last)), 30)
        await advance_all(new_last, 2)
        await asyncio.to_thread(late.touch)
        await asyncio.wait_for(asyncio.gather(*(s.task for s in new_last)), 30)

        tokens_new = [s.exact() for s in new_last]  # begun on v1, resumed on v2: exact
        for s in new_last:  # (every new client's first connection spoke v1, its last v2)
            assert spoke[id(s)].versions[0] == "v1" and spoke[id(s)].versions[-1] == "v2"
        for s in followed:
            if s.pinned == V1:
                assert set(spoke[id(s)].versions) == {"v1"}, spoke[id(s)].versions
        refused = 0
        for s in old_last:
            err = s.error
            assert isinstance(err, UnsupportedVersion), (s.stream.id, err)
            assert tuple(err.client_versions) == V1, err.client_versions
            assert tuple(err.server_versions) == V2, err.server_versions
            refused += 1
            seq = s.verified_prefix()
            # nothing lost: a new client picks the stream up from the saved cursor
            cursor = s.stream.cursor
            assert cursor is not None
            fresh, _ = client(f.url, None)
            async with fresh:
                st = await fresh.resume(cursor)
                answer = await asyncio.wait_for(st.wait(), 30)
            whole = s.stream.result.text + answer.text
            n = len(whole) // TOKEN
            assert answer.status == "completed" and whole == expected_text(n), whole[-60:]
            assert answer.digest == full_digest(st.id, st.epoch, n)
            assert n + 3 > seq
        for old in f.retired:  # every old process drained its runs and exited cleanly
            assert await old.exit_code(30) == 0, old.log[-2000:]
        assert len(f.retired) == 2 * len(f.procs)
        return (
            f"{len(followed)} streams; {' / '.join(f.steps)}; ended in the mixed fleet: "
            f"{len(first)} exact ({min(tokens_first)}-{max(tokens_first)} tokens); "
            f"new clients through the whole upgrade: {len(new_last)} exact "
            f"({min(tokens_new)}-{max(tokens_new)} tokens); old clients refused by the "
            f"{label(V2)} fleet: {refused}, each a verified prefix, resumed whole"
            + "".join(f"\nmoved across versions: {m}" for m in moved)
        )


@pytest.mark.timeout(90)
@pytest.mark.full  # nine node processes, ~12 s; TC14's quick runs stay in the default tier
async def test_rolling_upgrade_v1_to_v2_every_stream_exact_or_refused(
    redis: RedisServer, tmp_path: Path
) -> None:
    # 20 streams: 5 old and 5 new clients of 2 streams each; and two streams moved
    # across versions at two timing points
    points: list[Point] = [("mid", "upgrade", "rst"), ("late", "downgrade", "fin")]
    print("\n" + await rolling_upgrade(redis, tmp_path, 10, 2, points))


@pytest.mark.full
@pytest.mark.timeout(180)
async def test_rolling_upgrade_100_streams(redis: RedisServer, tmp_path: Path) -> None:
    # 100 streams: 10 old and 10 new clients of 5 streams each
    print("\n" + await rolling_upgrade(redis, tmp_path, clients=20, per_client=5))


# ------------------------------------------------------------------ one stream, one move
#: the stream is begun on the first version's node and resumed on the second's
DIRECTIONS: dict[str, tuple[Versions, Versions]] = {"upgrade": (V1, V2), "downgrade": (V2, V1)}
TOKENS = 100


@contextlib.asynccontextmanager
async def two_nodes(redis: RedisServer) -> AsyncIterator[tuple[dict[Versions, Node], FaultProxy]]:
    """A v1-only and a v2-only node on ``redis``, and the fault proxy the client goes
    through (its upstream is the node the client meets next)."""
    env = {"UNBROKEN_REDIS_URL": redis.url, "UNBROKEN_REDIS_PREFIX": "across"}
    started = await asyncio.gather(
        *(Node.start(free_port(), v, env) for v in (V1, V2)), return_exceptions=True
    )
    front = FaultProxy(upstream=("127.0.0.1", 0), close_grace=0.5, flush_timeout=0.5)
    try:
        nodes = {}
        for n in started:
            if isinstance(n, BaseException):
                raise n
            assert n.versions is not None
            nodes[n.versions] = n
        await front.start()
        yield nodes, front
    finally:
        await front.stop()
        for n in started:
            if isinstance(n, Node):
                await n.kill()


async def resume_across(
    nodes: dict[Versions, Node],
    front: FaultProxy,
    go: Path,
    timing: str,
    direction: str,
    fault: CutMode,
) -> str:
    """One stream begun on one version's node, held at the timing point (the agent
    waits for ``go``), cut there by the proxy with ``fault``, resumed by the same client
    on the other version's node: exact, every connection after the cut on the new
    version."""
    first, then = DIRECTIONS[direction]
    point = TIMINGS[timing]
    # the point, in tokens: the first one for "immediate", else the middle of the range
    hold = 1 if point.at is not None else max(1, round(point.fraction(0) * TOKENS))
    front.upstream_address = ("127.0.0.1", nodes[first].port)
    made, spoken = client(f"ws://127.0.0.1:{front.port}/ws", None)
    async with made as c:
        inp = {"every": 5, "pause": 0.01, "most": TOKENS, "hold_at": hold, "go": str(go)}
        s = Followed(c, None, await c.start("ticker", inp))
        await asyncio.wait_for(s.reach(1 + hold), 20)  # part_start and `hold` tokens
        # the next connection reaches the other version's node; this one is cut
        front.upstream_address = ("127.0.0.1", nodes[then].port)
        cut = await front.cut_all(fault, reason=f"{timing}_{direction}")
        await asyncio.to_thread(go.touch)
        await asyncio.wait_for(s.task, 30)
        assert s.exact() == TOKENS
    assert cut >= 1  # (a connection left silent by an earlier point's blackhole counts too)
    assert spoken.versions[0] == first[0], spoken.versions
    assert len(spoken.versions) >= 2 and set(spoken.versions[1:]) == {then[0]}, spoken.versions
    return f"{timing}/{direction}/{fault}: seq {1 + hold} on {first[0]}, then {then[0]}"


async def resume_at(redis: RedisServer, tmp: Path, points: Sequence[Point]) -> None:
    async with two_nodes(redis) as (nodes, front):
        done = [
            await resume_across(nodes, front, tmp / f"go-{i}", timing, direction, fault)
            for i, (timing, direction, fault) in enumerate(points)
        ]
    print("\n" + "\n".join(done))


@pytest.mark.full
@pytest.mark.timeout(300)
async def test_a_stream_resumed_across_versions_at_every_timing_point(
    redis: RedisServer, tmp_path: Path
) -> None:
    points = [(t, d, f) for t in TIMINGS for d in DIRECTIONS for f in FAULT_MODES]
    await resume_at(redis, tmp_path, points)
