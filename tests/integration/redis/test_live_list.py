"""``client.streams()`` on RedisStore: a principal's running streams come from the store,
so every node answers the same list (on one Redis and on a Redis Cluster)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from unbroken import AuthError
from unbroken.client import Client
from unbroken.server import Output, Principal, Request, Unbroken
from unbroken.store.redis import RedisStore
from unbroken.testing import serve

pytestmark = pytest.mark.timeout(60)
T = 20.0
TOKENS = {"alice-laptop": "alice", "alice-phone": "alice", "bob": "bob"}


async def authenticate(hello: Any, _info: Any) -> Principal:
    who = TOKENS.get(hello.token or "")
    if who is None:
        raise AuthError("unknown token")
    return Principal(who)


def node(store: RedisStore, gate: asyncio.Event) -> Unbroken:
    app = Unbroken(store=store, authenticate=authenticate)

    @app.agent("slow")
    async def slow(_req: Request, out: Output) -> None:
        await out.text("begun ")
        await out.flush()
        await gate.wait()
        await out.text("done")

    @app.agent("quick")
    async def quick(_req: Request, out: Output) -> None:
        await out.text("at once")

    return app


@pytest.mark.parametrize("backend", ["redis_server", "redis_cluster"])
async def test_every_node_lists_a_principals_running_streams_from_the_store(
    backend: str, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue(backend)
    cluster = backend == "redis_cluster"
    prefix = f"l{secrets.token_hex(4)}"
    a = RedisStore(redis.url, prefix=prefix, cluster=cluster)
    b = RedisStore(redis.url, prefix=prefix, cluster=cluster)
    gate = asyncio.Event()
    app_a = node(a, gate)
    try:
        async with (
            serve(app_a) as na,
            serve(node(b, gate)) as nb,
            Client(na.url, token="alice-laptop") as laptop,  # on node A
            Client(nb.url, token="alice-phone") as phone,  # on node B: runs nothing
            Client(nb.url, token="bob") as bob,
        ):
            done = await laptop.start("quick")
            await asyncio.wait_for(done.wait(), T)
            one = await laptop.start("slow")
            two = await laptop.start("slow")
            for st in (one, two):  # each has written its first events
                async for _ in st:
                    break
            on_b = await asyncio.wait_for(phone.streams(), T)
            on_a = await asyncio.wait_for(laptop.streams(), T)
            assert [it.stream for it in on_b] == [one.id, two.id]  # oldest first, no ended one
            assert on_a == on_b  # the same list (heads, digests) from either node
            assert {(it.agent, it.status, it.epoch) for it in on_b} == {
                ("slow", "running", one.epoch)
            }
            meta = await b.meta(one.id)
            assert meta is not None and on_b[0].head == meta.head >= 1
            assert on_b[0].cursor.digest == meta.digest.hex()
            assert await bob.streams() == []
            # node B resumes from the listed cursor: the rest of the answer, verified
            rest = await phone.resume(on_b[1].cursor)
            gate.set()
            tail = await asyncio.wait_for(rest.wait(), T)
            assert (
                tail.text == "done" and tail.status == "completed" and tail.from_seq == on_b[1].head
            )
            for st in (one, two):
                await asyncio.wait_for(st.wait(), T)
            # the end event reaches a client before the run's store.finish marks the
            # stream ended (what the list reads): wait for the runs to be over
            for run in list(app_a.hub.runs.values()):
                await asyncio.wait_for(run.done.wait(), T)
            assert await phone.streams() == [] and await laptop.streams() == []
    finally:
        await a.close()
        await b.close()
