"""Liveness: ``hb`` when a connection with a live stream is quiet; a client that
stops reading is cut after ``send_timeout`` while its run goes on."""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.protocol.client_session import Heartbeat

from .wire import Wire, end_of

Served = Any


async def test_a_quiet_connection_with_a_live_stream_gets_heartbeats(served: Served) -> None:
    kit, srv = await served(heartbeat=0.1)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "forever", "g")
    await w.read_until_seq(sid, 2)
    beats = 0

    def three_beats(out: object) -> bool:
        nonlocal beats
        beats += isinstance(out, Heartbeat)
        return beats >= 3

    await w.until(three_beats, limit=5)
    kit.gates["g"].set()
    assert end_of(await w.read_to_end(sid)).status == "completed"
    await w.close()


async def test_a_client_that_stops_reading_is_cut_and_its_run_goes_on(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    # a window bigger than the socket buffers, so only the send can block
    kit, srv = await served(heartbeat=0.1, send_timeout=0.5, window=256 << 20)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "big", {"chunks": 40_000})  # 40 MB, never read
    await kit.wait_no_connections(limit=20)
    assert any("send timeout conn=" in r.getMessage() for r in caplog_info.records)
    meta = await kit.wait_ended(sid, limit=20)
    assert meta.status == "completed"  # the agent never waited for the reader
    assert meta.nbytes > 40_000_000
    w.abort()


async def test_a_full_window_with_nothing_heard_closes_4004_and_the_run_goes_on(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    # the client's frames are lost (a receive-only link): no ack, no answer to hb
    kit, srv = await served(heartbeat=0.1, window=64 * 1024)
    w = await Wire.open(srv.url)
    w.cs.take_acks = list  # type: ignore[method-assign]  # its acks never arrive
    sid = await w.start("r1", "big", {"chunks": 400})  # 400 KB: far beyond the window
    assert await w.expect_close() == 4004  # CloseCode.HEARTBEAT_TIMEOUT
    assert any("peer silent conn=" in r.getMessage() for r in caplog_info.records)
    assert (await kit.wait_ended(sid)).status == "completed"  # the run never waited


async def test_a_full_window_is_not_silence_while_the_client_answers(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    # a client that hears the hb and answers it (its acks arrive) is never cut,
    # however long the window stays full
    _kit, srv = await served(heartbeat=0.05, window=16 * 1024)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "big", {"chunks": 200})
    assert end_of(await w.read_to_end(sid, limit=30)).status == "completed"
    assert not any("peer silent" in r.getMessage() for r in caplog_info.records)
    await w.close()


async def test_a_blocked_send_with_nothing_heard_is_dropped_before_send_timeout(
    served: Served, caplog_info: pytest.LogCaptureFixture
) -> None:
    # a peer that neither reads nor sends (gone, its FIN unseen behind our unsent
    # bytes): dropped after 4 x peer_silence, not after the 60 s send_timeout
    kit, srv = await served(heartbeat=0.1, send_timeout=60, peer_silence=0.25, window=256 << 20)
    w = await Wire.open(srv.url)
    sid = await w.start("r1", "big", {"chunks": 40_000})  # 40 MB, never read
    await kit.wait_no_connections(limit=20)
    assert any("peer gone conn=" in r.getMessage() for r in caplog_info.records)
    assert (await kit.wait_ended(sid, limit=20)).status == "completed"
    w.abort()
