"""Liveness: ``hb`` when a connection with a live stream is quiet; a client that
stops reading is cut after ``send_timeout`` while its run goes on."""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.protocol.session import Heartbeat

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
