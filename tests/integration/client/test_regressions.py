"""Regressions found by independent fault checks (issue 12), over real sockets."""

from __future__ import annotations

import json
import logging

import pytest

from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import serve


def burst_app() -> Unbroken:
    """~3 MB of text deltas, a 450 KB JSON part, then a 150 KB and a 300 KB data
    part, written as fast as the agent can: the end is sent while two of the
    client's acks (a window/4 boundary, then the final one) are still in flight."""
    app = Unbroken(allow_anonymous=True)

    @app.agent("burst")
    async def burst(req: Request, out: Output) -> None:
        for i in range(187_500):
            await out.text(f"w{i:07d} tokens ")  # 16 bytes each: 3 MB
        rows = [{"i": i, "v": "x" * 20} for i in range(12_000)]
        async with out.json("table", schema={"type": "object"}) as j:
            body = json.dumps({"rows": rows})
            for k in range(0, len(body), 4096):
                await j.write(body[k : k + 4096])
        await out.data("a", {"blob": "y" * 150_000}, mime="application/json")
        await out.data("b", {"blob": "z" * 300_000}, mime="application/json")

    return app


async def test_late_acks_after_the_end_never_close_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = burst_app()
    async with serve(app) as srv, Client(srv.url, seed=1) as client:
        # several answers back to back on one connection, each ending with acks in flight
        for _ in range(3):
            st = await client.start("burst")
            async for _ev in st:
                pass
            answer = await st.wait()
            assert len(answer.text) == 3_000_000
        # a sibling stream started after them still works: the connection survived
        st = await client.start("burst")
        assert (await st.wait()).parts["b"] is not None
        assert not [e for e in client.history if e.kind == "disconnected"]
    closes = [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]
    assert closes == []
