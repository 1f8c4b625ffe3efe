"""The direct text send of unbroken's WebSocket layer (``send_text_now``): an events
frame is written straight to the socket when nothing needs waiting for, and an
answer still arrives exact; a ``send`` wrapped by another ASGI layer keeps every
message (the direct send is not used behind it). A paced token goes from the memory
log's append to the socket without a read of the log (``Connection._push``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.server.asgi import ASGITransport
from unbroken.server.connection import Connection
from unbroken.server.websocket import (
    RECEIVE_EXTENSION,
    SEND_TEXT_EXTENSION,
    UnbrokenWebSocketProtocol,
)
from unbroken.store.memory import MemoryStore
from unbroken.testing import serve

from .conftest import make_kit, token
from .hardened import serve_hardened
from .wire import Wire, assert_exact, text_of


async def test_events_frames_take_the_direct_send_and_arrive_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: Counter[bool] = Counter()
    direct = UnbrokenWebSocketProtocol.send_text_now

    def counting(self: UnbrokenWebSocketProtocol, data: bytes) -> bool:
        ok = direct(self, data)
        sent[ok] += 1
        return ok

    monkeypatch.setattr(UnbrokenWebSocketProtocol, "send_text_now", counting)
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "count", {"n": 3000})
        events = await w.read_to_end(sid)
        w.abort()
    assert_exact(events)  # digests, seqs and the end: the frames are whole and in order
    assert text_of(events) == "".join(token(i) for i in range(3000))
    assert sent[True] >= 2  # started, then events: written directly


async def test_a_wrapped_send_is_never_bypassed() -> None:
    """The direct send belongs to the protocol whose ``send`` the app was given: a
    transport built over any other callable (a wrapper) sends through it."""

    class Layer:
        def __init__(self) -> None:
            self.direct: list[bytes] = []
            self.messages: list[dict[str, Any]] = []

        def send_text_now(self, data: bytes) -> bool:
            self.direct.append(data)
            return True

        async def send(self, message: dict[str, Any]) -> None:
            self.messages.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1000}

    layer = Layer()
    scope = {"type": "websocket", "extensions": {SEND_TEXT_EXTENSION: layer.send_text_now}}

    own = ASGITransport(receive, layer.send, scope=scope)  # type: ignore[arg-type]
    await own.send(b'{"t":"hb"}')
    assert layer.direct == [b'{"t":"hb"}'] and layer.messages == []

    async def wrapper(message: dict[str, Any]) -> None:
        await layer.send(message)

    wrapped = ASGITransport(receive, wrapper, scope=scope)  # type: ignore[arg-type]
    await wrapped.send(b'{"t":"hb"}')
    assert layer.direct == [b'{"t":"hb"}']  # not again
    assert layer.messages == [{"type": "websocket.send", "text": '{"t":"hb"}'}]


async def test_a_wrapped_receive_is_never_bypassed() -> None:
    """The direct receive belongs to the protocol whose ``receive`` the app was given:
    over a wrapper, every message comes through the wrapper."""
    queued = [{"type": "websocket.receive", "text": "direct"}]

    class Layer:
        def receive_nowait(self) -> dict[str, Any] | None:
            return queued.pop(0) if queued else None

        async def receive(self) -> dict[str, Any]:
            return {"type": "websocket.receive", "text": "layer"}

    layer = Layer()
    wait = asyncio.get_running_loop().create_future
    scope = {"type": "websocket", "extensions": {RECEIVE_EXTENSION: (layer.receive_nowait, wait)}}

    async def wrapper() -> dict[str, Any]:
        return {"type": "websocket.receive", "text": "wrapped"}

    async def send(message: dict[str, Any]) -> None:
        pass

    wrapped = ASGITransport(wrapper, send, scope=scope)  # type: ignore[arg-type]
    assert await wrapped.receive() == "wrapped"
    own = ASGITransport(layer.receive, send, scope=scope)  # type: ignore[arg-type]
    assert await own.receive() == "direct"


async def test_the_handshake_headers_are_let_go_once_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """websockets' parser keeps the handshake's request in its generator for the
    connection's life: its headers are emptied once the app accepted (per-connection
    RSS, issue 21); the connection serves on."""
    protocols: list[UnbrokenWebSocketProtocol] = []
    direct = UnbrokenWebSocketProtocol.send_text_now

    def keeping(self: UnbrokenWebSocketProtocol, data: bytes) -> bool:
        if not protocols:
            protocols.append(self)
        return direct(self, data)

    monkeypatch.setattr(UnbrokenWebSocketProtocol, "send_text_now", keeping)
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "count", {"n": 50})
        events = await w.read_to_end(sid)
        (proto,) = protocols
        parser: Any = proto.conn.parser
        request = parser.gi_frame.f_locals.get("request") if parser.gi_frame else None
        assert request is not None  # the handshake's request, held by the parser
        assert len(request.headers) == 0
        assert proto.request is None
        # uvicorn's connection state and ours are in slots: no instance dict of its
        # own per connection (~1.6 KB each before)
        assert vars(proto) == {}
        # the scope (its headers were read into the connection's ConnectInfo) is let
        # go once the app handed its connection's serving to the layer (unbroken.run)
        assert proto.scope is None
        # the connection waits for its next message on the layer's future: no
        # coroutine of uvicorn's receive (nor of the inbox's get) in its task
        (task,) = [t for t in asyncio.all_tasks() if "run_asgi" in repr(t.get_coro())]
        chain, coro = [], task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            chain.append(coro.cr_code.co_qualname)
            coro = coro.cr_await
        # nor of the app's call, nor of uvicorn's proxy-headers middleware: the app
        # handed its connection's serving to the layer's task (unbroken.run), and the
        # read loop (in Connection.run) polls the transport: two frames (issue 21)
        assert chain == ["UnbrokenWebSocketProtocol.run_asgi", "Connection.run"], chain
        w.abort()
    assert_exact(events)


async def test_a_frame_that_cannot_be_built_closes_1011_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A send that fails for anything but a gone peer (a bug building a frame) is
    logged with its traceback and the connection closed 1011: never left open with
    nothing sent (its client would wait on a silent, live socket)."""
    from unbroken.server.attach import Attachment

    built = Attachment.frame
    broken = {"on": False}

    def frame(self: Attachment, *args: Any) -> bytes:
        if broken["on"]:
            raise RuntimeError("codec bug")
        return built(self, *args)

    monkeypatch.setattr(Attachment, "frame", frame)
    kit = make_kit()
    async with serve_hardened(kit.app) as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "forever", "g")
        await w.read_until_seq(sid, 1)  # "started ": the stream is live and idle
        broken["on"] = True
        kit.gates["g"].set()  # its next append is sent from the notification
        assert await w.expect_close() == 1011
    failed = [r for r in caplog.records if r.getMessage().startswith("send failed")]
    assert failed and failed[0].levelname == "ERROR" and failed[0].exc_info is not None


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_paced_token_goes_from_its_append_to_the_socket(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token written alone in its loop tick, to the one idle reader of its stream,
    is handed by the memory log to the connection (``_push``), which frames and writes
    it without reading the log back; the client verifies every frame's digest and the
    answer is exact, in v1 and v2 frames."""
    taken: Counter[bool] = Counter()
    push = Connection._push

    def counting(self: Connection, *args: Any) -> bool:
        ok = push(self, *args)
        taken[ok] += 1
        return ok

    monkeypatch.setattr(Connection, "_push", counting)
    reads = Counter[str]()
    read = MemoryStore.read_nowait

    def counted(self: MemoryStore, *args: Any) -> Any:
        reads["n"] += 1
        return read(self, *args)

    monkeypatch.setattr(MemoryStore, "read_nowait", counted)
    n = 200
    # no coalescing interval: every token is sent on its own (the paced case)
    app = Unbroken(allow_anonymous=True, coalesce=0.0, protocols=("v2", "v1"))

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        for i in range(n):
            await out.text(token(i))
            await asyncio.sleep(0)  # one token per loop tick

    async with serve(app) as srv, Client(srv.url, protocols=(version,)) as client:
        st = await client.start("paced")
        answer = await asyncio.wait_for(st.wait(), 10)
    assert answer.complete
    assert answer.text == "".join(token(i) for i in range(n))
    # (the first token goes with its part's start, the last before its end: read)
    assert taken[True] >= n // 2 and reads["n"] < n // 2, (taken, reads)


def test_the_hand_off_is_offered_only_to_the_app_itself() -> None:
    """The WebSocket layer offers ``unbroken.run`` (the app returns, the layer awaits
    the connection) only to unbroken's ASGI app, alone or under uvicorn's
    proxy-headers middleware (which only rewrites the scope before it): behind any
    other layer the app's call lasts the connection's life, as ASGI has it."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from unbroken.server.websocket import _takes_hand_off

    asgi = Unbroken(MemoryStore(), allow_anonymous=True).asgi()

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        await asgi(scope, receive, send)

    assert _takes_hand_off(asgi)
    assert _takes_hand_off(ProxyHeadersMiddleware(asgi))  # type: ignore[arg-type]
    assert not _takes_hand_off(wrapper)
    assert not _takes_hand_off(ProxyHeadersMiddleware(wrapper))
