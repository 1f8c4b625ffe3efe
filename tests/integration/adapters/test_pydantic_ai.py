"""A real pydantic-ai agent (its OpenAI model over the real ``openai`` SDK) against a
replayed provider: the whole run (two model calls, two tools) forwarded into one answer."""

from __future__ import annotations

import json
from typing import Any

import openai
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from unbroken.adapters.pydantic_ai import forward_pydantic_ai
from unbroken.server import Unbroken, reveal_exception

from .conftest import FakeProvider, sse_data
from .helpers import answer_with_a_cut, plain_run


def weather_agent(provider: FakeProvider) -> Agent[None, str]:
    model = OpenAIChatModel(
        "agent_loop", provider=OpenAIProvider(base_url=f"{provider.url}/v1", api_key="sk-test")
    )
    agent: Agent[None, str] = Agent(model)

    @agent.tool_plain
    def get_weather(city: str, units: str = "c") -> dict[str, Any]:
        """The weather in a city."""
        return {"city": city, "temp": 21 if city.startswith("Paris") else 3, "units": units}

    return agent


def content(name: str) -> str:
    return "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in sse_data(name) if c.get("choices")
    )


async def test_a_pydantic_ai_run_is_exact_across_a_client_cut(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    turns = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        async with weather_agent(provider).run_stream_events("Paris and Oslo?") as events:
            turns.append(await forward_pydantic_ai(out, events))

    run = await answer_with_a_cut(app, "ask", provider)
    a = run.answer
    assert run.disconnects >= 1
    assert a.status == "completed" and a.digest == run.store_digest
    # the two tools run concurrently: their results come in either order
    assert a.order[:3] == ["text", "tool-call_A1", "tool-call_B2"]
    assert sorted(a.order[3:5]) == ["result-call_A1", "result-call_B2"]
    assert a.order[5:] == ["text-2", "metadata"]
    assert all(p.ended and p.error == "" for p in a.parts.values())
    assert a.parts["text"].text == content("agent_loop")
    assert a.parts["text-2"].text == content("agent_loop.2")
    assert a.json("tool-call_A1") == {"city": "Paris, France", "units": "c"}
    assert a.json("tool-call_B2") == {"city": "Oslo"}
    assert a.parts["tool-call_A1"].mime == (
        'application/json; role=tool-call; tool="get_weather"; call="call_A1"'
    )
    assert a.json("result-call_A1") == {"city": "Paris, France", "temp": 21, "units": "c"}
    assert a.json("result-call_B2") == {"city": "Oslo", "temp": 3, "units": "c"}
    assert a.parts["result-call_B2"].mime == (
        'application/json; role=tool-result; tool="get_weather"; call="call_B2"'
    )
    # the answer keeps them apart: each call with its parsed arguments and its result
    calls = {c.id: c for c in a.tool_calls}
    assert list(calls) == ["call_A1", "call_B2"]
    assert calls["call_B2"].args == {"city": "Oslo"} and calls["call_B2"].name == "get_weather"
    assert calls["call_A1"].result == {"city": "Paris, France", "temp": 21, "units": "c"}
    assert calls["call_B2"].has_result and calls["call_B2"].result_error == ""
    meta = a.json("metadata")
    assert meta["finish_reason"] == "stop" and meta["provider"] == "pydantic_ai"
    usage = sse_data("agent_loop")[-1]["usage"]  # the only call that reported usage
    assert meta["usage"]["requests"] == 2 and meta["usage"]["tool_calls"] == 2
    assert meta["usage"]["input_tokens"] == usage["prompt_tokens"]
    assert meta["usage"]["output_tokens"] == usage["completion_tokens"]
    (turn,) = turns
    assert turn.result.output == content("agent_loop.2")
    assert [c.input for c in turn.tool_calls] == [json.loads(a.parts[p].text) for p in a.order[1:3]]
    assert len(provider.calls) == 1 and provider.calls["agent_loop"] == 2


async def test_a_model_error_mid_run_ends_the_part_and_fails_the_stream(
    provider: FakeProvider,
) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    raised: list[BaseException] = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        model = OpenAIChatModel(
            "chat_error",
            provider=OpenAIProvider(
                openai_client=openai.AsyncOpenAI(
                    base_url=f"{provider.url}/v1", api_key="sk-test", max_retries=0
                )
            ),
        )
        try:
            async with Agent(model).run_stream_events("hi") as events:
                await forward_pydantic_ai(out, events)
        except Exception as exc:
            raised.append(exc)
            raise

    a, failed = await plain_run(app, "ask")
    assert failed is not None and failed.status == "failed"
    (exc,) = raised
    assert type(exc).__name__ in failed.error
    assert a.order == ["text"] and a.parts["text"].ended
    assert a.parts["text"].error.startswith("provider stream failed: ")
    assert "The server had an error" in a.parts["text"].error
    assert a.parts["text"].text == content("chat_error")
