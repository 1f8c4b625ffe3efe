"""Forwarding by hand with the agent API (``examples/forward_by_hand.py``) against the
real SDKs: the answer is the adapter's, part for part, across a client cut; the same
forwarding written with the calls before part roles (``by_hand_before.py``) still works
and carries the same content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai

from examples import forward_by_hand as after
from unbroken.adapters.anthropic import forward_messages
from unbroken.adapters.langgraph import forward_graph
from unbroken.adapters.openai import forward_chat
from unbroken.client import Answer
from unbroken.server import Unbroken, reveal_exception

from . import by_hand_before as before
from .conftest import FakeProvider, sse_data
from .helpers import answer_with_a_cut, plain_answer
from .test_langgraph import ScriptedChat, first_turn, second_turn, weather_graph

CHAT = {"messages": [{"role": "user", "content": "Weather?"}], "stream": True}
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 1024}


def content(a: Answer) -> tuple[str, str, list[tuple[str, str, Any]]]:
    return a.text, a.reasoning, [(c.id, c.name, c.args) for c in a.tool_calls]


def loc(fn: Any) -> int:
    """Lines of a function's code (blank lines and comments left out)."""
    import inspect

    src = inspect.getsource(fn).splitlines()
    return sum(1 for line in src if line.strip() and not line.strip().startswith("#"))


async def test_openai_chat_by_hand_is_the_adapters_answer_across_a_cut(
    provider: FakeProvider,
) -> None:
    def app_of(how: str) -> Unbroken:
        app = Unbroken(allow_anonymous=True, redact=reveal_exception)

        @app.agent("ask")
        async def ask(req, out):  # type: ignore[no-untyped-def]
            client = openai.AsyncOpenAI(
                base_url=f"{provider.url}/v1", api_key="sk-test", max_retries=0
            )
            stream = await client.chat.completions.create(
                model="chat_tools", stream_options={"include_usage": True}, **CHAT
            )
            if how == "after":
                await after.forward_openai_chat(out, stream)
            elif how == "before":
                await before.forward_openai_chat(out, stream, before.Parts(out))
            else:
                await forward_chat(out, stream)

        return app

    run = await answer_with_a_cut(app_of("after"), "ask", provider)
    a = run.answer
    assert run.disconnects >= 1 and a.digest == run.store_digest
    provider.gate.set()
    adapter = await plain_answer(app_of("adapter"), "ask")
    old = await plain_answer(app_of("before"), "ask")
    assert a.order == adapter.order == ["text", "tool-call_A1", "tool-call_B2", "metadata"]
    for p in a.order[:3]:
        assert (a.parts[p].text, a.parts[p].mime) == (adapter.parts[p].text, adapter.parts[p].mime)
    assert content(a) == content(adapter) == content(old)  # the first forms read the same
    usage = sse_data("chat_tools")[-1]["usage"]
    assert a.finish_reason == adapter.finish_reason == old.finish_reason == "tool_calls"
    assert a.usage == adapter.usage == old.usage == usage


async def test_anthropic_by_hand_is_the_adapters_answer(provider: FakeProvider) -> None:
    provider.gate.set()

    def app_of(how: str) -> Unbroken:
        app = Unbroken(allow_anonymous=True, redact=reveal_exception)

        @app.agent("ask")
        async def ask(req, out):  # type: ignore[no-untyped-def]
            client = anthropic.AsyncAnthropic(
                base_url=provider.url, api_key="sk-ant", max_retries=0
            )
            stream = await client.messages.create(model="messages_tools", stream=True, **ASK)
            if how == "after":
                await after.forward_anthropic(out, stream)
            elif how == "before":
                await before.forward_anthropic(out, stream, before.Parts(out))
            else:
                await forward_messages(out, stream)

        return app

    a = await plain_answer(app_of("after"), "ask")
    adapter = await plain_answer(app_of("adapter"), "ask")
    old = await plain_answer(app_of("before"), "ask")
    assert a.order == adapter.order == ["reasoning", "text", "tool-toolu_01T1x", "metadata"]
    assert content(a) == content(adapter) == content(old)
    assert a.reasoning and a.reasoning not in a.text
    assert a.finish_reason == adapter.finish_reason == old.finish_reason == "tool_use"
    assert a.usage["output_tokens"] == adapter.usage["output_tokens"] == 89


async def test_langgraph_by_hand_carries_the_adapters_content() -> None:
    provider = FakeProvider()
    provider.gate.set()

    def app_of(how: str) -> Unbroken:
        app = Unbroken(allow_anonymous=True, redact=reveal_exception)

        @app.agent("ask")
        async def ask(req, out):  # type: ignore[no-untyped-def]
            graph = weather_graph(provider, ScriptedChat(scripts=[first_turn(), second_turn()]))
            stream = graph.astream(
                {"messages": [("user", "Paris and Oslo?")]}, stream_mode=["messages", "custom"]
            )
            if how == "after":
                await after.forward_langgraph(out, stream)
            elif how == "before":
                await before.forward_langgraph(out, stream, before.Parts(out))
            else:
                await forward_graph(out, stream)

        return app

    a = await plain_answer(app_of("after"), "ask")
    adapter = await plain_answer(app_of("adapter"), "ask")
    old = await plain_answer(app_of("before"), "ask")
    assert content(a) == content(adapter) == content(old)
    assert a.text and a.reasoning and len(a.tool_calls) == 2
    results = {c.id: c.result for c in a.tool_calls}
    assert {k: json.loads(v) for k, v in results.items()} == {
        c.id: c.result for c in adapter.tool_calls
    }
    assert a.order[:4] == ["reasoning", "text", "tool-call_A1", "tool-call_B2"]


def test_the_glue_it_takes() -> None:
    """The forwarding code a user writes, counted (docs/how-to/adapters.md quotes it)."""
    now = [after.forward_openai_chat, after.forward_anthropic, after.forward_langgraph]
    then = [before.forward_openai_chat, before.forward_anthropic, before.forward_langgraph]
    helpers = [before.tool_mime, before.Parts]
    counts = [loc(f) for f in now], [loc(f) for f in then] + [sum(map(loc, helpers))]
    print("lines after, before (+ id/mime helpers):", counts)
    assert sum(counts[0]) < sum(counts[1])
    assert Path(after.__file__).name == "forward_by_hand.py"
