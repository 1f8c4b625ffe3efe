"""``/metrics`` scraped over real HTTP during a faulted run: the counters move by
exactly what happened (issue 19). The client reaches the server through the
project's fault proxy, which cuts the link; refusals are real handshakes."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from unbroken import BackoffPolicy
from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.errors import ConfigError, RequestRefused
from unbroken.observe import Observer
from unbroken.protocol.frames import Hello, encode
from unbroken.server import Unbroken
from unbroken.testing import RunningServer, serve

from .conftest import GOOD_TOKEN, TIMEOUT, gated_app, parse, scrape, value

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=50, deadline=20)
CUTS = 3
PER_STAGE = 200


async def hello_with(srv: RunningServer, token: str) -> int:
    """Handshake, ``hello`` with ``token``; the close code the server answers with."""
    async with connect(
        srv.url, subprotocols=[Subprotocol("unbroken.v1")], open_timeout=TIMEOUT
    ) as ws:
        await ws.send(encode(Hello(caps=[], token=token)).decode())
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        assert ws.close_code is not None
        return ws.close_code


async def test_counters_move_by_exactly_the_cuts_resumes_and_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="unbroken.events")
    g = gated_app(observe=Observer(event_log=True))
    stages = CUTS + 1
    async with (
        serve(g.app) as srv,
        FaultProxy(f"127.0.0.1:{srv.port}", close_grace=0.2) as proxy,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
    ):
        url = f"{srv.http}/metrics"
        start = await scrape(http, url)
        assert value(start, "unbroken_connections_total") == 0
        assert value(start, "unbroken_resumes_total", outcome="resumed", reason="") == 0
        proxied = f"ws://{proxy.listen}/ws"
        async with Client(proxied, token=GOOD_TOKEN, policy=FAST, seed=5) as client:
            events = client.connection_events()
            st = await client.start("staged", {"stages": stages, "per_stage": PER_STAGE})
            received = 0
            it = aiter(st)
            for cut in range(CUTS):
                await asyncio.wait_for(g.reached[cut].wait(), TIMEOUT)
                while received < (cut + 1) * PER_STAGE + (1 if cut == 0 else 0):
                    await asyncio.wait_for(anext(it), TIMEOUT)
                    received += 1
                before = await scrape(http, url)
                assert value(before, "unbroken_connections_open") == 1
                assert value(before, "unbroken_attachments_open") == 1
                assert value(before, "unbroken_streams_live") == 1
                assert await proxy.cut_all("rst") == 1
                while (await asyncio.wait_for(anext(events), TIMEOUT)).kind != "resumed":
                    pass
                after = await scrape(http, url)
                resumed = ("unbroken_resumes_total", {"outcome": "resumed", "reason": ""})
                assert (
                    value(after, resumed[0], **resumed[1]) - value(before, resumed[0], **resumed[1])
                    == 1
                )
                assert value(after, "unbroken_connections_total") == cut + 2
                g.gates[cut].set()
            g.gates[CUTS].set()
            async for _ in it:
                pass
            answer = await asyncio.wait_for(st.wait(), TIMEOUT)
        assert answer.complete

        # refusals: m forged tokens, k pages of another site, a bad frame, a version
        forged, foreign = 3, 2
        for i in range(forged):
            assert await hello_with(srv, f"forged-{i}") == 4002
        for _ in range(foreign):
            with pytest.raises(InvalidStatus) as info:
                async with connect(
                    srv.url,
                    origin=Origin("https://evil.example"),
                    subprotocols=[Subprotocol("unbroken.v1")],
                    open_timeout=TIMEOUT,
                ):
                    pass
            assert info.value.response.status_code == 403
        # and an HTTP stream read from such a page
        r = await http.get(f"{srv.http}/v1/agent/some", headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        async with connect(
            srv.url, subprotocols=[Subprotocol("unbroken.v1")], open_timeout=TIMEOUT
        ) as ws:
            await ws.send(json.dumps({"t": "no-such-frame"}))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            bad_frame_code = ws.close_code
        async with connect(
            srv.url, subprotocols=[Subprotocol("unbroken.v9")], open_timeout=TIMEOUT
        ) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 4005
        async with asyncio.timeout(TIMEOUT):
            while g.app.connections:  # noqa: ASYNC110 - polled under a timeout
                await asyncio.sleep(0.01)
        end = await scrape(http, url)

    assert bad_frame_code in (4000, 4001)
    assert value(end, "unbroken_resumes_total", outcome="resumed", reason="") == CUTS
    assert value(end, "unbroken_attachments_total", kind="start") == 1
    assert value(end, "unbroken_attachments_total", kind="resume") == CUTS
    # every cut: the server saw the connection go before the client resumed
    assert value(end, "unbroken_recovery_seconds_count") == CUTS
    assert 0 < value(end, "unbroken_recovery_seconds_sum") < CUTS * TIMEOUT
    assert value(end, "unbroken_refusals_total", reason="auth") == forged + (
        1 if bad_frame_code == 4001 else 0
    )
    assert value(end, "unbroken_refusals_total", reason="origin") == foreign + 1
    assert value(end, "unbroken_refusals_total", reason="bad_frame") == (
        1 if bad_frame_code == 4000 else 0
    )
    assert value(end, "unbroken_refusals_total", reason="version") == 1
    # CUTS + 1 client connections, the forged ones, the bad frame (the version
    # refusal and the origin refusals never became connections)
    assert value(end, "unbroken_connections_total") == CUTS + 1 + forged + 1
    assert value(end, "unbroken_connections_open") == 0
    assert value(end, "unbroken_attachments_open") == 0
    assert value(end, "unbroken_streams_live") == 0
    assert value(end, "unbroken_disconnects_total", code="4002") == forged
    # the agent's events: tokens, part start/end, end
    events = stages * PER_STAGE + 3
    assert value(end, "unbroken_events_in_total") == events
    # each cut may have lost events on the wire: they were sent again
    assert events <= value(end, "unbroken_events_out_total") < 2 * events
    assert value(end, "unbroken_bytes_out_total") > value(end, "unbroken_events_out_total")
    assert value(end, "unbroken_bytes_in_total") > 0
    assert value(end, "unbroken_heartbeat_timeouts_total") == 0
    assert value(end, "unbroken_log_bytes") > 0
    assert ("unbroken_event_loop_lag_seconds", ()) in end

    # the same story in the structured connection events
    logged = [r.unbroken for r in caplog.records if r.name == "unbroken.events"]  # type: ignore[attr-defined]
    resumes = [e for e in logged if e["event"] == "resume"]
    assert len(resumes) == CUTS
    assert all(e["stream"] == st.id and e["recovery_ms"] > 0 for e in resumes)
    refusals = [e for e in logged if e["event"] == "refusal"]
    assert sorted(e["reason"] for e in refusals) == sorted(
        ["auth"] * (forged + (bad_frame_code == 4001))
        + ["origin"] * (foreign + 1)
        + ["bad_frame"] * (bad_frame_code == 4000)
        + ["version"]
    )
    closes = [e for e in logged if e["event"] == "close"]
    assert len(closes) == value(end, "unbroken_connections_total")
    detaches = [e["cause"] for e in logged if e["event"] == "detach"]
    assert detaches.count("disconnect") == CUTS and detaches.count("ended") == 1


async def test_each_app_has_its_own_registry_and_metrics_can_be_off() -> None:
    a, b = Unbroken(allow_anonymous=True), Unbroken(allow_anonymous=True)
    assert a.observe.registry is not None and b.observe.registry is not None
    assert a.observe.registry is not b.observe.registry
    a.observe.counts.connections += 5
    off = Unbroken(allow_anonymous=True, observe=Observer(metrics=False))
    with pytest.raises(ConfigError, match="metrics are off"):
        off.metrics_app()
    async with serve(b) as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
        # not served by app.asgi() unless asked (metrics_path): a mounted app stays private
        assert (await http.get(f"{srv.http}/metrics")).status_code == 404
    b.metrics_path = "/metrics"
    async with serve(b) as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
        got = parse((await http.get(f"{srv.http}/metrics")).text)
        assert value(got, "unbroken_connections_total") == 0  # a's 5 are a's
        head = await http.head(f"{srv.http}/metrics")
        assert head.status_code == 200 and head.content == b""
        post = await http.post(f"{srv.http}/metrics")
        assert post.status_code == 405


async def test_metrics_mount_in_fastapi() -> None:
    from fastapi import FastAPI

    app = Unbroken(allow_anonymous=True)
    api = FastAPI(lifespan=app.lifespan)
    api.include_router(app.router())
    api.mount("/metrics", app.metrics_app())
    async with serve(api) as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
        async with Client(f"ws://127.0.0.1:{srv.port}/ws") as client:
            with pytest.raises(RequestRefused, match="unknown_agent"):
                await asyncio.wait_for(client.start("nope"), TIMEOUT)
        r = await http.get(f"{srv.http}/metrics/", follow_redirects=True)
        assert r.status_code == 200
        assert value(parse(r.text), "unbroken_connections_total") == 1
