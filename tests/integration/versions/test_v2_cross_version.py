"""The log is version-neutral: a stream begun by a v1 client is resumed by a v2 client,
and the reverse, on one server speaking both, with MemoryStore and RedisStore, at
several points of the stream (before any event, after part_start, mid-part, on the
last token, after part_end, and once the stream has completed). The resumed answer is
exact and its final digest is the chain of the whole answer, whatever the versions."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from unbroken.client import Client, Stream
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start
from unbroken.server import Output, Request, Unbroken
from unbroken.store.memory import MemoryStore
from unbroken.store.redis import RedisStore
from unbroken.testing import RunningServer, serve

from ..redis.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)
N = 12
TIMEOUT = 10.0


def expected_events() -> list[Event]:
    evs = [part_start(1, "text", "text", mime="text/plain")]
    evs += [chunk(i + 2, Kind.TEXT, "text", f"tok{i:03d} ") for i in range(N)]
    return [*evs, part_end(N + 2, "text"), end(N + 3, "completed")]


class Gated:
    """An app whose agent writes every event but ``end`` then waits for its gate."""

    def __init__(self, store: MemoryStore | RedisStore) -> None:
        self.app = Unbroken(store, allow_anonymous=True, protocols=("v2", "v1"))
        self.gates: dict[str, asyncio.Event] = {}

        @self.app.agent("count")
        async def count(req: Request, out: Output) -> None:
            gate = self.gates.setdefault(str(req.input), asyncio.Event())
            for i in range(N):
                await out.text(f"tok{i:03d} ")
            await out.end_part("text")
            await out.flush()
            await gate.wait()


@pytest.fixture(params=["memory", "redis"])
async def served(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Gated, RunningServer]]:
    store: MemoryStore | RedisStore
    if request.param == "memory":
        store = MemoryStore()
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(redis.url, prefix=f"xv{secrets.token_hex(4)}")
    kit = Gated(store)
    async with serve(kit.app) as srv:
        yield kit, srv


async def _read_until(st: Stream, seq: int) -> None:
    if seq == 0:
        return
    async for _ in st:
        cur = st.cursor
        if cur is not None and cur.seq >= seq:
            return


async def _completed(store: MemoryStore | RedisStore, stream: str) -> None:
    """Until the log says ``stream`` ended (woken by the log's change notices)."""
    changed = asyncio.Event()
    off = store.subscribe(stream, lambda *_: changed.set())
    try:
        while True:
            changed.clear()
            meta = await store.meta(stream)
            if meta is not None and meta.status != "running":
                return
            await changed.wait()
    finally:
        off()


#: where the first client stops: before any event, after part_start, mid-part, on the
#: last token, after part_end; "done": mid-part, and the stream completes before the resume
#: (mid-part runs in the default tier, the other points with ``-m full``)
POINTS = [
    pytest.param(p, id=f"at-{p}", marks=() if p == N // 2 else pytest.mark.full)
    for p in (0, 1, N // 2, N + 1, N + 2, "done")
]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize(("first", "second"), [("v1", "v2"), ("v2", "v1")])
async def test_a_stream_begun_on_one_version_resumes_exactly_on_the_other(
    served: tuple[Gated, RunningServer], first: str, second: str, point: int | str
) -> None:
    kit, srv = served
    key = secrets.token_hex(4)
    gate = kit.gates.setdefault(key, asyncio.Event())
    stop = N // 2 if point == "done" else int(point)
    async with asyncio.timeout(TIMEOUT):
        async with Client(srv.url, protocols=(first,)) as a:
            st = await a.start("count", key)
            await _read_until(st, stop)
            cursor = st.cursor
            assert a.version == first
        assert cursor is not None and cursor.seq == stop
        if point == "done":
            gate.set()
            await _completed(kit.app.store, cursor.stream)
        async with Client(srv.url, protocols=(second,)) as b:
            st2 = await b.resume(cursor)
            assert b.version == second
            gate.set()
            answer = await st2.wait()
    evs = expected_events()
    digests = chain(cursor.stream, cursor.epoch, evs)
    if stop:
        assert cursor.digest == digests[stop - 1].hex()  # the cursor is version-neutral
    assert answer.status == "completed"
    assert answer.text == "".join(e.body for e in evs if e.seq > stop)
    assert answer.digest == digests[-1].hex()
