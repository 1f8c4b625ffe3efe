"""Fixtures: an app whose ``mixed`` agent writes every kind of part with the agent API
(reasoning, text, a streamed tool call, its result, a JSON data part, metadata), paused
at gates so a test can read it mid-answer; served on a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from unbroken.server import Output, Request
from unbroken.testing import RunningServer, serve

from ..server.conftest import Kit, authenticate, make_kit

REASONING = ["Let me ", "think ", "about ", "the weather."]
TEXT_1 = ["I'll ", "check ", "Paris", "."]
TOOL_ARGS = ['{"ci', 'ty": "Pa', 'ris", "unit', 's": "C"}']
TEXT_2 = ["It is ", "18 °C ", "and sunny", " in Paris.\n"]
RESULT = {"temperature": 18, "sky": "sunny"}
CHART = {"mark": "bar", "data": [1, 2, 3]}
META = {"provider": "test", "finish_reason": "stop", "usage": {"input_tokens": 3}}


def add_mixed(kit: Kit) -> None:
    @kit.app.agent("mixed")
    async def mixed(req: Request, out: Output) -> None:
        """Gates (from the input): ``g1`` after the first text, ``g2`` after the tool call."""
        gates = req.input.get("gates", {})

        async def gate(name: str) -> None:
            key = gates.get(name)
            if key:
                await out.flush()
                kit.reached[key].set()
                await kit.gates[key].wait()

        for d in REASONING:
            await out.reasoning(d)  # part "reasoning"
        for d in TEXT_1:
            await out.text(d)  # ends the reasoning; part "text"
        await out.end_text()
        await gate("g1")
        call = await out.tool_call("call_1", "get_weather")  # part "tool-call_1"
        for d in TOOL_ARGS:
            await call.append(d)
        await call.close()
        await gate("g2")
        await out.tool_result("call_1", RESULT)  # part "result-call_1"
        for d in TEXT_2:
            await out.text(d)  # a new text part after the tool: "text-2"
        await out.end_text()
        await out.data("chart", CHART, mime="application/vnd.vegalite+json")
        await out.metadata(  # part "metadata"
            {"provider": META["provider"]}, finish_reason="stop", usage=META["usage"]
        )


@pytest.fixture
async def ui_served() -> AsyncIterator[Callable[..., Any]]:
    """``await ui_served(**app_kwargs)``: a kit with ``mixed`` and its running server."""
    stack: list[Any] = []

    async def start(**kw: Any) -> tuple[Kit, RunningServer]:
        kw.setdefault("authenticate", authenticate)
        kit = make_kit(**kw)
        add_mixed(kit)
        cm = serve(kit.app)
        srv = await cm.__aenter__()
        stack.append(cm)
        return kit, srv

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
