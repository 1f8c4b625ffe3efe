"""'List my live streams': ``await client.streams()`` (cap ``streams``: ``list`` answered by
``streams``) gives the runs of the client's principal that have not ended, and only
theirs; an old server without the cap gets no ``list`` (a ConfigError says why)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from unbroken import AuthError, ConfigError, ProtocolError
from unbroken.client import Client
from unbroken.protocol import ClientSession
from unbroken.protocol.frames import CAP_STREAMS, Welcome, encode
from unbroken.server import Output, Principal, Request, Unbroken
from unbroken.testing import serve

T = 20.0
TOKENS = {"alice-token": "alice", "alice-phone": "alice", "bob-token": "bob"}


async def authenticate(hello: Any, _info: Any) -> Principal:
    who = TOKENS.get(hello.token or "")
    if who is None:
        raise AuthError("unknown token")
    return Principal(who)


def gated_app(**kw: Any) -> tuple[Unbroken, asyncio.Event]:
    gate = asyncio.Event()
    app = Unbroken(**kw)

    @app.agent("slow")
    async def slow(_req: Request, out: Output) -> None:
        await out.text("begun ")
        await out.flush()
        await gate.wait()
        await out.text("done")

    @app.agent("quick")
    async def quick(_req: Request, out: Output) -> None:
        await out.text("at once")

    return app, gate


async def test_a_principal_lists_its_running_streams_and_only_its_own() -> None:
    app, gate = gated_app(authenticate=authenticate)
    async with (
        serve(app) as srv,
        Client(srv.url, token="alice-token") as alice,
        Client(srv.url, token="alice-phone") as phone,
        Client(srv.url, token="bob-token") as bob,
    ):
        done = await alice.start("quick")
        await asyncio.wait_for(done.wait(), T)
        one = await alice.start("slow")
        two = await alice.start("slow")
        theirs = await bob.start("slow")
        for st in (one, two, theirs):  # each has written its first event
            async for _ in st:
                break
        listed = await asyncio.wait_for(phone.streams(), T)  # another device, same principal
        assert [it.stream for it in listed] == [one.id, two.id]  # oldest first; no ended one
        assert {(it.agent, it.status, it.epoch) for it in listed} == {
            ("slow", "running", one.epoch)
        }
        assert all(it.head >= 1 and it.cursor.seq == it.head for it in listed)
        assert [it.stream for it in await bob.streams()] == [theirs.id]
        follow = await phone.join(listed[0].stream, epoch=listed[0].epoch)
        async with Client(srv.url, token="alice-phone") as tab:  # from now, at its cursor
            now = await tab.resume(listed[1].cursor)
            gate.set()
            rest = await asyncio.wait_for(now.wait(), T)
        answer = await asyncio.wait_for(follow.wait(), T)
        assert answer.text == "begun done" and answer.complete
        assert rest.text == "done" and rest.from_seq == listed[1].head
        for st in (one, two, theirs):
            await asyncio.wait_for(st.wait(), T)
        assert await alice.streams() == []


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_anonymous_clients_each_see_their_own_streams(version: str) -> None:
    app, gate = gated_app(allow_anonymous=True)
    async with (
        serve(app) as srv,
        Client(srv.url, protocols=version) as a,
        Client(srv.url, protocols=version) as b,
    ):
        st = await a.start("slow")
        async for _ in st:
            break
        assert [it.stream for it in await a.streams()] == [st.id]
        assert await b.streams() == []
        gate.set()
        await asyncio.wait_for(st.wait(), T)


async def test_a_server_without_the_cap_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import unbroken.server.connection as connection

    monkeypatch.setattr(connection, "CAP_STREAMS", "not-this-one")  # an older server
    app, _ = gated_app(allow_anonymous=True)
    async with serve(app) as srv, Client(srv.url) as c:
        with pytest.raises(ConfigError, match="does not list live streams"):
            await c.streams()
        st = await c.start("quick")  # the connection is fine
        assert (await asyncio.wait_for(st.wait(), T)).text == "at once"


async def test_a_raw_list_is_answered_and_a_bad_one_closes_4000() -> None:
    app, gate = gated_app(allow_anonymous=True)
    async with serve(app) as srv:
        async with connect(srv.url, subprotocols=["unbroken.v1"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"t": "hello", "caps": [CAP_STREAMS]}))
            welcome = json.loads(await ws.recv())
            assert CAP_STREAMS in welcome["caps"]
            await ws.send('{"t":"list","n":7}')
            assert json.loads(await asyncio.wait_for(ws.recv(), T)) == {"t": "streams", "n": 7}
            await ws.send('{"t":"list","n":-1}')  # a bad one closes 4000, as any bad frame
            await asyncio.wait_for(ws.wait_closed(), T)
            assert ws.close_code == 4000
        gate.set()


def test_a_client_session_refuses_streams_it_did_not_ask_for() -> None:
    session = ClientSession(caps=("batch",))
    session.connect()
    session.receive(encode(Welcome(session="s", heartbeat_ms=1000, epoch="e", caps=["streams"])))
    assert not session.streams_agreed and session.list_streams(1) is None
    with pytest.raises(ProtocolError, match="streams cap"):
        session.receive('{"t":"streams","n":1}')
