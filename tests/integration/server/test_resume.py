"""Resume after a network fault is exact: the digest of the answer delivered across
a cut equals the digest of an uninterrupted run, with no duplicate and no gap."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.protocol.client_session import (
    ClientSession,
    Cursor,
    PongOut,
    StreamEvents,
    StreamGoneOut,
    StreamResumed,
    StreamStarted,
    Welcomed,
)
from unbroken.protocol.digest import seed
from unbroken.protocol.events import Kind
from unbroken.protocol.frames import CAP_BATCH, Ping
from unbroken.protocol.server_session import FIRST_FRAME

from .conftest import TIMEOUT, Kit, token
from .wire import Relay, Wire, assert_exact, end_of, rechain, text_of

N = 3000


async def uninterrupted(url: str) -> list:  # type: ignore[type-arg]
    w = await Wire.open(url)
    sid = await w.start("clean", "count", {"n": N})
    events = await w.read_to_end(sid)
    await w.close()
    return events


async def check_exact(kit: Kit, w: Wire, sid: str, reference: list) -> None:  # type: ignore[type-arg]
    events = w.events[sid]
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(N))
    assert end_of(events).status == "completed"
    # the same events as a run that was never cut (seq, kind, every field) ...
    assert events == reference
    # ... so the same digest under this stream's identity, which is what the log
    # holds and what the client verified frame by frame
    meta = await kit.meta(sid)
    assert meta is not None
    epoch = kit.app.store.epoch
    assert w.cs.by_stream[sid].verifier is not None
    assert w.cs.by_stream[sid].verifier.digest == meta.digest == rechain(sid, epoch, reference)


@pytest.mark.parametrize("percent", [10, 50, 90])
async def test_resume_after_abort_at_percent_is_exact(
    served: object, percent: int, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served()  # type: ignore[operator]
    reference = await uninterrupted(srv.url)

    cut_at = N * percent // 100
    cs = ClientSession()
    w = await Wire.open(srv.url, session=cs)
    inp = {"n": N, "pause_at": cut_at + 50, "gate": "g1", "pause2": N - 50, "gate2": "g2"}
    sid = await w.start("r1", "count", inp)
    await w.read_until_seq(sid, cut_at)
    assert (await kit.meta(sid)).status == "running"  # type: ignore[union-attr]
    w.abort()

    # the agent keeps producing with no client attached ...
    kit.gates["g1"].set()
    await kit.reached["g2"].wait()
    meta = await kit.wait_meta(sid, lambda m: m is not None and m.head >= N - 50 + 1)
    assert meta is not None and meta.status == "running"
    assert kit.calls["r1"] == 1

    # ... the client comes back with its cursor: catch-up, then live tail
    before = w.seq(sid)
    w2 = await Wire.open(srv.url, session=cs)
    w2.events[sid] = list(w.events[sid])
    await w2.until(lambda _o: sid in w2.resumed)
    assert w2.resumed[sid].from_seq == before
    await w2.read_until_seq(sid, N - 50 + 1)
    kit.gates["g2"].set()
    await w2.read_to_end(sid)
    await check_exact(kit, w2, sid, reference)
    assert any(
        "resume conn=" in r.getMessage() and sid in r.getMessage() for r in caplog_info.records
    )
    await w2.close()
    await kit.wait_idle()


async def test_resume_after_relay_cut_mid_frame_is_exact(served: object) -> None:
    """A cut at an arbitrary byte (inside a frame) loses only what was not yet
    received whole; the resume fills exactly that."""
    kit, srv = await served(frame_cap=4096)  # type: ignore[operator]
    reference = await uninterrupted(srv.url)
    cs = ClientSession()
    async with Relay(srv.host, srv.port) as relay:
        path = srv.url.split(str(srv.port), 1)[1]
        w = await Wire.open(relay.url(path), session=cs)
        sid = await w.start("r1", "count", {"n": N, "pause_at": N // 2, "gate": "g"})
        await kit.reached["g"].wait()
        await w.read_until_seq(sid, N // 4)
        relay.cut_after(10_000 + 1234)  # a few frames, then mid-frame
        kit.gates["g"].set()
        await relay.cut_done.wait()
        cs.connection_lost()
        # drain what arrived whole before the cut
        with pytest.raises(Exception):  # noqa: B017 - any close/abort error is fine
            await w.until(lambda _o: False, limit=5)
        got = w.seq(sid)
        assert 0 < got < N
        w2 = await Wire.open(relay.url(path), session=cs)
        w2.events[sid] = list(w.events[sid])
        await w2.read_to_end(sid)
        await check_exact(kit, w2, sid, reference)
        assert w2.resumed[sid].from_seq == got
        await w2.close()


async def test_resume_of_a_finished_stream_replays_the_rest(served: object) -> None:
    kit, srv = await served()  # type: ignore[operator]
    reference = await uninterrupted(srv.url)
    cs = ClientSession()
    w = await Wire.open(srv.url, session=cs)
    sid = await w.start("r1", "count", {"n": N, "pause_at": N // 3, "gate": "g"})
    await w.read_until_seq(sid, N // 3)
    w.abort()
    kit.gates["g"].set()
    meta = await kit.wait_ended(sid)
    assert meta.status == "completed"
    w2 = await Wire.open(srv.url, session=cs)
    w2.events[sid] = list(w.events[sid])
    await w2.read_to_end(sid)
    assert w2.resumed[sid].status == "completed"
    await check_exact(kit, w2, sid, reference)
    await w2.close()


async def test_resume_pipelined_behind_hello_is_answered_after_welcome(served: object) -> None:
    """A client may send its resume right behind hello, before welcome (protocol §2):
    the server answers welcome, then resumed and the rest of the stream, exact."""
    kit, srv = await served()  # type: ignore[operator]
    reference = await uninterrupted(srv.url)
    cs = ClientSession()
    w = await Wire.open(srv.url, session=cs)
    sid = await w.start("r1", "count", {"n": N, "pause_at": N // 2, "gate": "g"})
    await w.read_until_seq(sid, N // 2)
    before = w.seq(sid)
    w.abort()
    w2 = await Wire.open(srv.url, session=cs, hello=False)
    w2.events[sid] = list(w.events[sid])
    await w2.send(cs.connect())
    resumes = cs.resumes()
    assert [type(f).__name__ for f in resumes] == ["Resume"]
    for frame in resumes:  # in the same flight as hello, welcome not yet received
        await w2.send(frame)
    first = await w2.next()
    assert isinstance(first, Welcomed), first
    assert cs.after_welcome() == []  # nothing left to send
    kit.gates["g"].set()
    await w2.read_to_end(sid)
    assert w2.resumed[sid].from_seq == before
    await check_exact(kit, w2, sid, reference)
    await w2.close()


async def test_pipelined_resumes_are_answered_in_order_on_a_memory_log(served: object) -> None:
    """On a log that reads without waiting (memory), resumes pipelined behind hello are
    answered where they are read, in order: welcome, then ``resumed`` and the first
    missing events, then ``gone`` for a stream nobody has, all before the ``pong`` of a
    ping sent in the same flight behind them (a resume used to be answered from a task
    of its own, a loop turn later: the pong overtook it). The unknown stream gets the
    same ``gone`` as a resume sent after welcome."""
    kit, srv = await served()  # type: ignore[operator]
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "count", {"n": 200})
    await w.read_to_end(sid)
    await w.close()
    epoch = kit.app.store.epoch
    nosuch = "s" + sid[1:-4] + "zzzz"
    # the answer to that resume when it comes after welcome (as before this change)
    probe = await Wire.open(srv.url)
    await probe.send(probe.cs.adopt("p", Cursor(nosuch, 0, seed(nosuch, epoch).hex(), epoch)))
    await probe.until(lambda _o: nosuch in probe.gone)
    await probe.close()

    cs = ClientSession()
    assert cs.adopt("late", Cursor(sid, 0, seed(sid, epoch).hex(), epoch)) is None
    assert cs.adopt("none", Cursor(nosuch, 0, seed(nosuch, epoch).hex(), epoch)) is None
    w2 = await Wire.open(srv.url, session=cs, hello=False)
    await w2.send(cs.connect())
    resumes = cs.resumes()
    assert [getattr(f, "stream", None) for f in resumes] == [sid, nosuch]
    for frame in resumes:  # welcome not received yet
        await w2.send(frame)
    await w2.send(Ping(n=7))
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while not seen or seen[-1] != "pong":
            out = await w2.next()
            if isinstance(out, Welcomed):
                seen.append("welcome")
            elif isinstance(out, StreamResumed):
                seen.append("resumed")
            elif isinstance(out, StreamEvents):
                if seen[-1] != "events":
                    seen.append("events")
            elif isinstance(out, StreamGoneOut):
                seen.append("gone")
            elif isinstance(out, PongOut):
                seen.append("pong")
    assert seen == ["welcome", "resumed", "events", "gone", "pong"], seen
    assert w2.gone[nosuch].reason == probe.gone[nosuch].reason
    await w2.read_to_end(sid)
    assert_exact(w2.events[sid])
    await w2.close()


async def test_resume_from_zero_replays_everything_coalesced(served: object) -> None:
    """A late resume of a long stream arrives in a few large frames, not one per event."""
    kit, srv = await served()  # type: ignore[operator]
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "count", {"n": 20_000, "yield_every": 1000})
    await w.close()
    await kit.wait_ended(sid)
    cs = ClientSession()
    epoch = kit.app.store.epoch
    w2 = await Wire.open(srv.url, session=cs)
    await w2.send(cs.adopt("late", Cursor(sid, 0, seed(sid, epoch).hex(), epoch)))
    events = await w2.read_to_end(sid)
    assert_exact(events)
    assert len(events) == 20_003  # part_start + tokens + part_end + end
    assert events[1].kind is Kind.TEXT
    assert w2.frames < 20  # welcome + resumed + ~170 KB in frames of up to 256 KB
    await w2.close()


async def test_first_frame_after_a_resume_is_a_small_message_of_its_own(served: object) -> None:
    """The first missing events come in a small message of their own, ahead of the
    batched catch-up: the client shows them without reading the backlog first."""
    kit, srv = await served()  # type: ignore[operator]
    n = 20_000
    cs = ClientSession(caps=(CAP_BATCH,))
    w = await Wire.open(srv.url, session=cs)
    sid = await w.start("r1", "count", {"n": n, "pause_at": 100, "gate": "g", "yield_every": 500})
    await w.read_until_seq(sid, 50)
    w.abort()
    kit.gates["g"].set()
    await kit.wait_ended(sid)  # a backlog of ~400 kB waits in the log
    before = w.seq(sid)
    w2 = await Wire.open(srv.url, session=cs)
    assert cs.batch
    w2.events[sid] = list(w.events[sid])
    messages: list[list[str | bytes]] = []  # the events frames of each message
    async with asyncio.timeout(TIMEOUT):
        while not w2.ended(sid):
            lines = cs.frames_of(await w2.recv_raw())
            kinds = []
            for line in lines:
                out = cs.receive(line)
                if isinstance(out, StreamEvents):
                    w2.events[sid].extend(out.events)
                    kinds.append(line)
                elif isinstance(out, StreamResumed):
                    w2.resumed[sid] = out
            if kinds:
                messages.append(kinds)
            for ack in cs.take_acks():
                await w2.send(ack)
    assert w2.resumed[sid].from_seq == before
    first, *rest = messages
    assert len(first) == 1, f"the first events message carries {len(first)} frames"
    assert len(first[0]) <= FIRST_FRAME + 1024
    assert rest and max(len(m) for m in rest) > 1  # the catch-up is still batched
    events = w2.events[sid]
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(n))
    meta = await kit.meta(sid)
    verifier = cs.by_stream[sid].verifier
    assert meta is not None and verifier is not None and verifier.digest == meta.digest
    await w2.close()


async def test_first_frames_of_several_resumed_streams_wait_behind_no_catch_up(
    served: object,
) -> None:
    """Several streams resumed on one batching connection: each stream's first
    events frame is small and travels only with other streams' first frames, never
    behind (or with) a catch-up frame."""
    kit, srv = await served()  # type: ignore[operator]
    n, count = 8_000, 4
    cs = ClientSession(caps=(CAP_BATCH,))
    w = await Wire.open(srv.url, session=cs)
    for i in range(count):
        await w.send(cs.start(f"r{i}", "count", {"n": n, "pause_at": 100, "gate": f"g{i}"}))
    async with asyncio.timeout(TIMEOUT):  # (Wire.next reads one frame per message)
        while len(w.started) < count or not all(w.seq(s) >= 50 for s in w.started.values()):
            for line in cs.frames_of(await w.recv_raw()):
                out = cs.receive(line)
                if isinstance(out, StreamEvents):
                    w.events.setdefault(out.stream, []).extend(out.events)
                elif isinstance(out, StreamStarted):
                    w.started[out.req] = out.stream
    sids = list(w.started.values())
    w.abort()
    for i in range(count):
        kit.gates[f"g{i}"].set()
    for sid in sids:
        await kit.wait_ended(sid)
    w2 = await Wire.open(srv.url, session=cs)
    for sid in sids:
        w2.events[sid] = list(w.events[sid])
    seen: set[str] = set()
    async with asyncio.timeout(TIMEOUT):
        while not all(w2.ended(sid) for sid in sids):
            firsts, others = 0, 0
            for line in cs.frames_of(await w2.recv_raw()):
                out = cs.receive(line)
                if isinstance(out, StreamEvents):
                    w2.events[out.stream].extend(out.events)
                    if out.stream in seen:
                        others += 1
                    else:
                        seen.add(out.stream)
                        firsts += 1
                        assert len(line) <= FIRST_FRAME + 1024
            assert not (firsts and others), "a first frame shared a message with a catch-up"
            for ack in cs.take_acks():
                await w2.send(ack)
    assert seen == set(sids)
    for sid in sids:
        assert_exact(w2.events[sid])
        assert text_of(w2.events[sid]) == "".join(token(i) for i in range(n))
    await w2.close()
