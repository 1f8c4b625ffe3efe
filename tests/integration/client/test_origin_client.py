"""``Client(origin=…, headers=…)`` against the server's origin policy, over real sockets:
an allowed page origin streams, a refused one ends at once in a typed
:class:`~unbroken.errors.Forbidden` quoting the server's reason (one handshake, no
retries), and extra headers reach the ``authenticate`` hook."""

from __future__ import annotations

import asyncio

import pytest

from unbroken import BackoffPolicy, Forbidden
from unbroken.client import Client, ConnectionEvent
from unbroken.protocol.frames import Hello
from unbroken.server import ConnectInfo, OriginPolicy, Output, Principal, Request, Unbroken
from unbroken.testing import serve

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=20, deadline=10)


def _app(**kw: object) -> Unbroken:
    app = Unbroken(allow_anonymous=True, **kw)  # type: ignore[arg-type]

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        await out.text(f"hi {req.input}")

    return app


async def test_an_allowed_origin_streams_and_a_refused_one_fails_typed_at_once() -> None:
    app = _app(policy=OriginPolicy(allowed_origins=("https://app.example",)))
    async with serve(app) as srv:
        async with Client(srv.url, origin="https://app.example", policy=FAST) as ok:
            answer = await (await ok.start("echo", "there")).wait()
            assert answer.text == "hi there"

        events: list[ConnectionEvent] = []
        with pytest.raises(Forbidden) as refused:  # the first connection is made on entry
            async with (
                asyncio.timeout(10),
                Client(srv.url, origin="https://evil.example", policy=FAST, on_event=events.append),
            ):
                pass
        text = str(refused.value)
        assert "HTTP 403" in text and "origin not allowed" in text  # the server's reason, quoted
        assert not [e for e in events if e.kind == "reconnecting"]  # refused once, not retried


async def test_extra_headers_reach_the_authenticate_hook() -> None:
    seen: list[str] = []

    async def authenticate(hello: Hello, info: ConnectInfo) -> Principal:
        seen.append(info.headers.get("x-gateway-key", ""))
        return Principal("gw")

    app = _app()
    app.authenticate = authenticate
    async with (
        serve(app) as srv,
        Client(srv.url, headers={"X-Gateway-Key": "k-123"}, policy=FAST) as c,
    ):
        answer = await (await c.start("echo", 1)).wait()
    assert answer.text == "hi 1"
    assert seen == ["k-123"]
