"""Redis round trips and errors in /metrics, against a private redis-server."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from unbroken.client import Client
from unbroken.errors import StoreUnavailable
from unbroken.server import Output, Request, Unbroken
from unbroken.store.redis import RedisStore
from unbroken.testing import serve

from ..redis.conftest import NO_REDIS, REDIS, RedisServer
from .conftest import TIMEOUT, scrape, value


async def test_redis_round_trips_and_errors_are_counted(tmp_path: Path) -> None:
    if REDIS is None:
        pytest.skip(NO_REDIS)
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        store = RedisStore(redis.url, outage_timeout=0.5)
        app = Unbroken(store, allow_anonymous=True, metrics_path="/metrics")

        @app.agent("count")
        async def count(req: Request, out: Output) -> None:
            for i in range(50):
                await out.text(f"tok{i} ")

        async with serve(app) as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
            url = f"{srv.http}/metrics"
            before = await scrape(http, url)
            async with Client(srv.url) as client:
                st = await client.start("count")
                answer = await asyncio.wait_for(st.wait(), TIMEOUT)
            assert answer.complete
            after = await scrape(http, url)
            trips = value(after, "unbroken_redis_round_trips_total")
            # create, appends, finish, reads: at least a few round trips, no error
            assert trips - value(before, "unbroken_redis_round_trips_total") >= 3
            assert value(after, "unbroken_redis_errors_total") == 0
            redis.stop(signal.SIGKILL)
            with pytest.raises(StoreUnavailable):
                await store.meta(st.id)
            down = await scrape(http, url)
            assert value(down, "unbroken_redis_errors_total") >= 1
            await store.close()
    finally:
        redis.stop(signal.SIGKILL)
