"""An app closes its RedisStore on shutdown: the lifespan (``unbroken serve``, or
``unbroken.testing.serve``) drains the runs, then stops the store's tailer and lease
loop and closes its connections, which the redis-server sees go (redis-py's
``aclose`` left the pool the store built open: its connections stayed until the
process exited)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.store.redis import RedisStore
from unbroken.testing import serve

from ...waiting import until
from ..server.process import Process
from .conftest import ROOT, RedisServer

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10.0
UNBROKEN = Path(sys.executable).with_name("unbroken")


async def clients(probe: aioredis.Redis) -> int:
    """Connections the redis-server holds, the probe's own left out."""
    return len(await probe.client_list()) - 1


async def test_a_served_app_closes_its_redis_store_on_shutdown(
    private_redis: RedisServer,
) -> None:
    private_redis.start()
    probe = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await clients(probe) == 0
        store = RedisStore(private_redis.url, prefix=f"t{secrets.token_hex(4)}")
        app = Unbroken(store, allow_anonymous=True, shutdown_grace=1.0)

        @app.agent("two")
        async def two(req: Request, out: Output) -> None:
            await out.text("a ")
            await out.text("b")

        async with serve(app) as srv:
            async with Client(srv.url) as client:
                st = await client.start("two")
                assert (await asyncio.wait_for(st.wait(), TIMEOUT)).text == "a b"
            assert await clients(probe) >= 2  # the pool's and the tailer's
        # the lifespan closed the store: its tasks ended, Redis sees no connection
        assert store._tasks == [] and store._closed

        async def none_left() -> bool:
            return await clients(probe) == 0

        await until(none_left, TIMEOUT, 0.02)
    finally:
        await probe.aclose()


async def test_unbroken_serve_on_redis_exits_with_no_task_left_over(
    private_redis: RedisServer,
) -> None:
    """``unbroken serve`` with a RedisStore, SIGTERM after an answer: it exits 0,
    logs ``store closed``, and nothing is left for its last-resort cancel (before:
    the store's tailer and lease loop were)."""
    private_redis.start()
    probe = aioredis.Redis.from_url(private_redis.url)
    env = {
        **os.environ,
        "UNBROKEN_REDIS_URL": private_redis.url,
        "UNBROKEN_REDIS_PREFIX": f"t{secrets.token_hex(4)}",
    }
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "tests.integration.versions.rolling_app:app",
        "--port",
        "0",
        "--log-level",
        "debug",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Process(proc)
    try:
        url = (await p.wait_line(r"serving \S+ on (ws://\S+)")).group(1)
        async with Client(url) as client:
            st = await client.start("ticker", {"most": 5, "every": 5})
            answer = await asyncio.wait_for(st.wait(), TIMEOUT)
        assert answer.text == "".join(f"tok{i:06d} " for i in range(5))
        assert await clients(probe) >= 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await asyncio.wait_for(p._reader, 5)
        log = "\n".join(p.lines)
        assert "store closed" in log
        assert "left after serving" not in log, log
        assert "Traceback" not in log and "was destroyed but it is pending" not in log
        assert await clients(probe) == 0
    finally:
        await p.stop()
        await probe.aclose()
