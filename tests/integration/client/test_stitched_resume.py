"""A resumed answer can be whole: ``client.resume(cursor, prefix=answer)`` continues the
answer received before (a dropped client's ``stream.result``) from its last event, which
the server checks against its log, so the stitched answer is exact and ``complete``."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from unbroken import ConfigError, StreamGone
from unbroken.client import Client
from unbroken.server import Unbroken
from unbroken.testing import serve

from .conftest import gated_halves

T = 20.0


def app_with_gate() -> tuple[Unbroken, asyncio.Event]:
    app = Unbroken(allow_anonymous=True)
    return app, gated_halves(app)


EXPECTED = "".join(f"a{i} " for i in range(300)) + "".join(f"b{i} " for i in range(300))


async def drain(st: Any) -> Any:
    async for _ in st:
        pass
    return await st.wait()


async def first_half(url: str) -> tuple[Any, Any, str]:
    """Start the run, read a part of it, leave: (cursor, answer so far, stream id)."""
    async with Client(url) as first:
        st = await first.start("halves")
        async for ev in st:
            if ev.seq >= 120:
                break
        return st.cursor, st.result, st.id


async def test_a_resume_with_its_prefix_is_a_complete_exact_answer() -> None:
    app, gate = app_with_gate()
    async with serve(app) as srv:
        cursor, prefix, stream = await first_half(srv.url)
        assert prefix.events >= cursor.seq  # an answer holds whole frames
        before = (prefix.text, prefix.events)
        gate.set()
        async with Client(srv.url) as second:
            whole = await asyncio.wait_for(drain(await second.resume(cursor, prefix=prefix)), T)
            again = await asyncio.wait_for(second.read(stream), T)
            rest = await asyncio.wait_for(drain(await second.resume(str(cursor))), T)
    assert whole.text == EXPECTED and whole.complete and whole.from_seq == 0
    assert whole.digest == again.digest and again.complete
    assert (prefix.text, prefix.events) == before  # the caller's answer is left as it was
    assert not rest.complete and rest.from_seq == cursor.seq  # without a prefix: the rest


async def test_a_prefix_that_does_not_fit_the_cursor_is_refused() -> None:
    app, gate = app_with_gate()
    async with serve(app) as srv, Client(srv.url) as c:
        # (the gate opens after: an agent run to its end before the first read would
        # send its `end` in the first frame, and the prefix would be ended already)
        cursor, prefix, _ = await first_half(srv.url)
        assert prefix.status == "running"
        gate.set()
        other = dataclasses.replace(prefix, stream="x" * 22)
        with pytest.raises(ConfigError, match="answer of stream"):
            await c.resume(cursor, prefix=other)
        short = dataclasses.replace(prefix, events=cursor.seq - 1)
        with pytest.raises(ConfigError, match="holds events up to"):
            await c.resume(cursor, prefix=short)
        ended = dataclasses.replace(prefix, status="completed")
        with pytest.raises(ConfigError, match="already ended"):
            await c.resume(cursor, prefix=ended)


async def test_a_prefix_whose_chain_differs_from_the_log_is_gone_diverged() -> None:
    app, gate = app_with_gate()
    async with serve(app) as srv, Client(srv.url) as c:
        cursor, prefix, _ = await first_half(srv.url)
        assert prefix.status == "running"  # (the gate opens after: see above)
        gate.set()
        forged = dataclasses.replace(prefix, head_digest="0" * 32)
        with pytest.raises(StreamGone) as gone:
            await asyncio.wait_for(drain(await c.resume(cursor, prefix=forged)), T)
    assert gone.value.reason == "diverged"
