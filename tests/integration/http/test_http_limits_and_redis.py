"""The HTTP transport's limits and backends: an agent answer in a real redis-server
read over SSE by another node's HTTP endpoint, exact; 429 + Retry-After beyond
``max_http_streams``; 413 beyond the body limit; open SSE responses end when the
server drains. Real uvicorn, real sockets, httpx."""

from __future__ import annotations

import asyncio
import logging
import secrets

import httpx
import pytest

from unbroken import Unbroken
from unbroken.client import Client
from unbroken.client.http_reader import HttpReader
from unbroken.protocol.events import Event
from unbroken.server.asgi import ASGIApp
from unbroken.testing import serve

from ..redis.conftest import RedisServer, redis_server  # noqa: F401 - the fixture
from ..server.conftest import make_kit, token
from .conftest import ServeKit

pytestmark = pytest.mark.timeout(90)


async def test_answer_in_redis_is_read_over_sse_on_another_node_exact(
    redis_server: RedisServer,  # noqa: F811 - the fixture
) -> None:
    from unbroken.store.redis import RedisStore

    prefix = f"http-{secrets.token_hex(4)}"
    a = make_kit(store=RedisStore(redis_server.url, prefix=prefix))
    b = make_kit(store=RedisStore(redis_server.url, prefix=prefix))
    async with serve(a.app) as node_a, serve(b.app) as node_b:
        async with Client(node_a.url) as c:
            stream = await c.start("count", {"n": 5000, "pause_at": 2500, "gate": "g"})
            await a.reached["g"].wait()
            async with HttpReader(node_b.http) as reader:  # the other node, live
                reading = asyncio.ensure_future(_collect(reader, stream.id))
                a.gates["g"].set()
                answer = await stream.wait()
                got = await reading
        meta = await b.meta(stream.id)
        assert meta is not None and meta.status == "completed"
        assert reader.digest == meta.digest.hex()
        text = "".join(e.body for e in got if e.body and e.kind == 1)
        assert text == answer.text == "".join(token(i) for i in range(5000))
    for kit in (a, b):
        await kit.app.store.close()


async def _collect(reader: HttpReader, stream: str) -> list[Event]:
    return [ev async for ev in reader.events(stream)]


async def test_beyond_max_http_streams_is_429_with_retry_after() -> None:
    app = Unbroken(allow_anonymous=True, shutdown_grace=1.0)
    asgi = ASGIApp(app, max_http_streams=1)
    async with serve(asgi) as srv, httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.put("/v1/stream/s", headers={"content-type": "text/plain"})
        assert r.status_code == 201
        async with http.stream(
            "GET", "/v1/stream/s", params={"offset": "-1", "live": "sse"}
        ) as sse:
            assert sse.status_code == 200
            refused = await http.get("/v1/stream/s")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        for _ in range(100):  # the SSE response's slot is freed once it ends
            ok = await http.get("/v1/stream/s")
            if ok.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert ok.status_code == 200


async def test_a_body_over_the_limit_is_413(served: ServeKit) -> None:
    _kit, srv = await served()
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.put("/v1/stream/big", headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201
        r = await http.post(
            "/v1/stream/big",
            content=b"x" * (16 * 1024 * 1024 + 1),
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 413
        head = await http.head("/v1/stream/big")
        assert head.headers["stream-next-offset"] == f"{0:016d}_{0:016d}"  # nothing appended


async def test_open_sse_responses_end_when_the_server_drains() -> None:
    kit = make_kit()
    async with serve(kit.app) as srv:
        async with Client(srv.url) as c:
            stream = await c.start("forever", "never")
            await kit.reached["never"].wait()
        async with (
            httpx.AsyncClient(base_url=srv.http, timeout=10) as http,
            http.stream(
                "GET", f"/v1/agent/{stream.id}", params={"offset": "-1", "live": "sse"}
            ) as sse,
        ):
            lines = sse.aiter_lines()
            assert (await anext(lines)) == "event: data"
            stopping = srv.stop()
            async with asyncio.timeout(5):
                async for _ in lines:  # the response ends: the server drains
                    pass
            await stopping


async def test_a_full_byte_namespace_refuses_with_429_and_frees_room_on_delete() -> None:
    app = Unbroken(allow_anonymous=True, shutdown_grace=1.0)
    asgi = ASGIApp(app)
    asgi.byte_streams.max_total = 1000
    octets = {"content-type": "application/octet-stream"}
    async with serve(asgi) as srv, httpx.AsyncClient(base_url=srv.http) as http:
        assert (
            await http.put("/v1/stream/a", content=b"x" * 600, headers=octets)
        ).status_code == 201
        r = await http.post("/v1/stream/a", content=b"y" * 500, headers=octets)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        r = await http.put("/v1/stream/b", content=b"z" * 500, headers=octets)
        assert r.status_code == 429
        assert (await http.get("/v1/stream/a")).content == b"x" * 600  # nothing half-written
        assert (await http.delete("/v1/stream/a")).status_code == 204
        assert (
            await http.put("/v1/stream/b", content=b"z" * 500, headers=octets)
        ).status_code == 201
        assert asgi.byte_streams.total == 500


async def test_a_json_body_nested_too_deep_is_400_logged_and_harmless(
    served: ServeKit, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the decoder's RecursionError escaped the handler: 500 and a traceback."""
    caplog.set_level(logging.INFO, "unbroken")
    _kit, srv = await served()
    deep = "[" * 5000 + "]" * 5000
    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.put("/v1/stream/deep", content=deep, headers=json_type)
        assert r.status_code == 400 and "nested too deeply" in r.text
        assert (await http.put("/v1/stream/j", content="[1]", headers=json_type)).status_code == 201
        r = await http.post("/v1/stream/j", content=deep, headers=json_type)
        assert r.status_code == 400 and "nested too deeply" in r.text
        assert (await http.post("/v1/stream/j", content="[2]", headers=json_type)).status_code in (
            200,
            204,
        )
        assert (await http.get("/v1/stream/j", params={"offset": "-1"})).json() == [1, 2]
    assert any("status=400" in r.getMessage() for r in caplog.records)
    assert not any(r.levelname == "ERROR" for r in caplog.records)
