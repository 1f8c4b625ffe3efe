"""``max_total_bytes`` on a RedisStore holds for every append, not only at a start
(issue 16): runs admitted while the log had room cannot grow it without bound. A
node caps what its own running producers hold; new streams are refused first."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from unbroken.errors import LogFull
from unbroken.protocol.events import Kind
from unbroken.server.admission import AdmissionLimits
from unbroken.server.agent import Output, Principal, Request
from unbroken.server.hub import Hub
from unbroken.server.producer import Producer
from unbroken.store.base import Retention
from unbroken.store.redis import RedisStore

from .conftest import RedisServer

pytestmark = pytest.mark.timeout(60)

CAP = 200_000


async def test_appends_stop_at_the_cap_and_new_streams_are_refused_first(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(
        redis_server.url,
        prefix=f"t{secrets.token_hex(4)}",
        retention=Retention(max_total_bytes=CAP, retry_after=0.5),
    )
    try:
        a = await store.create("o", "a", 0.0)
        b = await store.create("o", "b", 0.0)
        pa = Producer(store, a.stream, a.epoch, a.producer)
        pb = Producer(store, b.stream, b.epoch, b.producer)
        refused_start = False
        with pytest.raises(LogFull) as info:
            for i in range(1000):  # ~1 MB offered: five times the cap
                for p in (pa, pb):
                    p.add_chunk(Kind.TEXT, "t", f"{i:07d} " * 64)
                    await p.flush()
                if not refused_start and store.held_bytes > CAP - CAP // 16:
                    with pytest.raises(LogFull):  # new work is refused before appends fail
                        await store.create("o", "c", 0.0)
                    refused_start = True
        assert info.value.retry_after == 0.5
        assert refused_start
        assert store.held_bytes <= CAP
        # the end event always fits: the run ends failed log_full (as the hub ends
        # it), its bytes are released
        failed = pa if pa.error is not None else pb
        other = pb if failed is pa else pa
        await failed.finish("failed", f"log_full: {failed.error}", 1.0)
        meta = await store.meta(failed.stream)
        assert meta is not None and meta.status == "failed"
        assert meta.error.startswith("log_full: stream log is full")
        assert meta.nbytes <= CAP
        # room again: the other stream goes on, a new stream is admitted
        other.add_chunk(Kind.TEXT, "t", "more")
        await other.flush()
        c = await store.create("o", "c", 2.0)
        assert c.created
        # a repeated start is answered even when full
        assert (await store.create("o", "a", 3.0)).stream == a.stream
    finally:
        await store.close()


async def test_runs_on_a_full_redis_log_end_log_full_and_none_grows_past_the_cap(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(
        redis_server.url,
        prefix=f"t{secrets.token_hex(4)}",
        retention=Retention(max_total_bytes=CAP),
    )

    go = asyncio.Event()

    async def flood(req: Request, out: Output) -> None:
        await go.wait()  # all started first: a full log refuses new streams
        while True:  # never ends by itself
            await out.text("x" * 1000)
            await asyncio.sleep(0)

    hub = Hub(store, {"flood": (flood, None)}, admission=AdmissionLimits.unlimited())
    try:
        created = [await hub.start(Principal(f"p{i}"), "r", "flood", None) for i in range(6)]
        go.set()
        peak = 0
        async with asyncio.timeout(30):
            while hub.runs:
                peak = max(peak, store.held_bytes)
                await asyncio.sleep(0.005)
        assert peak <= CAP
        for c in created:
            meta = await store.meta(c.stream)
            assert meta is not None
            assert (meta.status, meta.error.split(":")[0]) == ("failed", "log_full")
        assert store.held_bytes == 0  # ended streams no longer count
    finally:
        await hub.shutdown(1.0)
        await store.close()
