"""Fixtures for client tests: real servers on loopback, and ways to cut them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from unbroken.server import Unbroken
from unbroken.testing import RunningServer


def abort_server_side(srv: RunningServer) -> int:
    """Abort every server-side socket of a running server at once (no close frame,
    like a crashed peer or a reset); returns how many were cut."""
    n = 0
    for protocol in list(srv.server.server_state.connections):
        transport = getattr(protocol, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()
            n += 1
    return n


def gated_halves(app: Unbroken) -> asyncio.Event:
    """Give ``app`` the agent ``halves``: 300 tokens ``a0 …``, then (once the returned
    gate is set) 300 tokens ``b0 …``."""
    gate = asyncio.Event()

    @app.agent("halves")
    async def halves(_req, out):  # type: ignore[no-untyped-def]
        for i in range(300):
            await out.text(f"a{i} ")
        await out.flush()
        await gate.wait()
        for i in range(300):
            await out.text(f"b{i} ")

    return gate


def paced_text_app(
    *, tokens: int = 2000, pause_every: int = 50, **kw: object
) -> tuple[Unbroken, Callable[[int], str], dict[str, int]]:
    """An app whose agent ``count`` writes numbered tokens, yielding now and then."""
    calls = {"count": 0}
    app = Unbroken(allow_anonymous=True, **kw)  # type: ignore[arg-type]

    @app.agent("count")
    async def count(req, out):  # type: ignore[no-untyped-def]
        calls["count"] += 1
        n = int(req.input.get("n", tokens)) if isinstance(req.input, dict) else tokens
        for i in range(n):
            await out.text(f"tok{i:06d} ")
            if i % pause_every == 0:
                await asyncio.sleep(0)
                await out.flush()

    def expected(n: int = tokens) -> str:
        return "".join(f"tok{i:06d} " for i in range(n))

    return app, expected, calls
