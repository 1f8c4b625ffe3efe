"""Two nodes start the same request at once (a client that sent its start again to
another node): one stream, one run. A real redis-server; node A is held between its
claim of the req and writing the stream's meta."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from unbroken.errors import StoreUnavailable
from unbroken.store.redis import RedisStore

from .conftest import RedisServer

pytestmark = pytest.mark.timeout(30)


def hold_the_meta(store: RedisStore, claimed: asyncio.Event, go: asyncio.Event) -> None:
    """``store``'s first pipeline that writes a stream's meta waits for ``go`` (after
    setting ``claimed``): its create has claimed the req and not yet made the stream."""
    real_pipeline = store._r.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            writes_meta = any(c[0][0] == "HSET" for c in pipe.command_stack)
            if writes_meta and not claimed.is_set():
                claimed.set()
                await go.wait()
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    store._r.pipeline = pipeline


async def test_a_start_made_on_two_nodes_at_once_makes_one_stream(
    redis_server: RedisServer,
) -> None:
    """Before: node B found A's claim without its meta, took it for a stream that
    expired, deleted it and made a second stream of the same req (two runs)."""
    prefix = f"t{secrets.token_hex(4)}"
    a = RedisStore(redis_server.url, prefix=prefix)
    b = RedisStore(redis_server.url, prefix=prefix)
    claimed, go = asyncio.Event(), asyncio.Event()
    hold_the_meta(a, claimed, go)
    try:
        creating = asyncio.create_task(a.create("o", "req-twice", 0.0))
        await asyncio.wait_for(claimed.wait(), 10)
        with pytest.raises(StoreUnavailable, match="being created"):
            await b.create("o", "req-twice", 0.0)  # its client starts it again
        go.set()
        made = await asyncio.wait_for(creating, 10)
        assert made.created
        again = await b.create("o", "req-twice", 0.0)
        assert (again.stream, again.created) == (made.stream, False)
        found = await b.find("o", "req-twice")
        assert found is not None and found.stream == made.stream
    finally:
        go.set()
        await a.close()
        await b.close()


async def test_a_claim_left_by_a_creator_that_died_is_dropped_once_old(
    redis_server: RedisServer,
) -> None:
    """A claim with no stream, older than the creators' longest wait, was left by a
    node that died between the claim and the meta: a start makes the stream afresh
    (a younger one is a create under way: the start is told to come back)."""
    store = RedisStore(redis_server.url, prefix=f"t{secrets.token_hex(4)}", outage_timeout=1.0)
    try:
        rkey = store._req_key("o", "req-ghost")
        keep = store._running_keep_ms()
        await store._r.set(rkey, b"ghost-young", px=keep - 1000)  # claimed 1 s ago
        with pytest.raises(StoreUnavailable):
            await store.create("o", "req-ghost", 0.0)
        await store._r.set(rkey, b"ghost-old", px=keep - 7000)  # 7 s > 1 s + 5 s
        made = await store.create("o", "req-ghost", 0.0)
        assert made.created and made.stream != "ghost-old"
        assert await store._r.get(rkey) == made.stream.encode()
    finally:
        await store.close()
