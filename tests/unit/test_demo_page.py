"""The demo page's ASGI wrapper (:mod:`unbroken.server.demo_page`) called directly:
what it serves, what it passes on, and what its faults do to a tagged WebSocket. The
page in a real browser against ``unbroken serve --demo-page``:
``tests/browser/test_demo_page.py``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unbroken.cli import app as cli
from unbroken.server.demo_page import CUT_CODE, DemoPage

Message = dict[str, Any]


class Recorder:
    """An ASGI app that records the scopes it got, and for a WebSocket: accepts, then
    echoes each message until a disconnect, which it records."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.got: list[Message] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"inner"})
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            self.got.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})


async def http(site: DemoPage, path: str, method: str = "GET", query: str = "") -> Message:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode()}
    await site(scope, receive, send)
    start, body = sent
    headers = dict(start["headers"])
    return {"status": start["status"], "type": headers.get(b"content-type"), "body": body["body"]}


def site(inner: Recorder, tmp_path: Path, built: bool = True) -> DemoPage:
    bundle = tmp_path / "unbroken.js"
    if built:
        bundle.write_text("export const x = 1;\n")
    return DemoPage(inner, ws_path="/agent/ws", agents=["b", "a</script>"], bundle=bundle)


async def test_the_page_carries_the_apps_path_and_agents_safely(tmp_path: Path) -> None:
    got = await http(site(Recorder(), tmp_path), "/")
    assert got["status"] == 200 and got["type"] == b"text/html; charset=utf-8"
    page = got["body"].decode()
    assert "__UNBROKEN_DEMO_CONFIG__" not in page
    config = page.split('<script id="config" type="application/json">', 1)[1].split("</script>")[0]
    assert json.loads(config) == {
        "wsPath": "/agent/ws",
        "agents": ["a</script>", "b"],
        "auth": False,
    }


async def test_the_bundle_or_a_503_that_says_how_to_build_it(tmp_path: Path) -> None:
    got = await http(site(Recorder(), tmp_path), "/unbroken.js")
    assert (got["status"], got["type"], got["body"]) == (
        200,
        b"text/javascript",
        b"export const x = 1;\n",
    )
    missing = await http(site(Recorder(), tmp_path / "nowhere", built=False), "/unbroken.js")
    assert missing["status"] == 503
    assert b"./dev setup" in missing["body"] and b"npm run build" in missing["body"]
    assert (await http(site(Recorder(), tmp_path), "/unbroken.js.map"))["status"] == 404


async def test_other_requests_go_to_the_app(tmp_path: Path) -> None:
    inner = Recorder()
    demo = site(inner, tmp_path)
    assert (await http(demo, "/healthz"))["body"] == b"inner"
    assert (await http(demo, "/", method="POST"))["body"] == b"inner"
    assert [s["path"] for s in inner.scopes] == ["/healthz", "/"]


async def test_the_fault_control_refuses_bad_requests(tmp_path: Path) -> None:
    demo = site(Recorder(), tmp_path)
    assert (await http(demo, "/demo/fault", query="conn=x&fault=cut"))["status"] == 405
    bad = await http(demo, "/demo/fault", method="POST", query="conn=x&fault=melt")
    assert bad["status"] == 400
    none = await http(demo, "/demo/fault", method="POST", query="conn=x&fault=cut")
    assert json.loads(none["body"]) == {"fault": "cut", "links": 0}


class Socket:
    """One WebSocket through the wrapper: the page's side of it."""

    def __init__(self, demo: DemoPage, query: str) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.sent_changed = asyncio.Event()
        scope = {"type": "websocket", "path": "/agent/ws", "query_string": query.encode()}
        self.task = asyncio.ensure_future(demo(scope, self.incoming.get, self._send))

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        self.sent_changed.set()

    async def wait_sent(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.sent) < n:
                self.sent_changed.clear()
                await self.sent_changed.wait()


async def test_a_cut_closes_only_the_pages_own_sockets(tmp_path: Path) -> None:
    inner = Recorder()
    demo = site(inner, tmp_path)
    mine, other = Socket(demo, "demo=page1"), Socket(demo, "demo=page2")
    for s in (mine, other):
        s.incoming.put_nowait({"type": "websocket.receive", "text": "hi"})
        await s.wait_sent(2)  # accept, echo
    got = await http(demo, "/demo/fault", method="POST", query="conn=page1&fault=cut")
    assert json.loads(got["body"]) == {"fault": "cut", "links": 1}
    async with asyncio.timeout(5):
        await mine.task  # the app saw the peer go
    assert mine.sent[-1] == {
        "type": "websocket.close",
        "code": CUT_CODE,
        "reason": "demo: link cut",
    }
    assert {"type": "websocket.disconnect", "code": CUT_CODE} in inner.got
    other.incoming.put_nowait({"type": "websocket.receive", "text": "still"})
    await other.wait_sent(3)
    assert other.sent[-1] == {"type": "websocket.send", "text": "still"}
    other.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await other.task
    assert demo.links == {}


async def test_a_blackhole_passes_nothing_either_way_until_the_peer_goes(tmp_path: Path) -> None:
    inner = Recorder()
    demo = site(inner, tmp_path)
    s = Socket(demo, "demo=page1")
    await s.wait_sent(1)
    await http(demo, "/demo/fault", method="POST", query="conn=page1&fault=blackhole")
    s.incoming.put_nowait({"type": "websocket.receive", "text": "lost"})
    s.incoming.put_nowait({"type": "websocket.disconnect", "code": 4004})
    async with asyncio.timeout(5):
        await s.task
    assert inner.got == [{"type": "websocket.disconnect", "code": 4004}]
    assert s.sent == [{"type": "websocket.accept"}]


async def test_an_untagged_socket_is_the_apps_alone(tmp_path: Path) -> None:
    inner = Recorder()
    demo = site(inner, tmp_path)
    s = Socket(demo, "")
    await s.wait_sent(1)
    assert demo.links == {}
    s.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await s.task


def test_demo_page_needs_an_unbroken_app() -> None:
    result = CliRunner().invoke(
        cli, ["serve", "tests.unit.test_demo_page:Recorder", "--demo-page", "--port", "0"]
    )
    assert result.exit_code == 2
    assert "--demo-page needs an Unbroken app" in result.output
