"""A real LangGraph graph (model node, langgraph's own ToolNode, custom stream events)
whose model is a scripted langchain-core chat model, streamed through langchain-core's
callbacks and LangGraph's ``messages`` mode: the whole run forwarded into one answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from unbroken.adapters.langgraph import CUSTOM_MIME, forward_graph
from unbroken.server import Unbroken, reveal_exception

from .conftest import FakeProvider
from .helpers import answer_with_a_cut, plain_answer, plain_run

REASONING = ["The user ", "wants two ", "cities."]
WORDS = [
    "Let",
    "me",
    "look",
    "up",
    "the",
    "weather",
    "in",
    "Paris",
    "and",
    "in",
    "Oslo",
    "for",
    "you,",
    "one",
    "moment",
    "please.",
]
ARGS_A = ['{"city": ', '"Paris, ', 'France"', ', "units": "c"}']
ARGS_B = ['{"ci', 'ty": "Oslo"}']
ANSWER = [
    "Paris",
    "is",
    "at",
    "21",
    "degrees",
    "and",
    "Oslo",
    "at",
    "3:",
    "pack",
    "a",
    "coat",
    "for",
    "Oslo.",
]


def first_turn() -> list[AIMessageChunk]:
    c = [AIMessageChunk(content="", additional_kwargs={"reasoning_content": r}) for r in REASONING]
    c += [AIMessageChunk(content=w + " ") for w in WORDS]
    calls = [("call_A1", "get_weather", ARGS_A), ("call_B2", "get_weather", ARGS_B)]
    for index, (cid, name, frags) in enumerate(calls):
        for n, frag in enumerate(frags):
            head = {"id": cid, "name": name} if n == 0 else {"id": None, "name": None}
            c.append(
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[{**head, "args": frag, "index": index}],  # type: ignore[typeddict-item]
                )
            )
    c.append(
        AIMessageChunk(
            content="",
            chunk_position="last",
            response_metadata={"finish_reason": "tool_calls", "model_name": "scripted"},
            usage_metadata={"input_tokens": 11, "output_tokens": 40, "total_tokens": 51},
        )
    )
    return c


def second_turn() -> list[AIMessageChunk]:
    c = [AIMessageChunk(content=w + " ") for w in ANSWER]
    c.append(
        AIMessageChunk(
            content="",
            chunk_position="last",
            response_metadata={"finish_reason": "stop", "model_name": "scripted"},
            usage_metadata={"input_tokens": 30, "output_tokens": 15, "total_tokens": 45},
        )
    )
    return c


class ScriptedChat(BaseChatModel):
    """A chat model that streams scripted chunks, one script per call (a fake provider:
    langchain-core's own fakes do not stream tool-call chunks)."""

    scripts: list[list[AIMessageChunk]]
    fail_after: int | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:  # pragma: no cover - the graph streams
        raise NotImplementedError

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # pragma: no cover - the graph streams async
        raise NotImplementedError

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        script = self.scripts[sum(1 for m in messages if m.type == "ai")]
        for n, chunk in enumerate(script):
            if self.fail_after is not None and n == self.fail_after:
                raise ConnectionError("the model's connection dropped")
            gen = ChatGenerationChunk(message=chunk.model_copy())
            if run_manager:
                await run_manager.on_llm_new_token(str(chunk.content), chunk=gen)
            yield gen
            await asyncio.sleep(0)


def weather_graph(provider: FakeProvider, model: ScriptedChat) -> Any:
    @tool
    async def get_weather(city: str, units: str = "c") -> dict[str, Any]:
        """The weather in a city."""
        get_stream_writer()({"looking_up": city})  # astream's custom mode
        await adispatch_custom_event("looking_up", {"city": city})  # astream_events'
        provider.at_gate.set()
        await provider.gate.wait()
        return {"city": city, "temp": 21 if city.startswith("Paris") else 3, "units": units}

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) else END

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([get_weather]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile()


def joined(words: list[str]) -> str:
    return "".join(w + " " for w in words)


async def test_a_langgraph_run_is_exact_across_a_client_cut() -> None:
    provider = FakeProvider()
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    turns = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        graph = weather_graph(provider, ScriptedChat(scripts=[first_turn(), second_turn()]))
        stream = graph.astream(
            {"messages": [("user", "Paris and Oslo?")]}, stream_mode=["messages", "custom"]
        )
        turns.append(await forward_graph(out, stream))

    run = await answer_with_a_cut(app, "ask", provider, cut_after_seq=20)
    a = run.answer
    assert run.disconnects >= 1
    assert a.status == "completed" and a.digest == run.store_digest
    assert a.order[:4] == ["reasoning", "text", "tool-call_A1", "tool-call_B2"]
    # the two tools run concurrently: their payloads and results come in either order
    assert sorted(a.order[4:8]) == ["custom", "custom-2", "result-call_A1", "result-call_B2"]
    assert a.order[8:] == ["text-2", "metadata"]
    assert all(p.ended and p.error == "" for p in a.parts.values())
    assert a.parts["reasoning"].text == "".join(REASONING)
    assert a.parts["reasoning"].mime == "text/plain; role=reasoning"
    assert a.parts["text"].text == joined(WORDS)
    assert a.parts["tool-call_A1"].text == "".join(ARGS_A)
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
    customs = sorted([a.json("custom"), a.json("custom-2")], key=str)
    assert customs == [{"looking_up": "Oslo"}, {"looking_up": "Paris, France"}]
    assert a.parts["custom"].mime == CUSTOM_MIME
    assert a.parts["text-2"].text == joined(ANSWER)
    meta = a.json("metadata")
    assert meta["provider"] == "langgraph" and meta["finish_reason"] == "stop"
    assert meta["model"] == "scripted"
    assert meta["usage"] == {"input_tokens": 41, "output_tokens": 55, "total_tokens": 96}
    (turn,) = turns
    assert turn.text == joined(WORDS) + joined(ANSWER)
    assert [c.input for c in turn.tool_calls] == [
        {"city": "Paris, France", "units": "c"},
        {"city": "Oslo"},
    ]


async def answer_of(form: str) -> dict[str, tuple[str, str]]:
    provider = FakeProvider()
    provider.gate.set()
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        graph = weather_graph(provider, ScriptedChat(scripts=[first_turn(), second_turn()]))
        inputs = {"messages": [("user", "Paris and Oslo?")]}
        if form == "v2":
            stream = graph.astream(inputs, stream_mode=["messages", "custom"], version="v2")
        else:
            stream = graph.astream_events(inputs, version="v2")
        await forward_graph(out, stream)

    a = await plain_answer(app, "ask")
    assert a.status == "completed"
    return {p: (a.parts[p].text, a.parts[p].mime) for p in a.order}


async def test_v2_parts_and_astream_events_give_the_same_answer() -> None:
    answers = [await answer_of("v2"), await answer_of("events")]
    v2, ev = answers
    assert v2["text"][0] == ev["text"][0] == joined(WORDS)
    assert v2["text-2"][0] == ev["text-2"][0] == joined(ANSWER)
    assert v2["tool-call_A1"] == ev["tool-call_A1"]
    assert v2["reasoning"] == ev["reasoning"]
    assert set(v2) == set(ev)
    # the stream writer's payloads in one, dispatched custom events (named) in the other
    assert sorted([v2["custom"], v2["custom-2"]]) == [
        ('{"looking_up":"Oslo"}', CUSTOM_MIME),
        ('{"looking_up":"Paris, France"}', CUSTOM_MIME),
    ]
    named = 'application/json; name="looking_up"'
    assert sorted([ev["custom"], ev["custom-2"]]) == [
        ('{"city":"Oslo"}', named),
        ('{"city":"Paris, France"}', named),
    ]


async def test_a_model_error_mid_run_ends_the_part_and_fails_the_stream() -> None:
    provider = FakeProvider()
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    raised: list[BaseException] = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        model = ScriptedChat(scripts=[first_turn()], fail_after=len(REASONING) + 5)
        graph = weather_graph(provider, model)
        try:
            await forward_graph(
                out,
                graph.astream({"messages": [("user", "hi")]}, stream_mode=["messages", "custom"]),
            )
        except Exception as exc:
            raised.append(exc)
            raise

    a, failed = await plain_run(app, "ask")
    assert failed is not None and failed.status == "failed"
    (exc,) = raised
    assert isinstance(exc, ConnectionError)
    assert a.order == ["reasoning", "text"]
    assert a.parts["reasoning"].ended and a.parts["reasoning"].error == ""
    assert a.parts["text"].ended
    assert a.parts["text"].error == (
        "provider stream failed: ConnectionError: the model's connection dropped"
    )
    assert a.parts["text"].text == joined(WORDS[:5])


async def test_whole_messages_a_failed_tool_and_a_stalled_node() -> None:
    """Nodes that return whole messages (no ids), a tool message with an error status,
    a payload that is not JSON, then a node that hangs: forwarded with ``subgraphs=True``
    and a ``stall_timeout``, the stall ends the run loudly and leaves no part open."""
    hang = asyncio.Event()
    raised: list[BaseException] = []

    def greet(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("Hello there.")]}

    def greet_again(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("And again.")]}

    def failed_tool(state: MessagesState) -> dict[str, Any]:
        msg = ToolMessage("boom", tool_call_id="x1", name="lookup", status="error")
        return {"messages": [msg]}

    async def stuck(state: MessagesState) -> dict[str, Any]:
        get_stream_writer()({"stage": "stuck", "ids": {7}})  # a set: not JSON
        await hang.wait()
        return {}

    g = StateGraph(MessagesState)
    for name, fn in [
        ("greet", greet),
        ("greet_again", greet_again),
        ("failed_tool", failed_tool),
        ("stuck", stuck),
    ]:
        g.add_node(name, fn)
    g.add_edge(START, "greet")
    g.add_edge("greet", "greet_again")
    g.add_edge("greet_again", "failed_tool")
    g.add_edge("failed_tool", "stuck")
    graph: Any = g.compile()
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = graph.astream(
            {"messages": [("user", "hi")]}, stream_mode=["messages", "custom"], subgraphs=True
        )
        try:
            await forward_graph(out, stream, stall_timeout=0.3)
        except Exception as exc:
            raised.append(exc)
            raise

    a, failed = await plain_run(app, "ask")
    assert failed is not None and "stalled" in failed.error
    (exc,) = raised
    assert isinstance(exc, TimeoutError)
    assert a.order == ["text", "text-2", "result-x1", "custom"]
    assert a.parts["text"].text == "Hello there." and a.parts["text-2"].text == "And again."
    assert a.parts["result-x1"].error == "tool failed: boom"
    assert a.json("result-x1") == "boom"
    assert a.json("custom") == {"stage": "stuck", "ids": "{7}"}
    assert all(p.ended for p in a.parts.values())
