"""The real ``anthropic`` SDK against a replayed provider, forwarded into unbroken answers."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from unbroken.adapters.anthropic import forward_messages
from unbroken.server import Unbroken, reveal_exception

from .conftest import FakeProvider, sse_data
from .helpers import answer_with_a_cut, plain_run


def sdk(provider: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=provider.url, api_key="sk-ant-test", max_retries=0)


def deltas(events: list[dict[str, Any]], kind: str, key: str, index: int | None = None) -> str:
    return "".join(
        e["delta"][key]
        for e in events
        if e["type"] == "content_block_delta"
        and e["delta"]["type"] == kind
        and (index is None or e["index"] == index)
    )


ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 1024}


async def test_messages_stream_is_exact_across_a_client_cut(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    turns = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).messages.create(model="messages_tools", stream=True, **ASK)
        turns.append(await forward_messages(out, stream))

    run = await answer_with_a_cut(app, "ask", provider)
    a = run.answer
    assert run.disconnects >= 1
    assert a.status == "completed" and a.digest == run.store_digest
    assert a.order == ["reasoning", "text", "tool-toolu_01T1x", "metadata"]
    assert all(p.ended and p.error == "" for p in a.parts.values())
    ev = sse_data("messages_tools")
    assert a.parts["reasoning"].text == deltas(ev, "thinking_delta", "thinking")
    assert a.parts["reasoning"].mime == "text/plain; role=reasoning"
    assert a.parts["text"].text == deltas(ev, "text_delta", "text")
    args = deltas(ev, "input_json_delta", "partial_json")
    tool = a.parts["tool-toolu_01T1x"]
    assert tool.text == args and tool.value == json.loads(args)
    assert tool.mime == ('application/json; role=tool-call; tool="get_weather"; call="toolu_01T1x"')
    assert len(tool.chunks) == len([e for e in ev if e.get("delta", {}).get("partial_json")])
    meta = a.json("metadata")
    assert meta["finish_reason"] == "tool_use" and meta["id"] == "msg_01A"
    assert meta["usage"]["input_tokens"] == 472 and meta["usage"]["output_tokens"] == 89
    # the answer keeps them apart: text, reasoning, the call, the metadata
    assert a.text == deltas(ev, "text_delta", "text")
    assert a.reasoning == deltas(ev, "thinking_delta", "thinking")
    (call,) = a.tool_calls
    assert (call.id, call.name, call.part) == ("toolu_01T1x", "get_weather", tool.part)
    assert call.args == json.loads(args) and call.arguments == args and not call.has_result
    assert a.finish_reason == "tool_use" and a.usage == meta["usage"]
    (turn,) = turns
    thinking, text, tool_use = turn.output
    assert thinking["signature"] == "EqQBCgIYAhIM1gbcDa9GJwZA"
    assert (
        thinking["thinking"] == a.parts["reasoning"].text and text["text"] == a.parts["text"].text
    )
    assert tool_use == {
        "type": "tool_use",
        "id": "toolu_01T1x",
        "name": "get_weather",
        "input": {"city": "Paris, France", "units": "c"},
    }


async def test_the_stream_helper_is_forwarded_without_its_duplicate_events(
    provider: FakeProvider,
) -> None:
    # messages.stream() yields helper events (text, thinking, input_json) next to the raw ones
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    provider.gate.set()

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        async with sdk(provider).messages.stream(model="messages_tools", **ASK) as stream:
            await forward_messages(out, stream)

    a, failed = await plain_run(app, "ask")
    assert failed is None
    ev = sse_data("messages_tools")
    assert a.parts["text"].text == deltas(ev, "text_delta", "text")
    assert a.parts["reasoning"].text == deltas(ev, "thinking_delta", "thinking")
    assert a.parts["tool-toolu_01T1x"].text == deltas(ev, "input_json_delta", "partial_json")


async def test_an_overloaded_error_mid_stream_is_retried_into_the_same_answer(
    provider: FakeProvider,
) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    provider.gate.set()
    failures: list[anthropic.APIError] = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        for model in ("messages_error", "messages_tools"):
            stream = await sdk(provider).messages.create(model=model, stream=True, **ASK)
            try:
                await forward_messages(out, stream)
                return
            except anthropic.APIStatusError as exc:
                failures.append(exc)

    a, failed = await plain_run(app, "ask")
    assert failed is None and a.status == "completed"
    assert len(failures) == 1 and "Overloaded" in str(failures[0])
    assert a.order == ["text", "reasoning", "text-2", "tool-toolu_01T1x", "metadata"]
    first = a.parts["text"]
    assert first.ended and first.error.startswith("provider stream failed: ")
    assert "Overloaded" in first.error
    assert first.text == deltas(sse_data("messages_error"), "text_delta", "text")
    assert a.parts["text-2"].text == deltas(sse_data("messages_tools"), "text_delta", "text")
    assert a.parts["text-2"].error == ""
