"""Silent links: found by heartbeat, not by TCP; the client moves to another URL."""

from __future__ import annotations

import asyncio
import re

from unbroken import BackoffPolicy
from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.server import Unbroken
from unbroken.testing import serve


async def test_blackholed_link_is_detected_by_heartbeat_and_resumed_via_second_url() -> None:
    gate = asyncio.Event()
    app = Unbroken(allow_anonymous=True, heartbeat=0.2)

    @app.agent("two_halves")
    async def two_halves(req, out):  # type: ignore[no-untyped-def]
        for i in range(200):
            await out.text(f"a{i} ")
        await gate.wait()
        for i in range(200):
            await out.text(f"b{i} ")

    expected = "".join(f"a{i} " for i in range(200)) + "".join(f"b{i} " for i in range(200))
    policy = BackoffPolicy(base=0.01, cap=0.05, max_attempts=20, deadline=20)
    async with (
        serve(app) as srv1,
        serve(app) as srv2,
        FaultProxy(upstream=("127.0.0.1", srv1.port), close_grace=0.2) as proxy,
    ):
        first_url = f"ws://127.0.0.1:{proxy.port}/ws"
        async with Client([first_url, srv2.url], policy=policy, ping_every=0.1) as client:
            events = client.connection_events()
            st = await client.start("two_halves")
            async for ev in st:
                if ev.seq >= 150:
                    break
            assert await proxy.cut_all("blackhole") == 1
            gate.set()  # the agent goes on while the link is silent
            disconnected = None
            while True:
                ev = await asyncio.wait_for(anext(events), 10)
                if ev.kind == "disconnected":
                    disconnected = ev
                if ev.kind == "resumed":
                    resumed = ev
                    break
            answer = await asyncio.wait_for(st.wait(), 10)
    assert disconnected is not None and disconnected.code == 4004
    m = re.search(
        r"no frame for ([0-9.]+)s \(limit ([0-9.]+)s, ([0-9.]+)s late\)", disconnected.cause
    )
    assert m is not None, disconnected.cause
    quiet, limit, late = (float(g) for g in m.groups())
    assert quiet >= limit and late >= 0.0  # silence beyond the limit; how late the check ran
    assert resumed.stream == st.id and resumed.from_seq >= 150
    connected = [e for e in client.history if e.kind == "connected"]
    assert connected[-1].url == srv2.url
    assert answer.text == expected
    assert any(r.kind == "cut" for r in proxy.records)
