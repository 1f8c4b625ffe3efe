"""A running app's spoken versions change with ``app.set_protocols``: the next
handshakes see them, open connections keep theirs; the client's ``connected`` event
names the version it negotiated."""

from __future__ import annotations

import asyncio

import pytest

import unbroken
from unbroken.client import Client, ConnectionEvent
from unbroken.errors import ConfigError
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import serve

pytestmark = pytest.mark.timeout(30)
TIMEOUT = 10.0
WORDS = [f"w{i:02d} " for i in range(20)]


def make_app(gate: asyncio.Event) -> Unbroken:
    app = Unbroken(allow_anonymous=True)

    @app.agent("words")
    async def words(req: Request, out: Output) -> None:
        for w in WORDS[:10]:
            await out.text(w)
        await out.flush()
        await gate.wait()
        for w in WORDS[10:]:
            await out.text(w)

    return app


async def test_the_connected_event_names_the_negotiated_version() -> None:
    async with serve(make_app(asyncio.Event())) as srv:
        for offered, expected in ((("v1",), "v1"), (None, "v2")):
            events: list[ConnectionEvent] = []
            async with asyncio.timeout(TIMEOUT):
                async with Client(srv.url, protocols=offered, on_event=events.append) as c:
                    assert c.version == expected
            connected = [e for e in events if e.kind == "connected"]
            assert [e.version for e in connected] == [expected]
            assert connected[0].url == srv.url


async def test_set_protocols_applies_to_new_handshakes_and_spares_open_connections() -> None:
    gate = asyncio.Event()
    app = make_app(gate)
    assert app.protocols == ("v2", "v1")
    async with (
        serve(app) as srv,
        asyncio.timeout(TIMEOUT),
        Client(srv.url, protocols=("v1",)) as first,
    ):
        st = await first.start("words")
        async for _ in st:  # part of the answer before the switch
            cur = st.cursor
            if cur is not None and cur.seq >= 5:
                break

        app.set_protocols(("v2",))
        assert app.protocols == ("v2",)
        with pytest.raises(unbroken.UnsupportedVersion) as info:
            async with Client(srv.url, protocols=("v1",)):
                pass
        assert info.value.server_versions == ("v2",)
        async with Client(srv.url) as later:  # a v2 client still gets in
            assert later.version == "v2"

        gate.set()  # the v1 connection streams on, exact, after the switch
        answer = await st.wait()
        assert answer.status == "completed"
        assert answer.text == "".join(WORDS)
        assert first.version == "v1"
        assert [e.kind for e in first.history].count("connected") == 1


def test_set_protocols_refuses_unknown_names_and_keeps_the_versions_in_force() -> None:
    app = Unbroken(allow_anonymous=True, protocols="v1")
    with pytest.raises(ConfigError, match="unknown protocol version 'v9'"):
        app.set_protocols(("v2", "v9"))
    with pytest.raises(ConfigError, match="at least one"):
        app.set_protocols(())
    assert app.protocols == ("v1",)
    app.set_protocols("unbroken.v1, v2")
    assert app.protocols == ("v2", "v1") == app.config.protocols
