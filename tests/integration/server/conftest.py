"""Fixtures: an unbroken app with test agents, served on a real loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from unbroken.errors import AuthError
from unbroken.protocol.events import Event, Kind
from unbroken.protocol.frames import Hello
from unbroken.server import ConnectInfo, Output, Principal, Request, Unbroken, reveal_exception
from unbroken.store.base import StreamMeta
from unbroken.testing import RunningServer, serve

TIMEOUT = 10.0
TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def token(i: int) -> str:
    """The i-th token of the ``count`` agent: 8 characters."""
    return f"t{i:06d} "


@dataclass
class Kit:
    """An app plus the knobs its agents listen to."""

    app: Unbroken
    gates: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    calls: Counter[str] = field(default_factory=Counter)
    reached: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )

    async def meta(self, stream: str) -> StreamMeta | None:
        return await self.app.store.meta(stream)

    async def wait_meta(
        self, stream: str, ok: Callable[[StreamMeta | None], bool], limit: float = TIMEOUT
    ) -> StreamMeta | None:
        """Wait until the log's view of ``stream`` satisfies ``ok`` (woken by the log)."""
        changed = asyncio.Event()
        unsubscribe = self.app.store.subscribe(stream, lambda _s, _h: changed.set())
        try:
            async with asyncio.timeout(limit):
                while True:
                    m = await self.meta(stream)
                    if ok(m):
                        return m
                    changed.clear()
                    # also re-check periodically: retention drops are swept by time
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 0.05)
        finally:
            unsubscribe()

    async def wait_ended(self, stream: str, limit: float = TIMEOUT) -> StreamMeta:
        m = await self.wait_meta(stream, lambda m: m is not None and m.status != "running", limit)
        assert m is not None
        return m

    async def wait_no_connections(self, limit: float = TIMEOUT) -> None:
        async with asyncio.timeout(limit):
            while self.app.connections:  # noqa: ASYNC110 - polled under a timeout
                await asyncio.sleep(0.01)

    async def wait_idle(self, limit: float = TIMEOUT) -> None:
        """Wait until no connection and no run is left (nothing leaked)."""
        async with asyncio.timeout(limit):
            while self.app.connections or self.app.hub.runs:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.01)


async def authenticate(hello: Hello, info: ConnectInfo) -> Principal:
    who = TOKENS.get(hello.token or "")
    if who is None:
        raise AuthError("unknown token")
    return Principal(who)


def make_kit(**kw: Any) -> Kit:
    """An app with the test agents. Pass ``authenticate=…`` or it is anonymous."""
    if "authenticate" not in kw:
        kw.setdefault("allow_anonymous", True)
    kw.setdefault("shutdown_grace", 1.0)
    # these tests read agents' error texts: show them (the default shows only the type)
    kw.setdefault("redact", reveal_exception)
    app = Unbroken(**kw)
    kit = Kit(app)

    @app.agent("count")
    async def count(req: Request, out: Output) -> None:
        """``n`` tokens, one loop tick each; ``pause_at``/``pause2`` block on gates
        ``gate``/``gate2`` before those tokens (``reached`` events are set there)."""
        kit.calls[req.req] += 1
        inp = req.input
        n = inp["n"]
        stops = {inp.get("pause_at"): inp.get("gate"), inp.get("pause2"): inp.get("gate2")}
        every = inp.get("yield_every", 1)
        for i in range(n):
            gate = stops.get(i)
            if gate is not None:
                kit.reached[gate].set()
                await kit.gates[gate].wait()
            await out.text(token(i))
            if i % every == 0:
                await asyncio.sleep(0)

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        kit.calls[req.req] += 1
        await out.text(str(req.input))

    @app.agent("fail")
    async def fail(req: Request, out: Output) -> None:
        await out.text("partial ")
        await out.flush()
        raise ValueError(f"boom: {req.input}")

    @app.agent("own_timeout")
    async def own_timeout(req: Request, out: Output) -> None:
        """Raises TimeoutError itself: not the run's time limit."""
        await out.text("waiting ")
        await asyncio.wait_for(asyncio.Event().wait(), 0.01)

    @app.agent("forever")
    async def forever(req: Request, out: Output) -> None:
        """Writes a little, then waits on gate ``input`` (or forever)."""
        kit.calls[req.req] += 1
        await out.text("started ")
        await out.flush()
        name = req.input or "never"
        kit.reached[name].set()
        await kit.gates[name].wait()
        await out.text("done")

    @app.agent("parts")
    async def parts(req: Request, out: Output) -> None:
        schema = {
            "type": "object",
            "properties": {"rows": {"type": "integer"}},
            "required": ["rows"],
        }
        await out.text("before ")
        async with out.json("good", schema=schema) as j:
            await j.write('{"rows":')
            await j.write(" 3}")
        async with out.json("bad", schema=schema) as j:
            await j.write('{"rows": "three"}')
        async with out.json("broken") as j:
            await j.write('{"rows": ')
        await out.text("after", part="text")

    @app.agent("data")
    async def data(req: Request, out: Output) -> None:
        await out.data("blob", req.input["body"], mime="text/plain")
        await out.data(
            "chart", {"mark": "bar", "data": {"values": [1, 2]}}, mime="application/json"
        )

    @app.agent("emit")
    async def emit(req: Request, out: Output) -> None:
        """Replays prepared events; ``input="bad"`` adds a data chunk to a text part,
        ``input="bad-schema"`` a JSON part whose schema is not JSON."""
        if req.input == "bad-schema":
            await out.emit(Event(0, Kind.PART_START, part="j", part_kind="json", schema="{no"))
        await out.emit(Event(0, Kind.PART_START, part="t", part_kind="text", mime="text/plain"))
        await out.emit(Event(0, Kind.TEXT, part="t", body="replayed"))
        if req.input == "bad":
            await out.emit(Event(0, Kind.DATA, part="t", body="wrong kind"))
        await out.emit(Event(0, Kind.PART_END, part="t"))

    @app.agent("big")
    async def big(req: Request, out: Output) -> None:
        chunk = "x" * 1000
        for _ in range(req.input["chunks"]):
            await out.text(chunk)
            await asyncio.sleep(0)

    return kit


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="unbroken")
    return caplog


ServeKit = Callable[..., Awaitable[tuple[Kit, RunningServer]]]


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    """``kit, srv = await served(**unbroken_kwargs)``: serve a fresh app; stopped after."""
    stack: list[Any] = []

    async def start(**kw: Any) -> tuple[Kit, RunningServer]:
        kit = make_kit(**kw)
        cm = serve(kit.app)
        srv = await cm.__aenter__()
        stack.append(cm)
        return kit, srv

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
