"""The HTTP control API speaks Toxiproxy's JSON: routes, status codes, keys, units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from chaos_peers import PeerServer, connect

from unbroken.chaos import Bandwidth, Latency, Slicer
from unbroken.chaos.control import ControlServer, ProxyRegistry

T = 5.0


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, ProxyRegistry]]:
    registry = ProxyRegistry(seed=1)
    server = ControlServer(registry, port=0)
    async with server, httpx.AsyncClient(base_url=server.url, timeout=T) as client:
        yield client, registry
    await registry.close()


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


async def test_version_and_request_id(api: tuple[httpx.AsyncClient, ProxyRegistry]) -> None:
    http, _ = api
    r = await http.get("/version")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json;charset=utf-8"
    assert r.text.endswith("\n") and "version" in r.json()
    assert len(r.headers["x-toxiproxy-request-id"]) == 20


async def test_proxy_lifecycle_round_trips_toxiproxy_json(
    api: tuple[httpx.AsyncClient, ProxyRegistry], echo: PeerServer
) -> None:
    http, registry = api
    upstream = f"127.0.0.1:{echo.address[1]}"
    r = await http.post(
        "/proxies", json={"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream}
    )
    assert r.status_code == 201
    body = r.json()
    assert list(body) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert body["name"] == "echo" and body["upstream"] == upstream
    assert body["enabled"] is True and body["toxics"] == []
    port = _port(body["listen"])
    assert port != 0 and registry.get("echo").port == port

    client = await connect(port)
    client.send(b"via api")
    assert await asyncio.wait_for(client.wait_bytes(7), T) == b"via api"

    r = await http.post("/proxies", json={"name": "echo", "upstream": upstream})
    assert r.status_code == 409
    assert r.json() == {"error": "proxy already exists", "status": 409}
    assert r.headers["content-type"].startswith("text/plain")
    r = await http.post("/proxies", json={"name": "x"})
    assert (r.status_code, r.json()["error"]) == (400, "missing required field: upstream")
    r = await http.post("/proxies", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")

    r = await http.get("/proxies")
    assert r.status_code == 200 and list(r.json()) == ["echo"]
    assert r.json()["echo"]["listen"] == body["listen"]
    r = await http.get("/proxies/echo")
    assert r.status_code == 200 and r.json() == body

    # disable (down) with POST as toxiproxy-python does, enable with PATCH
    r = await http.post("/proxies/echo", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        await connect(port)
    r = await http.patch("/proxies/echo", json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert _port(r.json()["listen"]) == port
    again = await connect(port)
    again.send(b"up")
    assert await asyncio.wait_for(again.wait_bytes(2), T) == b"up"

    r = await http.delete("/proxies/echo")
    assert r.status_code == 204 and r.content == b""
    r = await http.get("/proxies/echo")
    assert r.status_code == 404 and r.json() == {"error": "proxy not found", "status": 404}


async def test_toxic_crud_round_trips_toxiproxy_json_and_units(
    api: tuple[httpx.AsyncClient, ProxyRegistry], echo: PeerServer
) -> None:
    http, registry = api
    upstream = f"127.0.0.1:{echo.address[1]}"
    r = await http.post("/proxies", json={"name": "p", "upstream": upstream})
    assert r.status_code == 201
    proxy = registry.get("p")

    r = await http.post(
        "/proxies/p/toxics",
        json={"type": "latency", "attributes": {"latency": 100, "jitter": 10}},
    )
    assert r.status_code == 200  # Toxiproxy answers 200, not 201
    toxic = r.json()
    assert list(toxic) == ["attributes", "name", "type", "stream", "toxicity"]
    assert toxic == {
        "attributes": {"latency": 100, "jitter": 10},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    installed = proxy.get_toxic("latency_downstream")
    assert installed is not None and isinstance(installed.toxic, Latency)
    assert installed.toxic.latency == pytest.approx(0.1)  # ms -> s

    r = await http.post("/proxies/p/toxics", json={"type": "latency"})
    assert r.status_code == 409 and r.json()["error"] == "toxic already exists"
    r = await http.post("/proxies/p/toxics", json={"type": "nope"})
    assert r.status_code == 400 and r.json()["error"] == "invalid toxic type"
    r = await http.post("/proxies/p/toxics", json={"type": "latency", "stream": "sideways"})
    assert r.status_code == 400
    assert r.json()["error"] == "stream was invalid, can be either upstream or downstream"

    r = await http.post(
        "/proxies/p/toxics",
        json={
            "name": "bw",
            "type": "bandwidth",
            "stream": "upstream",
            "toxicity": 0.5,
            "attributes": {"rate": 100},
        },
    )
    assert r.status_code == 200 and r.json()["toxicity"] == 0.5
    bw = proxy.get_toxic("bw")
    assert bw is not None and isinstance(bw.toxic, Bandwidth)
    assert bw.toxic.rate == 100_000  # KB/s -> bytes/s
    r = await http.post(
        "/proxies/p/toxics",
        json={
            "type": "slicer",
            "attributes": {"average_size": 64, "size_variation": 8, "delay": 250},
        },
    )
    sl = proxy.get_toxic("slicer_downstream")
    assert sl is not None and isinstance(sl.toxic, Slicer)
    assert sl.toxic.delay == pytest.approx(0.000250)  # µs -> s
    assert r.json()["attributes"] == {"average_size": 64, "size_variation": 8, "delay": 250}

    r = await http.get("/proxies/p/toxics")
    # upstream toxics are listed first, as Toxiproxy does
    assert [t["name"] for t in r.json()] == ["bw", "latency_downstream", "slicer_downstream"]
    r = await http.get("/proxies/p")
    assert [t["name"] for t in r.json()["toxics"]] == [
        t["name"] for t in (await http.get("/proxies/p/toxics")).json()
    ]

    r = await http.post("/proxies/p/toxics/latency_downstream", json={"attributes": {"latency": 5}})
    assert r.status_code == 200 and r.json()["attributes"] == {"latency": 5, "jitter": 10}
    r = await http.patch("/proxies/p/toxics/latency_downstream", json={"toxicity": 0.25})
    assert r.json()["toxicity"] == 0.25 and r.json()["attributes"]["latency"] == 5
    r = await http.get("/proxies/p/toxics/latency_downstream")
    assert r.status_code == 200 and r.json()["name"] == "latency_downstream"

    r = await http.delete("/proxies/p/toxics/latency_downstream")
    assert r.status_code == 204
    r = await http.delete("/proxies/p/toxics/latency_downstream")
    assert r.status_code == 404 and r.json() == {"error": "toxic not found", "status": 404}
    r = await http.get("/proxies/nope/toxics")
    assert r.status_code == 404

    r = await http.post("/reset")
    assert r.status_code == 204
    assert (await http.get("/proxies/p/toxics")).json() == []


async def test_populate_and_browser_block(
    api: tuple[httpx.AsyncClient, ProxyRegistry], echo: PeerServer
) -> None:
    http, _ = api
    upstream = f"127.0.0.1:{echo.address[1]}"
    payload = [
        {"name": "a", "listen": "127.0.0.1:0", "upstream": upstream},
        {"name": "b", "listen": "127.0.0.1:0", "upstream": upstream, "enabled": False},
    ]
    r = await http.post("/populate", json=payload)
    assert r.status_code == 201
    proxies = r.json()["proxies"]
    assert [p["name"] for p in proxies] == ["a", "b"]
    assert [p["enabled"] for p in proxies] == [True, False]
    r = await http.post("/populate", json=[{"name": "c"}])
    assert r.status_code == 400
    assert r.json()["error"] == "missing required field: upstream at proxy 1"

    r = await http.get("/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert r.status_code == 403 and r.text == "User agent not allowed\n"


async def test_toxiproxy_python_client_drives_the_api(echo: PeerServer) -> None:
    toxiproxy = pytest.importorskip("toxiproxy")
    from toxiproxy.api import APIConsumer

    registry = ProxyRegistry()
    async with ControlServer(registry, port=0) as server:
        upstream = f"127.0.0.1:{echo.address[1]}"
        saved = (APIConsumer.host, APIConsumer.port)

        def configure() -> tuple[str, list[str], bool, bool]:
            tp = toxiproxy.Toxiproxy()
            tp.update_api_consumer("127.0.0.1", server.port)
            version = tp.version()
            proxy = tp.create(upstream=upstream, name="py")
            proxy.add_toxic(type="latency", attributes={"latency": 20})
            names = list(proxy.toxics())
            proxy.disable()
            disabled = tp.get_proxy("py").enabled
            proxy.enable()
            enabled = tp.get_proxy("py").enabled
            return version.decode(), names, disabled, enabled

        def destroy() -> list[str]:
            tp = toxiproxy.Toxiproxy()
            tp.destroy(tp.get_proxy("py"))
            return list(tp.proxies())

        try:
            version, names, disabled, enabled = await asyncio.to_thread(configure)
            assert "version" in version
            assert names == ["latency_downstream"]
            assert (disabled, enabled) == (False, True)
            proxy = registry.get("py")
            client = await connect(proxy.port)
            client.send(b"py")
            assert await asyncio.wait_for(client.wait_bytes(2), T) == b"py"
            assert await asyncio.to_thread(destroy) == []
        finally:
            APIConsumer.host, APIConsumer.port = saved
    await registry.close()
