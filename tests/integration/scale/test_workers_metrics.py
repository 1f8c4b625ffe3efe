"""``unbroken serve --workers 2``: one scrape of /metrics sums every worker, whichever
worker answers it, and a worker killed -9 leaves its counters in the sum."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from unbroken.client import Client

from ..redis.conftest import RedisServer
from .conftest import FAST, Served, redis_env

pytestmark = pytest.mark.timeout(90)
APP = "examples.redis_app:app"
STREAMS = 16
TOKENS = 40


def scrape(port: int) -> tuple[int, dict[str, float]]:
    """One scrape on a new connection: the answering worker's pid and the samples
    (``name{label="v",...}`` keys)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        pid = int(resp.headers["x-unbroken-worker"])
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return pid, out


def totals(samples: dict[str, float]) -> dict[str, float]:
    keys = (
        "unbroken_connections_total",
        'unbroken_attachments_total{kind="start"}',
        'unbroken_attachments_total{kind="resume"}',
        "unbroken_events_in_total",
        "unbroken_events_out_total",
        "unbroken_streams_live",
        "unbroken_attachments_open",
    )
    return {k: samples.get(k, -1.0) for k in keys}


async def test_one_scrape_sums_every_worker_and_a_dead_workers_counters_stay(
    redis: RedisServer, served: list[Served]
) -> None:
    srv = await Served.start(APP, env=redis_env(redis), workers=2)
    served.append(srv)
    ids = []
    for _ in range(STREAMS):  # a connection each: SO_REUSEPORT spreads them
        async with Client([srv.url], policy=FAST) as client:
            st = await client.start("count", {"n": TOKENS})
            async for _ in st:
                pass
            assert (await st.wait()).complete
            ids.append(st.id)
    pids = set(srv.workers().values())
    started = [await srv.where("start", s) for s in ids]
    # both workers served streams (all 16 on one: odds 2^-15)
    assert set(started) == pids, started
    events = TOKENS + 3  # part_start, the tokens, part_end, end
    expected = {
        "unbroken_connections_total": STREAMS,
        'unbroken_attachments_total{kind="start"}': STREAMS,
        'unbroken_attachments_total{kind="resume"}': 0,
        "unbroken_events_in_total": STREAMS * events,
        "unbroken_events_out_total": STREAMS * events,
        "unbroken_streams_live": 0,
        "unbroken_attachments_open": 0,
    }
    # a run's end is counted as its task ends, maybe just after its client saw it:
    # wait for the figures to settle (a scrape reaching one worker never would)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (got := totals((await asyncio.to_thread(scrape, srv.port))[1])) != expected:
        assert loop.time() < deadline, got
        await asyncio.sleep(0.05)
    answered: set[int] = set()
    for _ in range(60):  # every scrape is the sum, whichever worker answers it
        pid, samples = await asyncio.to_thread(scrape, srv.port)
        assert totals(samples) == expected, (pid, samples)
        answered.add(pid)
        if answered == pids:
            break
    assert answered == pids  # (60 scrapes all on one worker: odds 2^-59)

    victim = started[0]
    index = next(i for i, p in srv.workers().items() if p == victim)
    os.kill(victim, signal.SIGKILL)
    await srv.p.wait_line(rf"worker {index} pid={victim} died \(killed by SIGKILL\)")
    m = await srv.p.wait_line(rf"worker {index} started pid=(?!{victim}\b)(\d+)")
    await srv.p.wait_line(rf"\[w{index} pid={m.group(1)}\] Application startup complete")
    now = {int(m.group(1))} | (pids - {victim})
    answered = set()
    for _ in range(60):  # the dead worker's counters stay; its replacement adds none
        pid, samples = await asyncio.to_thread(scrape, srv.port)
        assert totals(samples) == expected, (pid, samples)
        answered.add(pid)
        if answered == now:
            break
    assert answered == now
