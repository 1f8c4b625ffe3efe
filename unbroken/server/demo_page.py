"""``unbroken serve --demo-page``: a page, served by the same server, that streams an
agent's answer with the browser client and lets its user fault the link for real.

:class:`DemoPage` is a small ASGI wrapper around an app's ASGI callable:

- ``GET /``: the page (``static/demo.html``, shipped in the package), told the app's
  WebSocket path and agent names;
- ``GET /unbroken.js``: the built browser client (``static/unbroken.js`` in an
  installed wheel; ``js/dist/unbroken.js`` of a checkout: ``./dev setup`` or
  ``cd js && npm ci && npm run build``), or a 503 that says how to build it (the
  page shows that text);
- ``POST /demo/fault?conn=ID&fault=cut|blackhole``: a fault on the WebSocket
  connections the page opened with ``?demo=ID`` in their URL (a random id each page
  makes: a visitor can fault only its own links). ``cut``: the server closes them
  (close 1001) and the app sees the peer gone; ``blackhole``: nothing more passes
  either way and nothing closes, until the page's silence detector drops the link;
- everything else goes to the app unchanged (its WebSocket, ``/healthz``, HTTP
  streams, the lifespan).

The page's origin is the server's own host, which the default origin policy allows;
the policy is not changed. The page is a development aid: it lists the app's agent
names, so serve it only where that is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The browser client shipped in the wheel (pyproject.toml's force-include).
PACKAGED_BUNDLE: Final = Path(__file__).resolve().parent / "static" / "unbroken.js"
#: The browser client in a repository checkout, once built.
CHECKOUT_BUNDLE: Final = Path(__file__).resolve().parents[2] / "js" / "dist" / "unbroken.js"
#: The bundle served: the installed package's, else the checkout's.
DEFAULT_BUNDLE: Final = PACKAGED_BUNDLE if PACKAGED_BUNDLE.exists() else CHECKOUT_BUNDLE
#: The client's files served next to the page: the bundle, protocol v1's codec (which
#: the bundle loads from next to itself when a server speaks v1) and BLAKE2b in
#: JavaScript (loaded the same way where WebAssembly is refused).
_BUNDLE_FILES: Final = ("/unbroken.js", "/unbroken-v1.js", "/unbroken-blake2b.js")

#: What ``GET /unbroken.js`` answers when the bundle is not built.
NOT_BUILT: Final = (
    "The browser client is not built: {bundle} is missing.\n"
    "Build it in a checkout of unbroken: ./dev setup\n"
    "(or: cd js && npm ci && npm run build), then reload this page.\n"
)
#: The close code of a ``cut``: 1001 (going away); the client reconnects and resumes.
CUT_CODE: Final = 1001
#: Where the placeholder for the page's configuration is in ``demo.html``.
_CONFIG_MARK: Final = b"__UNBROKEN_DEMO_CONFIG__"

Fault = Literal["cut", "blackhole"]


def page_html() -> bytes:
    """The page's template, from the package (``unbroken/server/static/demo.html``)."""
    return resources.files("unbroken.server").joinpath("static/demo.html").read_bytes()


def _script_json(value: object) -> bytes:
    """JSON safe inside an HTML ``<script>`` element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


class _Link:
    """One WebSocket a page opened: the fault in force on it, if any."""

    def __init__(self) -> None:
        self.fault: Fault | None = None
        self.cut = asyncio.Event()
        self.closed = False

    def set(self, fault: Fault) -> None:
        if self.fault is None:
            self.fault = fault
            if fault == "cut":
                self.cut.set()


class DemoPage:
    """ASGI: the demo page, the bundle and the fault control over ``inner``.

    ``ws_path`` is the app's WebSocket path (the page connects to it on its own host),
    ``agents`` the names the page offers, ``auth`` whether the page should ask for a
    token (the app refuses anonymous connections), ``bundle`` the built
    ``unbroken.js``.
    """

    def __init__(
        self,
        inner: ASGI,
        *,
        ws_path: str = "/ws",
        agents: Iterable[str] = (),
        auth: bool = False,
        bundle: Path | None = None,
    ) -> None:
        self.inner = inner
        self.bundle = bundle if bundle is not None else DEFAULT_BUNDLE
        config = {"wsPath": ws_path, "agents": sorted(agents), "auth": auth}
        self.page = page_html().replace(_CONFIG_MARK, _script_json(config))
        #: the open WebSockets tagged by a page, by its id
        self.links: dict[str, set[_Link]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        if kind == "http":
            method = scope.get("method", "GET")
            if path == "/" and method in ("GET", "HEAD"):
                await _respond(send, 200, self.page, "text/html; charset=utf-8", method)
                return
            if path.removesuffix(".map") in _BUNDLE_FILES and method in ("GET", "HEAD"):
                await self._bundle(send, path, method)
                return
            if path == "/demo/fault":
                await self._fault(scope, send, method)
                return
        elif kind == "websocket":
            conn = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("demo")
            if conn:
                await self._faultable(conn, scope, receive, send)
                return
        await self.inner(scope, receive, send)

    async def _bundle(self, send: Send, path: str, method: str) -> None:
        file = self.bundle if path == "/unbroken.js" else self.bundle.with_name(path[1:])
        try:
            body = file.read_bytes()
        except OSError:
            if path != "/unbroken.js":
                await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8", method)
                return
            text = NOT_BUILT.format(bundle=self.bundle).encode()
            await _respond(send, 503, text, "text/plain; charset=utf-8", method)
            return
        ctype = "text/javascript" if path.endswith(".js") else "application/json"
        await _respond(send, 200, body, ctype, method)

    async def _fault(self, scope: Scope, send: Send, method: str) -> None:
        if method != "POST":
            await _respond(send, 405, b"POST only\n", "text/plain; charset=utf-8", method)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        fault: Fault
        if query.get("fault") == "cut":
            fault = "cut"
        elif query.get("fault") == "blackhole":
            fault = "blackhole"
        else:
            await _respond(send, 400, b"fault must be cut or blackhole\n", "text/plain", method)
            return
        links = list(self.links.get(query.get("conn", ""), ()))
        for link in links:
            link.set(fault)
        log.info("demo page fault=%s conn=%s links=%d", fault, query.get("conn"), len(links))
        body = json.dumps({"fault": fault, "links": len(links)}).encode()
        await _respond(send, 200, body, "application/json", method)

    async def _faultable(self, conn: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one WebSocket through a link the fault control can cut or silence."""
        link = _Link()
        self.links.setdefault(conn, set()).add(link)
        pending: asyncio.Task[Message] | None = None

        async def faulty_receive() -> Message:
            nonlocal pending
            while True:
                if link.cut.is_set():
                    return {"type": "websocket.disconnect", "code": CUT_CODE}
                if pending is None:
                    pending = asyncio.ensure_future(receive())
                cut = asyncio.ensure_future(link.cut.wait())
                try:
                    await asyncio.wait((pending, cut), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    cut.cancel()
                if link.cut.is_set():
                    continue
                message, pending = pending.result(), None
                if link.fault == "blackhole" and message["type"] == "websocket.receive":
                    continue  # the page's frames never arrive
                return message

        async def faulty_send(message: Message) -> None:
            if link.fault is None or message["type"] == "websocket.accept":
                await send(message)
            elif link.fault == "cut" and not link.closed:
                link.closed = True
                with contextlib.suppress(Exception):
                    await send(
                        {"type": "websocket.close", "code": CUT_CODE, "reason": "demo: link cut"}
                    )
            # else the frame is lost (blackhole), or the socket is already closed (cut)

        async def cutter() -> None:
            # a cut closes the socket even while the app has nothing to send
            await link.cut.wait()
            await faulty_send({"type": "websocket.close"})

        watch = asyncio.ensure_future(cutter())
        try:
            await self.inner(scope, faulty_receive, faulty_send)
        finally:
            watch.cancel()
            if pending is not None:
                pending.cancel()
            links = self.links.get(conn)
            if links is not None:
                links.discard(link)
                if not links:
                    self.links.pop(conn, None)


async def _respond(send: Send, status: int, body: bytes, ctype: str, method: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
