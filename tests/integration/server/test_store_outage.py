"""A stream whose log is unreachable (its Redis Cluster master died) fails alone: its
resume or read answers an ``error`` frame for that stream, and the other streams on
the same connection go on (tests/integration/redis/test_cluster.py does it on a real
cluster, full tier)."""

from __future__ import annotations

import asyncio

import pytest

from unbroken import BackoffPolicy
from unbroken.client import Client, Stream
from unbroken.errors import RequestRefused, StoreUnavailable
from unbroken.store.base import ReadBatch, StreamMeta
from unbroken.store.memory import MemoryStore

from .conftest import TIMEOUT, ServeKit

pytestmark = pytest.mark.timeout(30)
FAST = BackoffPolicy(base=0.02, cap=0.2, max_attempts=20, deadline=20)


class PartlyDown(MemoryStore):
    """A log whose streams in ``down`` are unreachable, as the store reports it."""

    read_nowait = None  # every read goes through ``read`` (as on Redis)

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def _check(self, stream: str) -> None:
        if stream in self.down:
            raise StoreUnavailable(f"stream {stream}: its master is unreachable")

    async def meta(self, stream: str) -> StreamMeta | None:
        self._check(stream)
        return await super().meta(stream)

    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        self._check(stream)
        return MemoryStore.read_nowait(self, stream, after, max_bytes)


async def first_text(st: Stream) -> None:
    async for _ in st:
        return


async def ends_refused(st: Stream) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        async for _ in st:
            pass
        await st.wait()
    return caught.value


async def test_a_resume_whose_log_is_unreachable_is_refused_alone(served: ServeKit) -> None:
    store = PartlyDown()
    kit, srv = await served(store=store)
    async with Client([srv.url], policy=FAST) as first:
        a = await first.start("forever", "ga")
        b = await first.start("forever", "gb")
        await asyncio.gather(first_text(a), first_text(b))
        ca, cb = a.cursor, b.cursor
    assert ca is not None and cb is not None
    store.down.add(a.id)
    async with Client([srv.url], policy=FAST) as client:
        rb = await client.resume(cb)
        with pytest.raises(RequestRefused) as caught:
            await client.resume(ca)
        assert caught.value.code == "internal" and "unreachable" in str(caught.value)
        kit.gates["gb"].set()  # the same connection goes on
        async for _ in rb:
            pass
        answer = await asyncio.wait_for(rb.wait(), TIMEOUT)
        assert answer.status == "completed" and answer.text == "started done"


async def test_a_read_whose_log_is_unreachable_fails_that_stream_alone(served: ServeKit) -> None:
    store = PartlyDown()
    kit, srv = await served(store=store)
    async with Client([srv.url], policy=FAST) as client:
        a = await client.start("forever", "ga")
        b = await client.start("forever", "gb")
        await asyncio.gather(first_text(a), first_text(b))
        store.down.add(a.id)
        kit.gates["ga"].set()  # its next event is read from the log: unreachable
        err = await asyncio.wait_for(ends_refused(a), TIMEOUT)
        assert err.code == "internal" and "unreachable" in str(err)
        kit.gates["gb"].set()
        async for _ in b:
            pass
        answer = await asyncio.wait_for(b.wait(), TIMEOUT)
        assert answer.status == "completed" and answer.text == "started done"
