"""Reading answers back: client.read / client.join replay an answer from its first
event for its owner, verified from the chain's seed; several readers follow one live
answer at once, each exact; a cursor saved as a string picks the answer up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unbroken import AuthError, ConfigError, Cursor, StreamFailed, StreamGone
from unbroken.client import Client, TextDelta
from unbroken.server import Output, Principal, Request, Unbroken
from unbroken.testing import serve

from .conftest import gated_halves

T = 20.0
TOKENS = {"alice-token": "alice", "alice-phone": "alice", "bob-token": "bob"}


async def authenticate(hello: Any, _info: Any) -> Principal:
    who = TOKENS.get(hello.token or "")
    if who is None:
        raise AuthError("unknown token")
    return Principal(who)


def words(prefix: str, n: int) -> str:
    return "".join(f"{prefix}{i} " for i in range(n))


def app_with_gate() -> tuple[Unbroken, asyncio.Event]:
    app = Unbroken(authenticate=authenticate)
    gate = gated_halves(app)

    @app.agent("fails")
    async def fails(_req: Request, out: Output) -> None:
        await out.text("half an answer")
        raise ValueError("nope")

    return app, gate


EXPECTED = words("a", 300) + words("b", 300)


async def test_read_replays_a_finished_answer_for_its_owner_verified() -> None:
    app, gate = app_with_gate()
    gate.set()
    async with serve(app) as srv:
        async with Client(srv.url, token="alice-token") as laptop:
            st = await laptop.start("halves")
            first = await asyncio.wait_for(st.wait(), T)
        async with Client(srv.url, token="alice-phone") as phone:
            again = await asyncio.wait_for(phone.read(st.id), T)
            twice = await asyncio.wait_for(phone.read(st.id), T)  # and once more
    assert again.text == first.text == twice.text == EXPECTED
    assert again.complete and again.digest == first.digest == twice.digest
    assert again.from_seq == 0


async def test_two_readers_join_a_live_answer_and_both_are_exact() -> None:
    app, gate = app_with_gate()
    async with (
        serve(app) as srv,
        Client(srv.url, token="alice-token") as writer,
        Client(srv.url, token="alice-token") as tab1,
        Client(srv.url, token="alice-phone") as tab2,
    ):
        st = await writer.start("halves")
        async for ev in st:  # the run is under way, parked at the gate
            if ev.seq >= 100:
                break
        one = await tab1.join(st.id)
        two = await tab2.join(st.id)
        seen: list[str] = []
        async for ev in one:  # a joiner gets the beginning first
            seen.append(type(ev).__name__)
            if len(seen) >= 50:
                break
        assert one.result.text.startswith("a0 a1 a2 ")
        gate.set()  # the rest is written while three clients follow it live
        answers = await asyncio.wait_for(asyncio.gather(drain(st), drain(one), drain(two)), T)
    assert [a.text for a in answers] == [EXPECTED] * 3
    assert all(a.complete for a in answers[1:])
    assert len({a.digest for a in answers}) == 1


async def drain(st: Any) -> Any:
    async for _ in st:
        pass
    return await st.wait()


async def test_another_principal_cannot_read_or_join_an_answer() -> None:
    app, gate = app_with_gate()
    gate.set()
    async with serve(app) as srv:
        async with Client(srv.url, token="alice-token") as alice:
            st = await alice.start("halves")
            await asyncio.wait_for(st.wait(), T)
        async with Client(srv.url, token="bob-token") as bob:
            with pytest.raises(StreamGone) as gone:
                await asyncio.wait_for(bob.read(st.id), T)
            assert gone.value.reason == "forbidden"
            with pytest.raises(StreamGone, match="forbidden"):
                await asyncio.wait_for(bob.read("x" * 22), T)  # unknown: the same answer


async def test_reading_a_failed_answer_raises_stream_failed_with_its_prefix() -> None:
    app, _ = app_with_gate()
    async with serve(app) as srv, Client(srv.url, token="alice-token") as alice:
        st = await alice.start("fails")
        with pytest.raises(StreamFailed):
            await asyncio.wait_for(st.wait(), T)
        reader = await alice.join(st.id)
        async for _ in reader:
            pass
        with pytest.raises(StreamFailed, match="internal error in agent: ValueError"):
            await reader.wait()
        assert reader.result.text == "half an answer"


async def test_joining_a_stream_this_client_already_follows_is_a_config_error() -> None:
    app, gate = app_with_gate()
    async with serve(app) as srv, Client(srv.url, token="alice-token") as alice:
        st = await alice.start("halves")
        with pytest.raises(ConfigError, match="already open on this client"):
            await alice.join(st.id)
        gate.set()
        assert (await asyncio.wait_for(drain(st), T)).text == EXPECTED  # undisturbed


async def test_a_cursor_saved_as_a_string_picks_the_answer_up_elsewhere() -> None:
    app, gate = app_with_gate()
    async with serve(app) as srv:
        async with Client(srv.url, token="alice-token") as first:
            st = await first.start("halves")
            prefix = ""  # what this reader consumed (the cursor's position)
            async for ev in st:
                if isinstance(ev, TextDelta):
                    prefix += ev.text
                if ev.seq >= 120:
                    break
            saved = str(st.cursor)
        assert Cursor.parse(saved) == st.cursor
        gate.set()
        async with Client(srv.url, token="alice-phone") as second:
            rest = await asyncio.wait_for(drain(await second.resume(saved)), T)
    assert prefix + rest.text == EXPECTED
    assert not rest.complete and rest.from_seq == Cursor.parse(saved).seq
