"""Bad input, row by row, for real over a socket. Each row gets its documented error
or close code (unbroken/protocol/codes.py, docs/reference/server.md), is logged, and neither
crashes the server nor disturbs a healthy stream running beside it on another
connection, which must still finish exact."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect

from unbroken.protocol.client_session import Cursor
from unbroken.protocol.codes import CloseCode, ErrorCode
from unbroken.protocol.events import Kind, chunk, end, part_end, part_start
from unbroken.protocol.frames import Ack, Cancel, Start, encode
from unbroken.server.admission import AdmissionLimits
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore
from unbroken.testing import RunningServer, serve

from .conftest import Kit, authenticate, make_kit, token
from .wire import Closed, Wire, assert_exact, rechain, text_of

N = 2000
MAX_FRAME = 64 * 1024
# finished streams are kept an hour: a row reads its streams after they end (the
# burst's hundreds, on a loaded machine seconds later), and the one row that needs a
# stream expired moves the store's sweep past this (no wait on the sweeper's timing)
TTL = 3600.0


@dataclass
class Env:
    kit: Kit
    srv: RunningServer
    healthy: Wire
    sid: str
    caplog: pytest.LogCaptureFixture
    wires: list[Wire] = field(default_factory=list)

    async def conn(self, token: str | None = "alice-token", hello: bool = True) -> Wire:
        w = await Wire.open(self.srv.url, token=token, hello=hello)
        self.wires.append(w)
        return w

    def logged(self, *parts: str) -> bool:
        return any(
            all(p in r.getMessage() for p in parts)
            for r in self.caplog.records
            if r.name.startswith("unbroken")
        )

    async def wait_logged(self, *parts: str, limit: float = 10.0) -> None:
        """Until a line holding ``parts`` is logged (the close line is written after
        the peer saw the close: polled under a deadline)."""
        async with asyncio.timeout(limit):
            while not self.logged(*parts):  # noqa: ASYNC110 - polled under a timeout
                await asyncio.sleep(0.01)


def expected_healthy(n: int) -> list:  # type: ignore[type-arg]
    evs = [part_start(1, "text", "text", mime="text/plain")]
    evs += [chunk(i + 2, Kind.TEXT, "text", token(i)) for i in range(n)]
    evs += [part_end(n + 2, "text"), end(n + 3, "completed")]
    return evs


@pytest.fixture
async def env(caplog_info: pytest.LogCaptureFixture) -> AsyncIterator[Env]:
    kit = make_kit(
        authenticate=authenticate,
        store=MemoryStore(Retention(ttl=TTL)),
        max_frame=MAX_FRAME,
        max_chunk=16 * 1024,
        frame_cap=32 * 1024,
        # the burst test counts started + rate_limited: on a loaded machine the
        # loop-lag gate (a load heuristic, tested in its own suite) refused some too
        admission=AdmissionLimits(max_loop_lag=None),
    )
    # uvicorn's own limit above the app's, so the app's check is the one that fires
    async with serve(kit.app, ws_max_size=1024 * 1024) as srv:
        healthy = await Wire.open(srv.url, token="alice-token")
        sid = await healthy.start("healthy", "count", {"n": N, "pause_at": N // 2, "gate": "h"})
        await kit.reached["h"].wait()
        e = Env(kit, srv, healthy, sid, caplog_info)
        yield e
        # the healthy stream was running during the bad input; it finishes exact
        assert (await kit.meta(sid)).status == "running"  # type: ignore[union-attr]
        kit.gates["h"].set()
        events = await healthy.read_to_end(sid)
        assert_exact(events)
        expected = expected_healthy(N)
        assert events == expected
        epoch = kit.app.store.epoch
        assert healthy.cs.by_stream[sid].verifier.digest == rechain(sid, epoch, expected)  # type: ignore[union-attr]
        assert text_of(events) == "".join(token(i) for i in range(N))
        await healthy.close()
        for w in e.wires:
            await w.close()
        # nothing leaked: connections, runs, listeners
        await kit.wait_idle()
        store = kit.app.store
        assert isinstance(store, MemoryStore)
        assert not store._pending_listeners
        assert all(not s.listeners for s in store._streams.values())
        assert not any(r.levelname == "ERROR" for r in caplog_info.records)


# ------------------------------------------------------------------ rows
async def malformed_json(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"start","req":')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "malformed frame")


async def unknown_frame_type(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"launch","agent":"count"}')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "invalid frame")


async def wrong_field_types(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"start","req":7,"agent":["count"]}')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "invalid frame")


async def a_duplicate_key(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"ping","n":1,"n":2}')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "duplicate key 'n'")


async def a_forged_log_line_in_the_first_frame(env: Env) -> None:
    w = await env.conn(hello=False)
    await w.send_raw('{"t":"q\\nINFO: hello conn=FORGED principal=root"}')
    # its type is read first: not a hello, so 4001, whatever the rest holds
    assert await w.expect_close() == CloseCode.AUTH_REQUIRED
    assert env.logged("protocol error", "code=4001", "'q\\nINFO: hello conn=FORGED")
    records = [r.getMessage() for r in env.caplog.records]
    assert all("\n" not in m for m in records if "FORGED" in m)


async def frame_over_the_size_limit(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"ping","n":1,"pad":"' + "x" * MAX_FRAME + '"}')
    assert await w.expect_close() == CloseCode.TOO_BIG
    assert env.logged("protocol error", "code=1009", "exceeds the limit")


async def binary_frame(env: Env) -> None:
    w = await env.conn()
    await w.send_raw(b'{"t":"ping","n":1}')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "binary")


async def frames_before_hello(env: Env) -> None:
    w = await env.conn(hello=False)
    await w.send(Start("r", "count", {"n": 1}))
    assert await w.expect_close() == CloseCode.AUTH_REQUIRED
    assert env.logged("protocol error", "code=4001", "first frame must be hello")


async def a_second_hello(env: Env) -> None:
    w = await env.conn()
    await w.send_raw('{"t":"hello","token":"alice-token"}')
    assert await w.expect_close() == CloseCode.BAD_FRAME
    assert env.logged("protocol error", "code=4000", "hello sent twice")


async def a_bad_token(env: Env) -> None:
    w = await env.conn(hello=False)
    await w.send_raw('{"t":"hello","token":"mallory"}')
    assert await w.expect_close() == CloseCode.AUTH_FAILED
    assert env.logged("auth failed", "unknown token")


async def an_unsupported_subprotocol(env: Env) -> None:
    async with connect(env.srv.url, subprotocols=["unbroken.v9"]) as ws:  # type: ignore[list-item]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == CloseCode.UNSUPPORTED_VERSION
    assert env.logged("unsupported subprotocol")


async def an_unknown_agent(env: Env) -> None:
    w = await env.conn()
    await w.send(w.cs.start("r", "no-such-agent", None))
    await w.until(lambda _o: bool(w.errors))
    assert w.errors[0].code == ErrorCode.UNKNOWN_AGENT
    await w.ping()
    assert env.logged("error conn=", "code=unknown_agent")


async def resume_of_an_unknown_stream(env: Env) -> None:
    w = await env.conn()
    ghost = secrets.token_urlsafe(16)
    await w.replay(ghost, env.kit.app.store.epoch)
    await w.until(lambda _o: ghost in w.gone)
    # with principals, unknown and foreign look the same: nothing is revealed
    assert w.gone[ghost].reason == "forbidden"
    await w.ping()
    assert env.logged("resume refused", ghost, "reason=forbidden")


async def resume_of_an_expired_stream(env: Env) -> None:
    w = await env.conn()
    sid = await w.start("short", "echo", "bye")
    await w.read_to_end(sid)
    # retention's sweep as it runs once the TTL is over (the sweeper's own timing is
    # the store's tests'); the stream is then gone, its tombstone says expired
    hub = env.kit.app.hub
    assert await hub.store.sweep(hub.clock() + TTL + 1) == 1
    assert await env.kit.meta(sid) is None
    w = await env.conn()
    await w.replay(sid, env.kit.app.store.epoch)
    await w.until(lambda _o: sid in w.gone)
    assert w.gone[sid].reason == "expired"
    await w.ping()
    assert env.logged("resume refused", sid, "reason=expired")


async def resume_of_a_foreign_stream(env: Env) -> None:
    bob = await env.conn("bob-token")
    await bob.replay(env.sid, env.kit.app.store.epoch)
    await bob.until(lambda _o: env.sid in bob.gone)
    assert bob.gone[env.sid].reason == "forbidden"
    assert env.sid not in bob.events
    await bob.ping()
    assert env.logged("resume refused", env.sid, "reason=forbidden")


async def resume_with_a_wrong_digest(env: Env) -> None:
    w = await env.conn()
    epoch = env.kit.app.store.epoch
    await w.send(w.cs.adopt("r", Cursor(env.sid, 5, "00" * 16, epoch)))
    await w.until(lambda _o: env.sid in w.gone)
    assert w.gone[env.sid].reason == "diverged"
    assert env.sid not in w.events
    # and a cursor beyond the log's head
    w2 = await env.conn()
    await w2.send(w2.cs.adopt("r", Cursor(env.sid, 10**6, "00" * 16, epoch)))
    await w2.until(lambda _o: env.sid in w2.gone)
    assert w2.gone[env.sid].reason == "diverged"
    await w2.ping()
    assert env.logged("resume refused", env.sid, "reason=diverged")


async def ack_beyond_what_was_sent(env: Env) -> None:
    w = await env.conn()
    sid = await w.start("acked", "forever", "g-ack")
    await w.read_until_seq(sid, 2)
    await w.send(Ack(sid, 500))
    await w.until(lambda _o: bool(w.errors))
    assert w.errors[0].code == ErrorCode.BAD_ACK
    assert w.errors[0].stream == sid
    await w.ping()
    env.kit.gates["g-ack"].set()
    assert text_of(await w.read_to_end(sid)) == "started done"
    assert env.logged("error conn=", "code=bad_ack", sid)


async def ack_for_a_stream_not_attached(env: Env) -> None:
    w = await env.conn()
    await w.send(Ack(env.sid, 1))  # exists, but not attached on this connection
    await w.until(lambda _o: bool(w.errors))  # answered, never closed
    assert w.errors[0].code == ErrorCode.BAD_ACK and w.errors[0].stream == env.sid
    await w.ping()  # the connection is still open
    assert env.logged("error conn=", "code=bad_ack", env.sid)


async def cancel_of_a_foreign_stream(env: Env) -> None:
    bob = await env.conn("bob-token")
    await bob.send(Cancel(env.sid))
    await bob.until(lambda _o: bool(bob.errors))
    assert bob.errors[0].code == ErrorCode.FORBIDDEN
    await bob.ping()
    assert env.sid in env.kit.app.hub.runs  # still running
    assert env.logged("cancel refused", env.sid)


async def a_burst_of_1000_starts(env: Env) -> None:
    w = await env.conn()
    frames = [encode(Start(f"b{i}", "echo", i)).decode() for i in range(1000)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, f in enumerate(frames):
        w.cs.start(f"b{i}", "echo", i)
        await w.send_raw(f)
    await w.until(lambda _o: len(w.started) + len(w.errors) >= 1000, limit=30)
    took = loop.time() - t0  # the server saw them all within it
    limited = [e for e in w.errors if e.code == ErrorCode.RATE_LIMITED]
    assert len(w.started) + len(limited) == 1000 and limited
    # the burst (200), plus what refilled (100/s) meanwhile: bounded by how long the
    # burst took here, not by a guess of it (a loaded machine takes longer)
    assert 200 <= len(w.started) <= 200 + 100 * took + 1
    assert all(e.retry_after_ms is not None and e.retry_after_ms > 0 for e in limited)
    # every run that was admitted completes
    for req, sid in w.started.items():
        events = await w.read_to_end(sid)
        assert text_of(events) == req[1:]
    assert env.logged("start rate limited")
    # the server is healthy: a fresh connection starts and finishes a run
    fresh = await env.conn("bob-token")
    sid = await fresh.start("after-burst", "echo", "ok")
    assert text_of(await fresh.read_to_end(sid)) == "ok"
    await w.close()
    await fresh.close()
    await env.wait_logged("close conn=", "rate_limited=")


Row = Callable[[Env], Awaitable[None]]
ROWS: list[Row] = [
    malformed_json,
    unknown_frame_type,
    wrong_field_types,
    a_duplicate_key,
    a_forged_log_line_in_the_first_frame,
    frame_over_the_size_limit,
    binary_frame,
    frames_before_hello,
    a_second_hello,
    a_bad_token,
    an_unsupported_subprotocol,
    an_unknown_agent,
    resume_of_an_unknown_stream,
    resume_of_an_expired_stream,
    resume_of_a_foreign_stream,
    resume_with_a_wrong_digest,
    ack_beyond_what_was_sent,
    ack_for_a_stream_not_attached,
    cancel_of_a_foreign_stream,
    a_burst_of_1000_starts,
]


@pytest.mark.parametrize("row", ROWS, ids=[r.__name__ for r in ROWS])
async def test_bad_input_is_answered_logged_and_harmless(env: Env, row: Row) -> None:
    await row(env)
    # the server still serves: the healthy connection answers a ping
    await env.healthy.ping()


async def test_a_frame_over_the_websocket_layers_limit_closes_1009_and_is_logged(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    """When uvicorn's ``ws_max_size`` (= max_frame, as ``unbroken.testing.serve`` sets
    it; ``unbroken serve`` sets the smaller ``max_client_frame``) is the limit that
    fires, the close is still 1009 and still logged."""
    kit = make_kit(max_frame=MAX_FRAME, max_chunk=16 * 1024, frame_cap=32 * 1024)
    async with serve(kit.app) as srv:
        healthy = await Wire.open(srv.url)
        sid = await healthy.start("h", "count", {"n": 300, "pause_at": 100, "gate": "h"})
        await kit.reached["h"].wait()
        w = await Wire.open(srv.url)
        await w.send_raw('{"t":"ping","pad":"' + "x" * (MAX_FRAME + 10) + '"}')
        with pytest.raises(Closed) as closed:
            while True:
                await w.next()
        assert closed.value.code == CloseCode.TOO_BIG
        await kit.wait_meta(sid, lambda m: m is not None)  # server still answers
        kit.gates["h"].set()
        assert_exact(await healthy.read_to_end(sid))
        await healthy.close()
        await kit.wait_idle()
    assert any(
        "code=1009" in r.getMessage() and "size limit" in r.getMessage()
        for r in caplog_info.records
    )
