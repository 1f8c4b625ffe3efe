"""The real ``openai`` SDK against a replayed provider, forwarded into unbroken answers."""

from __future__ import annotations

import json

import openai
import pytest

from unbroken.adapters.openai import forward_chat, forward_responses
from unbroken.server import Unbroken, reveal_exception

from .conftest import FakeProvider, sse_data
from .helpers import answer_with_a_cut, plain_answer, plain_run


def sdk(provider: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="sk-test", max_retries=0)


def joined(events: list[dict], type_: str, key: str = "delta") -> str:
    return "".join(e[key] for e in events if e.get("type") == type_)


async def test_responses_stream_is_exact_across_a_client_cut(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    turns = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).responses.create(
            model="responses", input="Weather in Paris?", stream=True
        )
        turns.append(await forward_responses(out, stream))

    run = await answer_with_a_cut(app, "ask", provider)
    a = run.answer
    assert run.disconnects >= 1
    assert a.status == "completed" and a.digest == run.store_digest
    assert a.order == ["reasoning", "text", "tool-call_Wx1", "metadata"]
    assert all(p.ended and p.error == "" for p in a.parts.values())
    ev = sse_data("responses")
    assert a.parts["reasoning"].text == joined(ev, "response.reasoning_summary_text.delta")
    assert a.parts["reasoning"].mime == "text/plain; role=reasoning"
    assert a.parts["text"].text == joined(ev, "response.output_text.delta")
    args = joined(ev, "response.function_call_arguments.delta")
    tool = a.parts["tool-call_Wx1"]
    assert tool.text == args and tool.value == json.loads(args)
    assert tool.mime == 'application/json; role=tool-call; tool="get_weather"; call="call_Wx1"'
    # one JSON event per streamed fragment: the arguments arrived as they streamed
    assert len(tool.chunks) == len([e for e in ev if e["type"].endswith("arguments.delta")])
    meta = a.json("metadata")
    assert meta["finish_reason"] == "completed"
    assert meta["usage"] == ev[-1]["response"]["usage"]
    # the answer keeps them apart
    assert a.text == a.parts["text"].text and a.reasoning == a.parts["reasoning"].text
    (call,) = a.tool_calls
    assert (call.id, call.name, call.args) == ("call_Wx1", "get_weather", json.loads(args))
    assert a.finish_reason == "completed" and a.usage == meta["usage"]
    (turn,) = turns
    assert turn.tool_calls[0].input == {"city": "Paris, France", "units": "c"}
    assert [o["type"] for o in turn.output] == ["reasoning", "message", "function_call"]


async def test_chat_chunks_are_exact_across_a_client_cut(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).chat.completions.create(
            model="chat_tools",
            messages=[{"role": "user", "content": "Weather in Paris and Oslo?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        turn = await forward_chat(out, stream)
        assert turn.output[0]["tool_calls"][1]["function"]["arguments"] == '{"city": "Oslo"}'

    run = await answer_with_a_cut(app, "ask", provider)
    a = run.answer
    assert run.disconnects >= 1
    assert a.status == "completed" and a.digest == run.store_digest
    assert a.order == ["text", "tool-call_A1", "tool-call_B2", "metadata"]
    ev = sse_data("chat_tools")
    deltas = [c["choices"][0]["delta"] for c in ev if c["choices"]]
    assert a.parts["text"].text == "".join(d.get("content") or "" for d in deltas)
    for j, part in enumerate(["tool-call_A1", "tool-call_B2"]):
        args = "".join(
            tc["function"].get("arguments", "")
            for d in deltas
            for tc in d.get("tool_calls", [])
            if tc["index"] == j
        )
        assert a.parts[part].text == args and a.parts[part].error == ""
        assert a.json(part) == json.loads(args)
    meta = a.json("metadata")
    assert meta["finish_reason"] == "tool_calls"
    assert meta["usage"]["total_tokens"] == ev[-1]["usage"]["total_tokens"]
    assert [(c.id, c.name, c.args) for c in a.tool_calls] == [
        ("call_A1", "get_weather", json.loads(a.parts["tool-call_A1"].text)),
        ("call_B2", "get_weather", {"city": "Oslo"}),
    ]
    assert a.finish_reason == "tool_calls" and a.usage == ev[-1]["usage"]


async def test_chat_reasoning_deltas_get_their_own_part(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).chat.completions.create(
            model="chat_reasoning", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        await forward_chat(out, stream)

    a = await plain_answer(app, "ask")
    ev = sse_data("chat_reasoning")
    deltas = [c["choices"][0]["delta"] for c in ev]
    assert a.order == ["reasoning", "text", "metadata"]
    assert a.parts["reasoning"].text == "".join(d.get("reasoning_content") or "" for d in deltas)
    assert a.parts["text"].text == "".join(d.get("content") or "" for d in deltas)
    assert a.json("metadata")["finish_reason"] == "stop"
    # answer.text is the answer alone (it joined the reasoning in before)
    assert a.text == a.parts["text"].text and a.reasoning == a.parts["reasoning"].text
    assert a.reasoning and a.reasoning not in a.text


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("chat_error", "APIError: The server had an error while processing your request."),
        ("chat_cut", "provider stream failed: APIConnectionError"),
        ("chat_short", "APIError: the stream ended before a finish_reason (cut short)"),
    ],
)
async def test_a_chat_stream_failing_mid_answer_is_retried_into_the_same_answer(
    provider: FakeProvider, model: str, reason: str
) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    failures: list[BaseException] = []

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        for attempt in (model, "chat_text"):
            stream = await sdk(provider).chat.completions.create(
                model=attempt, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            try:
                await forward_chat(out, stream)
                return
            except openai.APIError as exc:  # the app's own retry policy
                failures.append(exc)

    a = await plain_answer(app, "ask")
    assert len(failures) == 1
    assert a.status == "completed"
    assert a.order == ["text", "text-2", "metadata"]
    first = a.parts["text"]
    assert first.ended and reason in first.error, first.error
    assert first.text == "".join(
        c["choices"][0]["delta"].get("content") or "" for c in sse_data(model) if "choices" in c
    )
    retry = sse_data("chat_text")
    assert a.parts["text-2"].text == "".join(
        c["choices"][0]["delta"].get("content") or "" for c in retry
    )
    assert a.parts["text-2"].error == ""


async def test_a_stalled_provider_fails_the_part_and_the_stream(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).chat.completions.create(
            model="chat_stall", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        await forward_chat(out, stream, stall_timeout=0.5)

    a, failed = await plain_run(app, "ask")
    assert failed is not None and failed.status == "failed"
    reason = "provider stream stalled: no event for 0.5s"
    assert reason in failed.error
    # the partial text is there, its part ended with the same reason: no silent truncation
    assert a.order == ["text"] and a.parts["text"].ended
    assert a.parts["text"].error == reason
    assert a.parts["text"].text == "".join(f"Word{i:02d} " for i in range(5))


async def test_a_responses_error_event_ends_the_part_and_fails_the_stream(
    provider: FakeProvider,
) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).responses.create(
            model="responses_error", input="hi", stream=True
        )
        await forward_responses(out, stream)

    a, failed = await plain_run(app, "ask")
    reason = "APIError: server_error: The model produced invalid content."
    assert failed is not None and reason in failed.error
    assert a.parts["text"].error == f"provider stream failed: {reason}"
    assert a.parts["text"].text == joined(sse_data("responses_error"), "response.output_text.delta")


async def test_by_default_a_provider_error_reaches_clients_as_its_type_only(
    provider: FakeProvider,
) -> None:
    app = Unbroken(allow_anonymous=True)  # the default redaction

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        stream = await sdk(provider).responses.create(
            model="responses_error", input="hi", stream=True
        )
        await forward_responses(out, stream)

    a, failed = await plain_run(app, "ask")
    assert failed is not None and "invalid content" not in failed.error
    assert a.parts["text"].error == "provider stream failed: internal error in agent: APIError"


async def test_the_responses_stream_helper_is_forwarded_the_same(provider: FakeProvider) -> None:
    app = Unbroken(allow_anonymous=True, redact=reveal_exception)
    provider.gate.set()

    @app.agent("ask")
    async def ask(req, out):  # type: ignore[no-untyped-def]
        async with sdk(provider).responses.stream(model="responses", input="hi") as stream:
            await forward_responses(out, stream)

    a = await plain_answer(app, "ask")
    ev = sse_data("responses")
    assert a.order == ["reasoning", "text", "tool-call_Wx1", "metadata"]
    assert a.parts["text"].text == joined(ev, "response.output_text.delta")
    assert a.parts["tool-call_Wx1"].text == joined(ev, "response.function_call_arguments.delta")
