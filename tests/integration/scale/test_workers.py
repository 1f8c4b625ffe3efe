"""``unbroken serve --workers N`` on one real redis-server: any worker serves any
stream; a worker killed mid-stream is reported and replaced, and its clients
resume on the others; SIGTERM drains every worker (1012)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from unbroken.client import Client

from ...waiting import until
from ..redis.conftest import RedisServer
from .conftest import FAST, ROOT, UNBROKEN, Follower, Served, all_past, redis_env

pytestmark = pytest.mark.timeout(90)
APP = "examples.redis_app:app"


async def test_workers_refuse_an_app_on_a_memory_store() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "tests.integration.scale.apps:memory_app",
        "--port",
        "0",
        "--workers",
        "2",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = " ".join((out + err).decode().split())
    assert proc.returncode == 2, text
    assert "needs a store every worker sees" in text and "MemoryStore" in text, text
    assert "RedisStore" in text


async def test_streams_started_on_one_worker_resume_on_another_exactly(
    redis: RedisServer, served: list[Served]
) -> None:
    srv = await Served.start(APP, env=redis_env(redis), workers=2)
    served.append(srv)
    n = 1500
    followers = [await Follower.begin([srv.url], [srv.url], n, 0.04) for _ in range(16)]
    outcomes = [await f.settle() for f in followers]
    assert outcomes == ["completed"] * 16
    pids = set(srv.workers().values())
    started = [await srv.where("start", f.stream.id) for f in followers]
    resumed = [await srv.where("resume", f.stream.id) for f in followers]
    # SO_REUSEPORT spreads connections over both workers (16 starts and 16 resumes:
    # all on one worker, or no stream crossing, has odds of 2^-15 and 2^-16)
    assert set(started) == pids and set(resumed) == pids
    crossed = sum(a != b for a, b in zip(started, resumed, strict=True))
    print(f"\nstarts per worker {Counter(started)}; resumes {Counter(resumed)}; crossed {crossed}")
    assert crossed >= 1


async def test_kill_9_of_a_worker_mid_stream_its_clients_resume_on_the_others_exactly(
    redis: RedisServer, served: list[Served]
) -> None:
    lease = 1.0
    srv = await Served.start(APP, env=redis_env(redis, lease=lease), workers=2)
    served.append(srv)
    n = 4000
    followers = [await Follower.begin([srv.url], [srv.url], n, 0.04) for _ in range(16)]
    await all_past(followers, 100)
    started = {f.stream.id: await srv.where("start", f.stream.id) for f in followers}
    resumed = {f.stream.id: await srv.where("resume", f.stream.id) for f in followers}
    # the victim: the worker reading most streams that the other worker produces
    moved = Counter(resumed[s] for s in started if started[s] != resumed[s])
    assert moved, (started, resumed)
    victim = moved.most_common(1)[0][0]
    index = next(i for i, pid in srv.workers().items() if pid == victim)
    os.kill(victim, signal.SIGKILL)
    outcomes = {f.stream.id: await f.settle() for f in followers}
    for sid, outcome in outcomes.items():
        if started[sid] == victim:  # its run died with it: ended by the other worker
            assert outcome == "producer_lost", sid
        else:  # read on the victim or not: the answer is whole
            assert outcome == "completed", sid
    assert sum(resumed[s] == victim and started[s] != victim for s in outcomes) >= 1
    # reported and replaced
    await srv.p.wait_line(rf"worker {index} pid={victim} died \(killed by SIGKILL\)")
    m = await srv.p.wait_line(rf"worker {index} started pid=(?!{victim}\b)(\d+)")
    await srv.p.wait_line(rf"\[w{index} pid={m.group(1)}\] Application startup complete")
    print(f"\noutcomes {Counter(outcomes.values())}")
    # and the server still serves
    after = await Follower.begin([srv.url], [srv.url], 300, 0)
    assert await after.settle() == "completed"


async def test_sigterm_drains_every_worker_with_1012_and_streams_end_exact_elsewhere(
    redis: RedisServer, served: list[Served]
) -> None:
    env = redis_env(redis)
    srv = await Served.start(APP, "--timeout-graceful-shutdown", "30", env=env, workers=2)
    other = await Served.start(APP, env=env)
    served += [srv, other]
    n = 2500
    followers = [await Follower.begin([srv.url], [srv.url, other.url], n, 0.04) for _ in range(8)]
    await all_past(followers, 100)
    srv.signal(signal.SIGTERM)
    outcomes = [await f.settle() for f in followers]
    assert outcomes == ["completed"] * 8  # the runs drained; the readers moved to `other`
    assert all(f.heard(1012) for f in followers if f.stream.id)
    assert await srv.wait(30) == 0
    await srv.p.wait_line("all workers stopped")
    for index in (1, 2):
        await srv.p.wait_line(rf"worker {index} pid=\d+ stopped: exit code 0")


async def test_sighup_reloads_the_origin_policy_in_every_worker_and_no_worker_ends(
    redis: RedisServer, served: list[Served], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[origins]\nallow = ["https://a.example"]\nsame_host = false\n')
    srv = await Served.start(
        APP, "--policy", str(policy), "--policy-poll", "0", env=redis_env(redis), workers=2
    )
    served.append(srv)
    pids = srv.workers()
    for index, pid in pids.items():
        await srv.p.wait_line(rf"\[w{index} pid={pid}\] .*origin policy loaded from")
    policy.write_text('[origins]\nallow = ["https://b.example"]\nsame_host = false\n')
    srv.signal(signal.SIGHUP)
    for index, pid in pids.items():
        await srv.p.wait_line(rf"\[w{index} pid={pid}\] .*origin policy reloaded from")
    assert srv.workers() == pids and "died" not in srv.log
    after = await Follower.begin([srv.url], [srv.url], 200, 0)
    assert await after.settle() == "completed"


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("redis_dies", [False, True], ids=["redis-up", "redis-stopped"])
async def test_workers_exit_by_themselves_after_a_kill_9_of_their_parent(
    redis: RedisServer, served: list[Served], redis_dies: bool
) -> None:
    # no orphaned worker keeps the port: each drains and exits (its parent's death
    # sends it SIGTERM), also when the store's Redis goes away just after
    srv = await Served.start(APP, env=redis_env(redis), workers=2)
    served.append(srv)
    followers = [await Follower.begin([srv.url], [srv.url], 300, 0) for _ in range(8)]
    assert [await f.settle() for f in followers] == ["completed"] * 8
    pids = set(srv.workers().values())
    assert len(pids) == 2
    srv.signal(signal.SIGKILL)
    if redis_dies:
        redis.stop(signal.SIGKILL)
    try:  # up to 60 s: the default grace is far shorter
        await until(lambda: all(_gone(pid) for pid in pids), 60, 0.1)
    except TimeoutError:
        left = {pid for pid in pids if not _gone(pid)}
        raise AssertionError(
            f"workers still alive after their parent's death: {left}\n{srv.log}"
        ) from None


async def test_a_task_that_swallows_its_cancel_does_not_keep_a_server_alive(
    served: list[Served],
) -> None:
    # asyncio.Runner's close waits without a bound for the tasks it cancels: serve
    # bounds it (--leftover-grace, short here), says which task did not end, and exits anyway
    srv = await Served.start("tests.integration.scale.apps:stubborn_app", "--leftover-grace", "0.5")
    served.append(srv)
    async with Client(srv.url, policy=FAST) as client:
        st = await client.start("leak", {})
        assert (await st.wait()).text == "ok"
    srv.signal(signal.SIGTERM)
    assert await srv.wait(60) == 0, srv.log
    await srv.p.wait_line(r"shutdown: 1 task\(s\) did not end 0.5s after .*stubborn", 5)
