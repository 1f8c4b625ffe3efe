"""Run an agent behind unbroken, read its answer through a fault proxy, cut mid-answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from unbroken import BackoffPolicy, StreamFailed
from unbroken.chaos import FaultProxy
from unbroken.client import Answer, Client
from unbroken.server import Unbroken
from unbroken.testing import serve

from .conftest import FakeProvider

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=50, deadline=20)


@dataclass
class Run:
    answer: Answer
    store_digest: str
    disconnects: int


async def answer_with_a_cut(
    app: Unbroken, agent: str, provider: FakeProvider, *, cut_after_seq: int = 12
) -> Run:
    """Start ``agent``; once the client holds ``cut_after_seq`` events and the provider
    waits at its transcript's ``#GATE``, cut every client connection (RST), open the
    gate, and wait for the answer the client verified end to end."""
    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port)) as proxy,
        Client(f"ws://127.0.0.1:{proxy.port}/ws", policy=FAST) as client,
    ):
        st = await client.start(agent)
        async for ev in st:
            if ev.seq >= cut_after_seq:
                break
        await asyncio.wait_for(provider.at_gate.wait(), 10)
        assert await proxy.cut_all() >= 1
        provider.gate.set()
        answer = await asyncio.wait_for(st.wait(), 30)
        lost = [e for e in client.history if e.kind == "disconnected"]
        stored = await app.store.digest_at(st.id, answer.events)
        assert stored is not None
        return Run(answer, stored.hex(), len(lost))


async def plain_answer(app: Unbroken, agent: str) -> Answer:
    """The answer over a direct connection (raises the error it ended with)."""
    answer, error = await plain_run(app, agent)
    if error is not None:
        raise error
    return answer


async def plain_run(app: Unbroken, agent: str) -> tuple[Answer, StreamFailed | None]:
    """The answer as received, and the error it ended with (if it failed)."""
    async with serve(app) as srv, Client(srv.url, policy=FAST) as client:
        st = await client.start(agent)
        try:
            return await asyncio.wait_for(st.wait(), 30), None
        except StreamFailed as exc:
            return st.result, exc
