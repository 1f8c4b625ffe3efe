"""The client over real sockets: drops, resume, backoff, typed outcomes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from unbroken import (
    AuthError,
    BackoffPolicy,
    IntegrityError,
    ReconnectExhausted,
    StreamGone,
)
from unbroken.client import Client, Stream, TextDelta
from unbroken.errors import ConnectionLost, RequestRefused
from unbroken.protocol.backoff import Backoff
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Kind, chunk, end, part_end, part_start
from unbroken.server import Principal, Unbroken
from unbroken.store.base import ReadBatch
from unbroken.store.memory import MemoryStore
from unbroken.testing import RunningServer, serve

from .conftest import abort_server_side, paced_text_app

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=50, deadline=20)


def full_run_digest(stream: str, epoch: str, n: int) -> str:
    """Digest of an uninterrupted run of the paced agent, computed offline."""
    evs = [part_start(1, "text", "text", mime="text/plain")]
    evs += [chunk(i + 2, Kind.TEXT, "text", f"tok{i:06d} ") for i in range(n)]
    evs.append(part_end(n + 2, "text"))
    evs.append(end(n + 3, "completed"))
    return chain(stream, epoch, evs)[-1].hex()


def watch_progress(client: Client) -> asyncio.Event:
    """An event set after every frame the client handles (wraps its handler)."""
    progress = asyncio.Event()
    original = client._handle

    def handle(message: str | bytes) -> bool:
        result = original(message)
        progress.set()
        return result

    client._handle = handle  # type: ignore[method-assign]
    return progress


async def cut_every(srv: RunningServer, client: Client, st: Stream, every: int, cuts: int) -> int:
    """Abort the server side each time the stream advanced ``every`` events, and
    wait for the client to resume before the next cut."""
    progress = watch_progress(client)
    events = client.connection_events()
    done = 0
    while done < cuts and not st.done:
        target = (done + 1) * every
        while not st.done:
            cur = st.cursor
            if cur is not None and cur.seq >= target:
                break
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
        if st.done or abort_server_side(srv) == 0:
            break
        done += 1
        while True:  # until the client has resumed on a new connection
            ev = await asyncio.wait_for(anext(events), 10)
            if ev.kind == "resumed":
                break
    return done


async def test_twenty_server_side_aborts_in_one_stream_deliver_exact_bytes() -> None:
    app, expected, calls = paced_text_app(tokens=40000, pause_every=20)
    async with serve(app) as srv, Client(srv.url, policy=FAST, seed=7) as client:
        st = await client.start("count", {"n": 40000})
        cutter = asyncio.ensure_future(cut_every(srv, client, st, 1500, 20))
        seen: set[int] = set()
        async for ev in st:
            assert ev.seq not in seen, f"duplicate event {ev.seq}"
            seen.add(ev.seq)
        answer = await st.wait()
        cuts = await asyncio.wait_for(cutter, 10)
    assert cuts == 20
    assert seen == set(range(1, 40004))
    assert answer.text == expected(40000)
    assert calls["count"] == 1
    assert answer.digest == full_run_digest(st.id, app.store.epoch, 40000)
    drops = [e for e in client.history if e.kind == "disconnected"]
    resumed = [e for e in client.history if e.kind == "resumed"]
    assert len(drops) >= 20 and len(resumed) >= 20


async def test_many_streams_on_one_connection_all_resume_exact() -> None:
    app, expected, _ = paced_text_app(tokens=3000, pause_every=10)
    async with serve(app) as srv, Client(srv.url, policy=FAST, seed=3) as client:
        streams = [await client.start("count", {"n": 3000}) for _ in range(20)]
        first_events = [asyncio.ensure_future(anext(aiter(s))) for s in streams]
        await asyncio.wait_for(asyncio.gather(*first_events), 10)
        assert abort_server_side(srv) == 1
        results = await asyncio.wait_for(asyncio.gather(*(s.wait() for s in streams)), 30)
    assert all(r.text == expected(3000) for r in results)
    assert len({s.id for s in streams}) == 20


async def test_start_answer_lost_in_a_drop_is_retried_with_same_request_id() -> None:
    app, expected, calls = paced_text_app(tokens=500)
    async with serve(app) as srv, Client(srv.url, policy=FAST) as client:
        original = client._handle
        dropped = asyncio.Event()
        cut: list[object] = []  # the connection that lost it

        def lose_first_started(message: str | bytes) -> bool:
            # v1: a JSON text; v2: a MessagePack array whose tag 3 is started
            started = (
                message[:2] == b"\x95\x03"
                if isinstance(message, bytes)
                else '"t":"started"' in message
            )
            if not dropped.is_set() and started:
                dropped.set()
                assert client._ws is not None
                cut.append(client._ws)
                client._ws.transport.abort()
                return False  # the answer never reached the client
            if cut and client._ws is cut[0]:
                return False  # nor what followed it on that connection (its events)
            return original(message)

        client._handle = lose_first_started  # type: ignore[method-assign]
        st = await asyncio.wait_for(client.start("count", {"n": 500}, req="req-1"), 10)
        answer = await asyncio.wait_for(st.wait(), 10)
    assert dropped.is_set()
    assert calls["count"] == 1, "a retried start must not run the agent twice"
    assert answer.text == expected(500)


async def test_backoff_schedule_matches_policy_then_reconnect_exhausted() -> None:
    app, _, _ = paced_text_app(tokens=10)
    policy = BackoffPolicy(base=0.02, cap=0.1, max_attempts=6, deadline=30)
    async with serve(app) as srv:
        url = srv.url
        client = Client(url, policy=policy, seed=42)
        await client.__aenter__()
    # the server is gone: every reconnect attempt is refused
    try:
        with pytest.raises(ReconnectExhausted) as info:
            await asyncio.wait_for(client.start("count"), 10)
    finally:
        await client.close()
    assert info.value.attempts == 6
    assert client.backoff is not None
    reference = Backoff(policy, 0.0, __import__("random").Random(42))
    expected = [reference.next_delay(0.0) for _ in range(6)]
    assert client.backoff.schedule == expected
    assert client.backoff.schedule[0] == 0.0
    for k, d in enumerate(client.backoff.schedule[1:], start=2):
        assert 0.0 <= d <= policy.ceiling(k)
    kinds = [e.kind for e in client.history]
    assert kinds.count("reconnecting") == 6 and kinds[-1] == "exhausted"


async def test_restarted_server_with_new_memory_store_answers_gone_epoch() -> None:
    gate = asyncio.Event()
    app1 = Unbroken(allow_anonymous=True, shutdown_grace=0.1)

    @app1.agent("wait")
    async def wait1(req, out):  # type: ignore[no-untyped-def]
        await out.text("first ")
        await gate.wait()

    app2 = Unbroken(allow_anonymous=True)
    app2.agent("wait")(wait1)
    async with serve(app1) as srv1:
        port = srv1.port
        client = Client(srv1.url, policy=FAST)
        await client.__aenter__()
        st = await client.start("wait")
        first = await asyncio.wait_for(anext(aiter(st)), 5)
        assert first.seq == 1
    try:
        async with serve(app2, port=port):
            with pytest.raises(StreamGone) as info:
                await asyncio.wait_for(st.wait(), 10)
    finally:
        gate.set()
        await client.close()
    assert info.value.reason == "epoch"
    assert any(e.kind == "gone" and e.reason == "epoch" for e in client.history)


class CorruptingStore(MemoryStore):
    """A memory log whose reads flip one token: a corrupted store or read path.
    (``read_nowait`` is the memory log's read; ``read`` calls it too.)"""

    def read_nowait(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        batch = super().read_nowait(stream, after, max_bytes)
        if batch is not None and b"tok000058" in batch.items:
            batch = dataclasses.replace(
                batch, items=batch.items.replace(b"tok000058", b"tok000059")
            )
        return batch


async def test_corrupted_event_raises_integrity_error_at_that_event() -> None:
    app, _, _ = paced_text_app(tokens=100, frame_cap=16, store=CorruptingStore())
    received: list[int] = []
    async with serve(app) as srv, Client(srv.url, policy=FAST) as client:
        st = await client.start("count", {"n": 100})
        with pytest.raises(IntegrityError) as info:
            async for ev in st:
                received.append(ev.seq)
    # tok000058 is event 60 (event 1 opens the part); frames hold one event here
    assert info.value.seq == 60
    assert info.value.stream == st.id
    assert received == list(range(1, 60)), "nothing at or after the bad event is yielded"


async def test_cursor_saved_by_one_client_is_resumed_exactly_by_another() -> None:
    app, expected, _ = paced_text_app(tokens=2000)
    async with serve(app) as srv:
        async with Client(srv.url, policy=FAST) as c1:
            st1 = await c1.start("count", {"n": 2000})
            got = []
            async for ev in st1:
                if isinstance(ev, TextDelta):
                    got.append(ev.text)
                if len(got) == 300:
                    break
            cursor = st1.cursor
            stream_id = st1.id
        assert cursor is not None
        async with Client(srv.url, policy=FAST) as c2:
            st2 = await c2.resume(cursor)
            rest = await asyncio.wait_for(st2.wait(), 10)
    assert "".join(got) + rest.text == expected(2000)
    assert rest.from_seq == cursor.seq and not rest.complete
    assert rest.digest == full_run_digest(stream_id, app.store.epoch, 2000)


async def test_auth_refused_is_fatal_without_retries() -> None:
    async def authenticate(hello, info):  # type: ignore[no-untyped-def]
        if hello.token != "good":
            raise AuthError("token refused")
        return Principal("alice")

    app = Unbroken(authenticate=authenticate)
    async with serve(app) as srv:
        client = Client(srv.url, token="bad", policy=FAST)
        with pytest.raises(AuthError):
            await asyncio.wait_for(client.__aenter__(), 5)
        await client.close()
        assert not [e for e in client.history if e.kind == "reconnecting"]
        calls = 0

        def provider() -> str:
            nonlocal calls
            calls += 1
            return "good"

        async with Client(srv.url, token=provider, policy=FAST) as ok:
            assert ok._ready.is_set()
        assert calls == 1


async def test_should_retry_hook_can_make_a_drop_fatal() -> None:
    app, _, _ = paced_text_app(tokens=100000, pause_every=5)
    async with serve(app) as srv:
        client = Client(srv.url, policy=FAST, should_retry=lambda exc: False)
        await client.__aenter__()
        st = await client.start("count", {"n": 100000})
        await asyncio.wait_for(anext(aiter(st)), 5)
        abort_server_side(srv)
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(st.wait(), 5)
        await client.close()
    assert not [e for e in client.history if e.kind == "reconnecting"]


async def test_cancel_stops_the_agent_and_keeps_the_partial_answer() -> None:
    app, _, _ = paced_text_app(tokens=10**7, pause_every=5)
    async with serve(app) as srv, Client(srv.url, policy=FAST) as client:
        st = await client.start("count", {"n": 10**7})
        async for ev in st:
            if ev.seq >= 50:
                await st.cancel()
                await st.cancel()  # idempotent
                break
        answer = await asyncio.wait_for(st.wait(), 10)
    assert answer.status == "cancelled"
    assert answer.text.startswith("tok000000 tok000001 ")
    assert answer.parts["text"].ended


async def test_unknown_agent_is_refused_with_a_clear_error() -> None:
    app, _, _ = paced_text_app()
    async with serve(app) as srv, Client(srv.url, policy=FAST) as client:
        with pytest.raises(RequestRefused) as info:
            await asyncio.wait_for(client.start("nope"), 5)
    assert info.value.code == "unknown_agent"
    assert "'nope'" in str(info.value)
    assert "count" not in str(info.value)  # the agents are listed only when exposed


async def test_idle_connection_is_not_declared_dead_by_the_silence_detector() -> None:
    app, expected, _ = paced_text_app(tokens=50, heartbeat=0.05)
    async with serve(app) as srv, Client(srv.url, policy=FAST, ping_every=0) as client:
        # no stream: the server sends no hb, so the link is quiet for 0.6 s, four
        # times the silence limit (3 x 50 ms); the quiet period is the behaviour
        # under test, not a synchronisation
        await asyncio.sleep(0.6)
        assert not [e for e in client.history if e.kind == "disconnected"]
        st = await client.start("count", {"n": 50})
        answer = await asyncio.wait_for(st.wait(), 10)
    assert answer.text == expected(50)
