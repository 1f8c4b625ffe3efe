"""The origin policy on a real server (issue 15, part 4): cross-site WebSocket hijacking
is refused by default, an allowlist opens exact origins and wildcard subdomains, and
the same rules drive CORS on ``/healthz``.

Before this, a handshake with ``Origin: https://evil.example`` was accepted: a page
on any site could ride a user's cookies into their streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from unbroken.client import Client
from unbroken.protocol.frames import Hello, encode
from unbroken.server.policy import OriginPolicy
from unbroken.testing import RunningServer

from .conftest import TIMEOUT, ServeKit, token

WS = [Subprotocol("unbroken.v1")]


async def open_ws(srv: RunningServer, origin: str | None) -> ClientConnection:
    """A raw WebSocket handshake carrying ``Origin: origin`` (None: no header)."""
    return await connect(
        srv.url,
        origin=Origin(origin) if origin is not None else None,
        subprotocols=WS,
        open_timeout=TIMEOUT,
    )


async def welcomed(srv: RunningServer, origin: str | None) -> dict[str, Any]:
    """Handshake with ``origin``, send ``hello``, return the server's first frame."""
    async with await open_ws(srv, origin) as ws:
        await ws.send(encode(Hello(caps=[])).decode())
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return frame


async def text_of(st: Any) -> str:
    """Consume a client stream to its end; its verified text."""
    async for _ in st:
        pass
    assert st.result.complete
    return str(st.result.text)


async def refused_status(srv: RunningServer, origin: str) -> int:
    """The HTTP status a handshake with ``origin`` is refused with (fails if accepted)."""
    with pytest.raises(InvalidStatus) as info:
        ws = await open_ws(srv, origin)
        await ws.close()
    return info.value.response.status_code


# ------------------------------------------------------------------ the safe default
async def test_handshake_from_another_site_is_refused_with_403_by_default(
    served: ServeKit, caplog_info: pytest.LogCaptureFixture
) -> None:
    kit, srv = await served()
    assert await refused_status(srv, "https://evil.example") == 403
    lines = [r.getMessage() for r in caplog_info.records if "origin refused" in r.getMessage()]
    assert lines, "the refusal is logged"
    assert "'https://evil.example'" in lines[0]
    assert "reason=origin not allowed" in lines[0]
    assert not kit.app.connections  # nothing of the app ran for it


async def test_refusal_body_says_why(served: ServeKit) -> None:
    _, srv = await served()
    with pytest.raises(InvalidStatus) as info:
        await open_ws(srv, "https://evil.example")
    assert b"origin not allowed" in info.value.response.body


async def test_page_on_the_same_host_is_accepted_whatever_its_port(served: ServeKit) -> None:
    _, srv = await served()
    # the page on another port of the server's host: cookies are not port-scoped
    assert (await welcomed(srv, "http://127.0.0.1:1"))["t"] == "welcome"
    assert (await welcomed(srv, f"http://127.0.0.1:{srv.port}"))["t"] == "welcome"


async def test_a_page_naming_another_host_of_the_machine_is_refused(served: ServeKit) -> None:
    _, srv = await served()  # Host is 127.0.0.1: "localhost" is another site to a browser
    assert await refused_status(srv, f"http://localhost:{srv.port}") == 403


async def test_clients_without_origin_are_unaffected(served: ServeKit) -> None:
    _, srv = await served(policy=OriginPolicy(allow_same_host=False))
    assert (await welcomed(srv, None))["t"] == "welcome"
    async with Client(srv.url) as c:
        st = await c.start("count", {"n": 5})
        assert (await text_of(st)) == "".join(token(i) for i in range(5))


async def test_origin_null_is_refused_unless_allowed(served: ServeKit) -> None:
    _, srv = await served()
    assert await refused_status(srv, "null") == 403
    _, srv2 = await served(policy=OriginPolicy(allowed_origins=("null",)))
    assert (await welcomed(srv2, "null"))["t"] == "welcome"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example/",  # a path: not an origin
        "https://user@127.0.0.1",
        "127.0.0.1",
        "https://127.0.0.1:99999",
        "https://[::1",
        "x" * 5000,
    ],
)
async def test_malformed_origin_is_refused_and_quoted_bounded(
    served: ServeKit, caplog_info: pytest.LogCaptureFixture, origin: str
) -> None:
    _, srv = await served()
    try:
        status = await refused_status(srv, origin)
    except ValueError:
        pytest.skip("the client library refuses to send this header")
    assert status == 403
    line = next(r.getMessage() for r in caplog_info.records if "origin refused" in r.getMessage())
    assert "\u202e" not in line and len(line) < 600


async def raw_handshake(srv: RunningServer, origin: bytes) -> int:
    """An upgrade request written byte by byte (headers a client library refuses to
    send); the status line's code."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nOrigin: " + origin + b"\r\n\r\n"
        )
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        return int(line.split()[1])
    finally:
        writer.close()


async def test_non_ascii_origin_is_refused_and_escaped_in_the_log(
    served: ServeKit, caplog_info: pytest.LogCaptureFixture
) -> None:
    _, srv = await served()
    # UTF-8 of a right-to-left override: would reorder the log line for a reader
    assert await raw_handshake(srv, b"https://127.0.0.1\xe2\x80\xae.evil") == 403
    line = next(r.getMessage() for r in caplog_info.records if "origin refused" in r.getMessage())
    assert "\\x80" in line and "\x80" not in line
    assert "reason=malformed Origin header" in line


# ------------------------------------------------------------------ the allowlist
ALLOW = OriginPolicy(
    allowed_origins=("https://app.example.com", "https://*.example.org", "http://localhost:5173"),
    allow_same_host=False,
)


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com:443", True),  # the same origin, spelled otherwise
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:8443", False),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),  # the wildcard names subdomains only
        ("https://example.org.evil.net", False),
        ("https://evil-example.org", False),
        ("https://evilexample.org", False),
        ("http://localhost:5173", True),
        ("http://localhost:5174", False),
        ("http://127.0.0.1:5173", False),  # same host as the server, but not allowed
    ],
)
async def test_allowlist_exact_and_wildcard(served: ServeKit, origin: str, ok: bool) -> None:
    _, srv = await served(policy=ALLOW)
    if ok:
        assert (await welcomed(srv, origin))["t"] == "welcome"
    else:
        assert await refused_status(srv, origin) == 403


async def test_allow_any_origin_is_an_explicit_opt_in(served: ServeKit) -> None:
    _, srv = await served(policy=OriginPolicy(allow_any_origin=True))
    assert (await welcomed(srv, "https://evil.example"))["t"] == "welcome"


async def test_refused_handshakes_leave_a_running_stream_alone(served: ServeKit) -> None:
    kit, srv = await served()
    async with Client(srv.url) as c:
        st = await c.start("count", {"n": 50, "pause_at": 10, "gate": "g"})
        await asyncio.wait_for(kit.reached["g"].wait(), TIMEOUT)
        statuses = await asyncio.gather(
            *(refused_status(srv, f"https://evil{i}.example") for i in range(20))
        )
        assert set(statuses) == {403}
        kit.gates["g"].set()
        assert (await text_of(st)) == "".join(token(i) for i in range(50))
        assert [e.kind for e in c.history].count("connected") == 1


# ------------------------------------------------------------------ CORS on /healthz
async def test_cors_echoes_an_allowed_origin_with_vary(served: ServeKit) -> None:
    _, srv = await served(policy=ALLOW)
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.get("/healthz", headers={"origin": "https://a.example.org"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://a.example.org"
        assert r.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in r.headers
        r = await http.get("/healthz", headers={"origin": "https://evil.example"})
        assert r.status_code == 200  # answered, but a browser will not show it to the page
        assert "access-control-allow-origin" not in r.headers
        assert r.headers["vary"] == "Origin"
        r = await http.get("/healthz")
        assert "access-control-allow-origin" not in r.headers


async def test_cors_default_allows_the_same_host_only(served: ServeKit) -> None:
    _, srv = await served()
    async with httpx.AsyncClient(base_url=srv.http) as http:
        page = "http://127.0.0.1:3000"
        r = await http.get("/healthz", headers={"origin": page})
        assert r.headers["access-control-allow-origin"] == page
        r = await http.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_cors_preflight(served: ServeKit) -> None:
    policy = OriginPolicy(
        allowed_origins=("https://app.example.com",),
        cors_allow_headers=("Authorization",),
        cors_allow_credentials=True,
        cors_max_age=120,
    )
    _, srv = await served(policy=policy)
    async with httpx.AsyncClient(base_url=srv.http) as http:
        ok = {
            "origin": "https://app.example.com",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        }
        r = await http.options("/healthz", headers=ok)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "GET" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == "authorization"
        assert r.headers["access-control-max-age"] == "120"
        assert r.headers["vary"] == "Origin"
        for bad, why in [
            ({**ok, "origin": "https://evil.example"}, b"origin"),
            ({**ok, "access-control-request-method": "DELETE"}, b"method"),
            ({**ok, "access-control-request-headers": "x-other"}, b"headers"),
        ]:
            r = await http.options("/healthz", headers=bad)
            assert r.status_code == 400
            assert why in r.content
            assert "access-control-allow-origin" not in r.headers
        r = await http.options("/healthz")  # not a preflight: what the endpoint allows
        assert r.status_code == 204
        assert "OPTIONS" in r.headers["allow"]


async def test_fastapi_router_checks_origin_too(caplog: pytest.LogCaptureFixture) -> None:
    from fastapi import FastAPI

    from unbroken.server import Unbroken
    from unbroken.testing import serve

    app = Unbroken(allow_anonymous=True, policy=ALLOW)
    api = FastAPI()
    api.include_router(app.router("/agent/ws"))
    caplog.set_level(logging.INFO, logger="unbroken")
    async with serve(api, path="/agent/ws") as srv:
        assert await refused_status(srv, "https://evil.example") == 403
        assert (await welcomed(srv, "https://app.example.com"))["t"] == "welcome"


async def test_without_the_denial_response_extension_the_refusal_is_a_close_before_accept() -> None:
    """Another ASGI server (no ``websocket.http.response``): ``websocket.close`` before
    ``websocket.accept``, which servers answer with a 403."""
    from unbroken.server import Unbroken
    from unbroken.server.asgi import serve_websocket

    app = Unbroken(allow_anonymous=True)
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))
        answered.set()

    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"host", b"api.example.com"), (b"origin", b"https://evil.example")],
        "subprotocols": ["unbroken.v1"],
    }
    await serve_websocket(app, scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    scope["headers"] = [(b"host", b"api.example.com"), (b"origin", b"https://api.example.com")]
    sent.clear()
    answered.clear()
    task = asyncio.create_task(serve_websocket(app, scope, receive, send))
    await asyncio.wait_for(answered.wait(), TIMEOUT)
    task.cancel()
    assert sent[0] == {"type": "websocket.accept", "subprotocol": "unbroken.v1"}
