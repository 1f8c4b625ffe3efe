"""Graceful shutdown (1012, drain within grace, then ``failed: shutdown``) and
mounting inside a FastAPI app (sub-app and router with a dependency)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocketException, status
from starlette.requests import HTTPConnection
from websockets.exceptions import InvalidStatus

from unbroken.protocol.codes import CloseCode
from unbroken.server import Principal
from unbroken.testing import serve

from .conftest import TOKENS, make_kit
from .wire import Wire, end_of, text_of

Served = Any


async def test_shutdown_closes_1012_drains_within_grace_then_fails_the_rest(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    kit = make_kit(shutdown_grace=0.5)
    async with serve(kit.app) as srv:
        w = await Wire.open(srv.url)
        quick = await w.start("quick", "forever", "g-quick")
        stuck = await w.start("stuck", "forever", "g-stuck")
        await kit.reached["g-quick"].wait()
        await kit.reached["g-stuck"].wait()
        stopping = srv.stop()
        assert await w.expect_close() == CloseCode.SERVICE_RESTART
        # "quick" was still running when the server began to stop; it finishes now
        assert (await kit.meta(quick)).status == "running"  # type: ignore[union-attr]
        kit.gates["g-quick"].set()
        await stopping
    q = await kit.meta(quick)
    s = await kit.meta(stuck)
    assert q is not None and (q.status, q.error) == ("completed", "")
    assert s is not None and (s.status, s.error) == ("failed", "shutdown")
    assert not kit.app.hub.runs and not kit.app.connections
    assert kit.app.hub.accepting is False
    logs = [r.getMessage() for r in caplog_info.records]
    assert any(m.startswith("draining runs=") for m in logs)
    assert any(f"run ended stream={stuck} status=failed error=shutdown" in m for m in logs)


async def test_starts_are_refused_while_shutting_down() -> None:
    kit = make_kit(shutdown_grace=0.5)
    async with serve(kit.app) as srv:
        w = await Wire.open(srv.url)
        kit.app.hub.accepting = False  # the first thing shutdown() does
        await w.send(w.cs.start("late", "echo", "x"))
        await w.until(lambda _o: bool(w.errors))
        assert w.errors[0].code == "shutting_down"
        assert w.errors[0].retry_after_ms == 1000
        await w.close()


async def test_mounted_under_a_prefix_in_fastapi() -> None:
    kit = make_kit(health_detail=True)  # /healthz shows the epoch only when asked
    api = FastAPI(lifespan=kit.app.lifespan)
    api.mount("/agent", kit.app.asgi())

    @api.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hi": "there"}

    async with serve(api, path="/agent/ws") as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "echo", "mounted")
        assert text_of(await w.read_to_end(sid)) == "mounted"
        await w.close()
        async with httpx.AsyncClient(base_url=srv.http) as http:
            health = await http.get("/agent/healthz")
            assert health.status_code == 200
            assert health.json()["epoch"] == kit.app.store.epoch
            assert (await http.get("/hello")).json() == {"hi": "there"}


async def principal_from_query(conn: HTTPConnection) -> Principal:
    """An ordinary FastAPI dependency, typed on HTTPConnection so it works for
    WebSockets: browsers cannot set headers on the handshake, so the token comes
    from the query string (or a cookie)."""
    who = TOKENS.get(conn.query_params.get("token", ""))
    if who is None:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")
    return Principal(who, {"via": "query"})


async def test_router_with_a_principal_dependency_from_the_query_string() -> None:
    kit = make_kit(allow_anonymous=False)  # no anonymous access: the dependency decides
    api = FastAPI(lifespan=kit.app.lifespan)
    api.include_router(kit.app.router(principal=principal_from_query), prefix="/r")
    async with serve(api, path="/r/ws") as srv:
        w = await Wire.open(srv.url + "?token=alice-token")
        sid = await w.start("r1", "echo", "routed")
        assert text_of(await w.read_to_end(sid)) == "routed"
        meta = await kit.meta(sid)
        assert meta is not None and meta.owner == "alice"

        # bob may not resume alice's stream: it does not even learn it exists
        bob = await Wire.open(srv.url + "?token=bob-token")
        await bob.replay(sid, kit.app.store.epoch)
        await bob.until(lambda _o: sid in bob.gone)
        assert bob.gone[sid].reason == "forbidden"

        # no token: the dependency refuses the handshake
        with pytest.raises(InvalidStatus) as refused:
            await Wire.open(srv.url)
        assert refused.value.response.status_code == 403
        for c in (w, bob):
            await c.close()
    assert end_of(w.events[sid]).status == "completed"


def test_an_app_without_any_auth_refuses_to_be_served_anonymously() -> None:
    kit = make_kit(allow_anonymous=False)
    with pytest.raises(Exception, match="allow_anonymous"):
        kit.app.asgi()
    with pytest.raises(Exception, match="principal="):
        kit.app.router()


async def test_the_app_itself_is_an_asgi_app_served_alone_with_its_lifespan() -> None:
    """``Unbroken`` is a plain ASGI callable: served alone it runs its lifespan
    (startup opens it for runs, shutdown drains), answers ``/healthz`` (GET and
    HEAD only) and nothing else."""
    kit = make_kit()
    kit.app.hub.accepting = False  # the lifespan's startup opens it again

    async def plain(scope: Any, receive: Any, send: Any) -> None:  # not an Unbroken
        await kit.app(scope, receive, send)

    async with serve(plain, path="/ws") as srv:
        w = await Wire.open(srv.url)  # uvicorn accepts once the lifespan started
        sid = await w.start("r1", "echo", "alone")
        assert text_of(await w.read_to_end(sid)) == "alone"
        assert kit.app.hub.accepting
        await w.close()
        async with httpx.AsyncClient(base_url=srv.http) as http:
            health = await http.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"ok": True})
            assert (await http.head("/healthz")).status_code == 200
            assert (await http.post("/healthz")).status_code == 405
            assert (await http.get("/nothing")).status_code == 404
        with pytest.raises(InvalidStatus):  # a WebSocket elsewhere is refused
            await Wire.open(srv.url.replace("/ws", "/other"))
    assert not kit.app.hub.accepting  # the lifespan's shutdown ran


async def test_the_app_object_mounts_in_fastapi_as_it_is() -> None:
    kit = make_kit()
    api = FastAPI(lifespan=kit.app.lifespan)
    api.mount("/agent", kit.app)
    async with serve(api, path="/agent/ws") as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "echo", "mounted as is")
        assert text_of(await w.read_to_end(sid)) == "mounted as is"
        await w.close()
        async with httpx.AsyncClient(base_url=srv.http) as http:
            assert (await http.get("/agent/healthz")).json() == {"ok": True}
