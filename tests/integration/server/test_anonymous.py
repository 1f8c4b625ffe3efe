"""Anonymous clients share a principal id but not their request ids (issue 13 item 10):
a second anonymous client sending the same ``req`` got the first one's stream and could
cancel it. Each anonymous client now has a scope of its own, derived from a client key
the server issues; a client that presents its key again keeps its request ids, so a
start retried after a drop still returns the same stream."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from unbroken.errors import Forbidden
from unbroken.protocol.client_session import ClientSession
from unbroken.protocol.codes import ErrorCode
from unbroken.protocol.frames import Cancel, Start, encode
from unbroken.server import Output, Request
from unbroken.server.agent import anonymous_principal
from unbroken.server.hub import Hub
from unbroken.store.base import StreamLog
from unbroken.store.memory import MemoryStore

from ..redis.conftest import REDIS, RedisServer
from .wire import Wire, text_of

Served = Any


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StreamLog]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if REDIS is None:
        pytest.skip("redis-server not installed")
    from unbroken.store.redis import RedisStore

    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    s = RedisStore(srv.url, prefix=f"a{secrets.token_hex(4)}")
    try:
        yield s
    finally:
        await s.close()
        srv.stop()


def waiting_hub(store: StreamLog) -> tuple[Hub, Callable[[], None]]:
    """A hub whose agent ``wait`` runs until released."""
    gate = asyncio.Event()

    async def wait(_req: Request, out: Output) -> None:
        await out.text("waiting ")
        await gate.wait()

    return Hub(store, {"wait": (wait, None)}), gate.set


async def test_two_anonymous_clients_with_the_same_req_get_different_streams(
    store: StreamLog,
) -> None:
    hub, release = waiting_hub(store)
    first, key = anonymous_principal(None)
    second, other_key = anonymous_principal(None)
    assert key != other_key and first.id == second.id == "anonymous"
    try:
        a = await hub.start(first, "req-0001", "wait", None)
        b = await hub.start(second, "req-0001", "wait", None)
        assert a.created and b.created and a.stream != b.stream
        # the second cannot cancel the first (it does not even learn its stream id)
        with pytest.raises(Forbidden):
            await hub.cancel(second, a.stream)
        assert await hub.cancel(second, b.stream)
        assert a.stream in hub.runs and not hub.runs[a.stream].task.done()  # type: ignore[union-attr]
        # the first client, back on a new connection with its key: the same stream
        again, same_key = anonymous_principal(key)
        assert same_key == key
        retried = await hub.start(again, "req-0001", "wait", None)
        assert (retried.stream, retried.created) == (a.stream, False)
        assert await hub.cancel(again, a.stream)
    finally:
        release()
        await hub.shutdown(1.0)


def test_a_malformed_client_key_gets_a_fresh_one() -> None:
    for bad in ("", "short", "x" * 65, "has space in it but is long enough", "é" * 30):
        p, key = anonymous_principal(bad)
        assert key != bad and len(key) >= 22
        assert p.scope == anonymous_principal(key)[0].scope  # the fresh key's scope
        assert key not in p.scope  # the scope is a hash: the key is never kept
    # two clients presenting the same malformed key do not end up sharing a scope
    p1, k1 = anonymous_principal("a" * 10)
    p2, k2 = anonymous_principal("a" * 10)
    assert k1 != k2 and p1.scope != p2.scope


async def test_over_the_wire_two_anonymous_clients_same_req_different_streams(
    served: Served,
) -> None:
    kit, srv = await served()
    # the first client's start reaches the server; its answer is lost in a drop
    cs = ClientSession()
    first = await Wire.open(srv.url, session=cs)
    cs.start("req-0001", "forever", "g")
    await first.send_raw(encode(Start("req-0001", "forever", "g")).decode())
    await kit.reached["g"].wait()
    first.abort()
    # a second anonymous client sends the same request id: a run and a stream of its own
    second = await Wire.open(srv.url)
    b = await second.start("req-0001", "forever", "g2")
    assert kit.calls["req-0001"] == 2
    # the first client comes back with its key: its retried start is its own stream
    again = await Wire.open(srv.url, session=cs)  # after_welcome resends the start
    await again.until(lambda _o: "req-0001" in again.started)
    a = again.started["req-0001"]
    assert a != b and kit.calls["req-0001"] == 2  # the agent ran once per client
    # the second client cannot cancel the first client's stream, even knowing its id
    await second.send(Cancel(a))
    await second.until(lambda _o: any(e.stream == a for e in second.errors))
    assert [e.code for e in second.errors if e.stream == a] == [ErrorCode.FORBIDDEN]
    assert (await kit.meta(a)).status == "running"  # type: ignore[union-attr]
    kit.gates["g"].set()
    kit.gates["g2"].set()
    assert text_of(await again.read_to_end(a)) == "started done"
    assert text_of(await second.read_to_end(b)) == "started done"
    for w in (again, second):
        await w.close()
    await kit.wait_idle()
