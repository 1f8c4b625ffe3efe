"""Agent runs outlive connections: idempotent start, time limit, failure, cancel,
abandonment, JSON and data parts, per-stream size limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from unbroken.protocol.client_session import ClientSession
from unbroken.protocol.events import Kind
from unbroken.protocol.frames import Ack, Cancel, Start, encode
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

from .wire import Wire, assert_exact, body_of, end_of, text_of

Served = Any


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("unbroken")]


async def test_agent_keeps_producing_while_no_client_is_attached(served: Served) -> None:
    kit, srv = await served()
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "count", {"n": 2000, "pause_at": 10, "gate": "g"})
    await kit.reached["g"].wait()
    w.abort()
    await kit.wait_no_connections()  # the server noticed the drop
    head_at_drop = (await kit.meta(sid)).head  # type: ignore[union-attr]
    kit.gates["g"].set()
    meta = await kit.wait_ended(sid)
    assert meta.status == "completed"
    assert meta.head == 2003 > head_at_drop
    assert not kit.app.connections  # nobody was attached while it ran to the end


async def test_retried_start_after_a_drop_returns_the_same_stream_and_runs_once(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served()
    cs = ClientSession()
    w = await Wire.open(srv.url, session=cs)
    # the start reaches the server, the answer never reaches the client
    cs.start("req-1", "forever", "g")
    await w.send_raw(encode(Start("req-1", "forever", "g")).decode())
    await kit.reached["g"].wait()
    w.abort()
    assert kit.calls["req-1"] == 1

    # the client retries the same start on a new connection (after_welcome does)
    w2 = await Wire.open(srv.url, session=cs)
    await w2.until(lambda _o: "req-1" in w2.started)
    sid = w2.started["req-1"]
    kit.gates["g"].set()
    events = await w2.read_to_end(sid)
    assert_exact(events)
    assert text_of(events) == "started done"
    assert kit.calls["req-1"] == 1  # the agent ran once
    assert len(kit.app.store) == 1  # type: ignore[arg-type]
    assert any(f"start repeated stream={sid} req=req-1" in m for m in messages(caplog_info))

    # a third start with that request id, even after the end, is the same stream (for
    # the same client: an anonymous one presents the key the server gave it)
    cs3 = ClientSession()
    cs3.anon = cs.anon
    w3 = await Wire.open(srv.url, session=cs3)
    assert await w3.start("req-1", "forever", "g") == sid
    assert text_of(await w3.read_to_end(sid)) == "started done"
    assert kit.calls["req-1"] == 1
    for c in (w2, w3):
        await c.close()
    await kit.wait_idle()


async def test_run_timeout_ends_failed_timeout_with_the_partial_answer(served: Served) -> None:
    _, srv = await served(run_timeout=0.2)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "forever", "g")
    events = await w.read_to_end(sid)
    end = end_of(events)
    assert (end.status, end.error) == ("failed", "timeout")
    assert text_of(events) == "started "
    # the open text part was closed with the status as its error
    assert [(e.kind, e.error) for e in events if e.kind is Kind.PART_END] == [
        (Kind.PART_END, "failed")
    ]
    await w.close()


async def test_an_agents_own_timeout_error_is_a_failure_not_the_run_limit(served: Served) -> None:
    _, srv = await served(run_timeout=30)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "own_timeout", None)
    end = end_of(await w.read_to_end(sid))
    assert end.status == "failed"
    assert end.error.startswith("TimeoutError")
    await w.close()


async def test_agent_exception_ends_failed_with_its_message(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served()
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "fail", "bad input")
    events = await w.read_to_end(sid)
    end = end_of(events)
    assert (end.status, end.error) == ("failed", "ValueError: boom: bad input")
    assert text_of(events) == "partial "
    assert any(f"agent failed stream={sid}" in m for m in messages(caplog_info))
    meta = await kit.meta(sid)
    assert meta is not None and meta.status == "failed" and meta.error == end.error
    await w.close()
    await kit.wait_idle()


async def test_cancel_ends_cancelled_and_keeps_the_partial_answer_readable(
    served: Served,
) -> None:
    kit, srv = await served()
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "forever", "g")
    await kit.reached["g"].wait()
    await w.send(Cancel(sid))
    end = end_of(await w.read_to_end(sid))
    assert (end.status, end.error) == ("cancelled", "")
    assert not kit.app.hub.runs
    # read back later, from another connection
    w2 = await Wire.open(srv.url)
    await w2.replay(sid, kit.app.store.epoch)
    events = await w2.read_to_end(sid)
    assert_exact(events)
    assert text_of(events) == "started "
    assert end_of(events).status == "cancelled"
    # cancelling an ended stream is harmless (for the client that started it; another
    # anonymous client may read it by its id, not cancel it)
    await w.send(Cancel(sid))
    await w.ping()
    assert not w.errors
    for c in (w, w2):
        await c.close()


async def test_abandoned_runs_are_cancelled_and_attached_ones_are_not(served: Served) -> None:
    kit, srv = await served(abandon_after=0.5)
    cs = ClientSession()
    left = await Wire.open(srv.url, session=cs)
    gone_sid = await left.start("gone", "forever", "g-gone")
    back_sid = await left.start("back", "forever", "g-back")
    stay = await Wire.open(srv.url)
    stay_sid = await stay.start("stay", "forever", "g-stay")
    left.abort()
    cs.forget("gone")  # this client never comes back for "gone"
    # "back" is resumed at once (well within abandon_after) and stays attached
    back = await Wire.open(srv.url, session=cs)
    await back.until(lambda _o: back_sid in back.resumed)
    meta = await kit.wait_ended(gone_sid)
    assert (meta.status, meta.error) == ("cancelled", "abandoned")
    # the two attached runs outlived the abandoned one's deadline
    assert (await kit.meta(stay_sid)).status == "running"  # type: ignore[union-attr]
    assert (await kit.meta(back_sid)).status == "running"  # type: ignore[union-attr]
    kit.gates["g-stay"].set()
    kit.gates["g-back"].set()
    assert end_of(await stay.read_to_end(stay_sid)).status == "completed"
    assert end_of(await back.read_to_end(back_sid)).status == "completed"
    for c in (stay, back):
        await c.close()
    await kit.wait_idle()


async def test_json_parts_are_validated_when_they_end_and_the_stream_goes_on(
    served: Served,
) -> None:
    _, srv = await served()
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "parts", None)
    events = await w.read_to_end(sid)
    assert_exact(events)
    ends = {e.part: e.error for e in events if e.kind is Kind.PART_END}
    assert ends["good"] == ""
    assert ends["bad"].startswith("schema validation failed at /rows")
    assert "integer" in ends["bad"]
    assert ends["broken"].startswith("invalid JSON")
    assert json.loads(body_of(events, "good")) == {"rows": 3}
    starts = {e.part: e for e in events if e.kind is Kind.PART_START}
    assert starts["good"].part_kind == "json"
    assert json.loads(starts["good"].schema)["required"] == ["rows"]
    assert text_of(events) == "before after"
    assert end_of(events).status == "completed"
    await w.close()


@pytest.mark.parametrize("char", ["a", "é", "😀"])
async def test_a_data_component_larger_than_max_chunk_is_split_and_reassembled(
    served: Served, char: str
) -> None:
    _, srv = await served(max_chunk=1024)
    body = "".join(chr(ord(char) + (i % 7)) for i in range(10_000))
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "data", {"body": body})
    events = await w.read_to_end(sid)
    assert_exact(events)
    pieces = [e for e in events if e.kind is Kind.DATA and e.part == "blob"]
    assert len(pieces) >= 10
    assert all(len(e.body.encode()) <= 1024 for e in pieces)
    assert body_of(events, "blob") == body
    chart = json.loads(body_of(events, "chart"))
    assert chart["mark"] == "bar"
    mimes = {e.part: e.mime for e in events if e.kind is Kind.PART_START}
    assert mimes == {"blob": "text/plain", "chart": "application/json"}
    await w.close()


async def test_a_stream_over_max_stream_bytes_fails_stream_too_large(served: Served) -> None:
    store = MemoryStore(Retention(max_stream_bytes=50_000))
    kit, srv = await served(store=store)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "big", {"chunks": 200})
    events = await w.read_to_end(sid)
    assert_exact(events)
    end = end_of(events)
    assert end.status == "failed"
    assert end.error.startswith("stream_too_large")
    assert 0 < len(text_of(events)) <= 50_000
    meta = await kit.meta(sid)
    assert meta is not None and meta.nbytes <= 50_000 + 200
    await w.close()
    await kit.wait_idle()


async def test_a_last_write_over_max_stream_bytes_is_not_reported_completed(
    served: Served,
) -> None:
    """The agent returns right after an oversized write: the run must not end
    ``completed`` over events that never reached the log."""
    store = MemoryStore(Retention(max_stream_bytes=5_000))
    _, srv = await served(store=store)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "data", {"body": "z" * 20_000})
    end = end_of(await w.read_to_end(sid))
    assert end.status == "failed"
    assert end.error.startswith("stream_too_large")
    await w.close()


async def test_the_log_cap_holds_for_every_append_and_a_run_without_room_ends_log_full(
    served: Served,
) -> None:
    """Issue 13 item 5: ``max_total_bytes`` was only checked at a start, so runs admitted
    while the log had room grew it without bound. Every append keeps to it now."""
    cap = 20_000
    store = MemoryStore(Retention(max_total_bytes=cap))
    kit, srv = await served(store=store)
    w = await Wire.open(srv.url)
    holder = await w.start("hold", "count", {"n": 1000, "pause_at": 999, "gate": "g"})
    await kit.reached["g"].wait()  # ~11 KB of the log, running: never evicted
    big = await w.start("big", "big", {"chunks": 50})  # 50 KB: no room for it
    events = await w.read_to_end(big)
    assert_exact(events)
    end = end_of(events)
    assert (end.status, end.error.split(":")[0]) == ("failed", "log_full"), end
    assert store.total_bytes <= cap + 200  # the end events always fit
    assert (await kit.meta(holder)).status == "running"  # type: ignore[union-attr]
    kit.gates["g"].set()
    assert end_of(await w.read_to_end(holder)).status == "completed"
    await w.close()
    await kit.wait_idle()


async def test_emit_replays_prepared_events_and_refuses_a_chunk_of_the_wrong_kind(
    served: Served,
) -> None:
    _, srv = await served()
    w = await Wire.open(srv.url)
    good = await w.start("good", "emit", None)
    events = await w.read_to_end(good)
    assert_exact(events)
    assert text_of(events, "t") == "replayed"
    assert end_of(events).status == "completed"
    bad = await w.start("bad", "emit", "bad")
    events = await w.read_to_end(bad)
    assert_exact(events)  # the client could decode and verify it: nothing wrong was sent
    end = end_of(events)
    assert end.status == "failed" and "PartError" in end.error and "data chunk" in end.error
    # a schema clients could not parse never reaches them
    bad = await w.start("bad-schema", "emit", "bad-schema")
    events = await w.read_to_end(bad)
    assert [e for e in events if e.kind == Kind.PART_START] == []
    end = end_of(events)
    assert end.status == "failed" and "schema is not JSON" in end.error
    await w.close()


async def test_a_client_that_never_acks_the_end_leaves_nothing_attached(served: Served) -> None:
    # a backend client that reads answers on one long-lived connection and never acks:
    # once an answer's end is sent the server holds nothing for it but a bounded entry
    # that keeps a late ack legal
    kit, srv = await served(max_streams_per_connection=20)
    w = await Wire.open(srv.url)
    w.cs.take_acks = list  # type: ignore[method-assign]  # never ack
    sids = []
    for i in range(50):  # more than max_streams: ended streams no longer count
        sids.append(await w.start(f"r{i}", "count", {"n": 5}))
        await w.read_to_end(sids[-1])
    assert not w.errors
    (conn,) = kit.app.connections
    assert conn.atts == {} and conn.session.streams == {}
    assert list(conn.session.released) == sids
    # late acks are legal (no close, no error), however many; the connection works
    for _ in range(3):
        await w.send(Ack(sids[0], 6))
    await w.ping()
    assert sids[0] in conn.session.released and not w.errors
