"""The ``batch`` cap: several frames per WebSocket message on a multiplexed connection."""

from __future__ import annotations

import asyncio
from typing import Any

from unbroken.protocol.client_session import ClientSession, StreamEvents
from unbroken.protocol.frames import CAP_BATCH

from .conftest import TIMEOUT, token
from .wire import Wire, assert_exact, text_of

Served = Any
STREAMS = 12
TOKENS = 200


async def test_streams_advancing_together_share_messages_and_stay_exact(served: Served) -> None:
    _kit, srv = await served()
    w = await Wire.open(srv.url, session=ClientSession(caps=(CAP_BATCH,)))
    assert w.cs.batch  # the server agreed
    for i in range(STREAMS):
        await w.send(w.cs.start(f"r{i}", "count", {"n": TOKENS}))
    messages = multi = 0
    async with asyncio.timeout(TIMEOUT):
        while not all(w.ended(s) for s in w.started.values()) or len(w.started) < STREAMS:
            data = await w.recv_raw()
            messages += 1
            lines = w.cs.frames_of(data)
            multi += len(lines) > 1
            for line in lines:
                out = w.cs.receive(line)
                if isinstance(out, StreamEvents):
                    w.events.setdefault(out.stream, []).extend(out.events)
                elif hasattr(out, "req") and hasattr(out, "stream"):
                    w.started[out.req] = out.stream
            for ack in w.cs.take_acks():
                await w.send(ack)
    assert multi > 0, f"no message carried several frames ({messages} messages)"
    for sid in w.started.values():
        evs = w.events[sid]
        assert_exact(evs)
        assert text_of(evs) == "".join(token(i) for i in range(TOKENS))


async def test_a_client_without_the_cap_gets_one_frame_per_message(served: Served) -> None:
    _kit, srv = await served()
    w = await Wire.open(srv.url)  # offers no caps: every message must decode alone
    assert not w.cs.batch and w.cs.welcome is not None and w.cs.welcome.caps == []
    sids = [await w.start(f"r{i}", "count", {"n": TOKENS}) for i in range(STREAMS)]
    for sid in sids:
        evs = await w.read_to_end(sid)
        assert text_of(evs) == "".join(token(i) for i in range(TOKENS))
