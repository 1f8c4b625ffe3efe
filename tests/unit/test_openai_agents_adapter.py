"""The OpenAI Agents SDK adapter's mapping, without the SDK or sockets: stand-in events
of the SDK's shapes (``type``, ``data``, ``name``, ``item``, ``new_agent``) around real
``openai`` Responses events parsed from the replayed transcripts, written through a real
producer and folded into the client's answer. The real SDK, with a cut, runs in
tests/integration/adapters/test_openai_agents.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openai._models import construct_type  # how the SDK builds its events
from openai.types.responses import ResponseFunctionToolCall, ResponseStreamEvent

from tests.unit.test_part_model import answer_of
from unbroken.adapters.openai_agents import forward_run
from unbroken.server.agent import Output

TRANSCRIPTS = Path(__file__).parents[1] / "integration" / "adapters" / "transcripts"


def raw(name: str) -> list[Any]:
    """The transcript's events as the SDK's ``RawResponsesStreamEvent``s."""
    found = []
    for line in (TRANSCRIPTS / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: "):
            found.append(Raw(construct_type(type_=ResponseStreamEvent, value=json.loads(line[6:]))))
    return found


@dataclass
class Raw:
    data: Any
    type: str = "raw_response_event"


@dataclass
class Item:
    name: str
    item: Any
    type: str = "run_item_stream_event"


@dataclass
class AgentRef:
    name: str


@dataclass
class Updated:
    new_agent: AgentRef
    type: str = "agent_updated_stream_event"


@dataclass
class ToolOutput:  # ToolCallOutputItem's fields the adapter reads
    raw_item: dict[str, Any]
    output: Any


@dataclass
class Called:  # ToolCallItem
    raw_item: Any


@dataclass
class Handoff:  # HandoffOutputItem: no ``output``, its raw item holds it
    raw_item: dict[str, Any]


@dataclass
class Result:
    """A RunResultStreaming stand-in: its events, then ``is_complete``."""

    evs: list[Any]
    fail: BaseException | None = None
    is_complete: bool = False
    cancelled: list[str] = field(default_factory=list)

    async def stream_events(self) -> Any:
        for ev in self.evs:
            yield ev
        if self.fail is not None:
            raise self.fail
        self.is_complete = True

    def cancel(self, mode: str = "immediate") -> None:
        self.cancelled.append(mode)


WEATHER = {"temp_c": 21, "sky": "sunny"}


def a_run() -> list[Any]:
    first = raw("agents_run")
    call = first[-2].data.item  # response.output_item.done of the function call
    assert isinstance(call, ResponseFunctionToolCall)
    out = {"call_id": call.call_id, "output": str(WEATHER), "type": "function_call_output"}
    return [
        Updated(AgentRef("weather")),
        *first,
        Item("reasoning_item_created", object()),
        Item("message_output_created", object()),
        Item("tool_called", Called(call)),  # the raw events carried it already
        Item("tool_output", ToolOutput(out, WEATHER)),
        *raw("agents_run.2"),
        Item("message_output_created", object()),
    ]


async def test_a_run_maps_part_by_part_without_duplicates() -> None:
    result = Result(a_run())
    turns = []

    async def agent(out: Output) -> None:
        turns.append(await forward_run(out, result))

    a, _ = await answer_of(agent)
    assert a.order == [
        "reasoning",
        "text",
        "tool-call_Wx1",
        "metadata",
        "result-call_Wx1",
        "text-2",
        "metadata-2",
    ]
    assert a.reasoning == "The user asks about the weather; I should call the tool."
    assert a.parts["text"].text == "".join(f"Word{i:02d} " for i in range(40))
    assert a.parts["text-2"].text == "Paris: 21 °C, sunny."
    (call,) = a.tool_calls
    assert (call.id, call.name, call.args) == (
        "call_Wx1",
        "get_weather",
        {"city": "Paris, France", "units": "c"},
    )
    assert call.result == WEATHER and call.result_error == ""
    m1, m2 = a.json("metadata"), a.json("metadata-2")
    assert m1["agent"] == m2["agent"] == "weather"
    assert (m1["id"], m2["id"]) == ("resp_01", "resp_02")
    assert m1["usage"]["total_tokens"] == 198 and m2["usage"]["total_tokens"] == 249
    assert a.finish_reason == "completed"
    assert a.usage["total_tokens"] == 198 + 249
    assert a.usage["input_tokens_details"] == {"cached_tokens": 64}
    (turn,) = turns
    assert turn.result is result and turn.finish_reason == "completed"
    assert turn.usage["total_tokens"] == 447
    assert turn.usage["output_tokens_details"] == {"reasoning_tokens": 64}
    assert [c.id for c in turn.tool_calls] == ["call_Wx1"]
    assert all(p.ended and p.error == "" for p in a.parts.values())


async def test_unstreamed_calls_handoffs_and_the_agent_name() -> None:
    call = ResponseFunctionToolCall(
        type="function_call", call_id="call_H1", name="transfer_to_billing", arguments="{}"
    )
    done = raw("agents_run.2")
    evs = [
        Updated(AgentRef("triage")),
        Item("tool_called", Called(call)),  # no raw events for it: written whole
        Item(
            "handoff_occured",  # (sic: the SDK's spelling)
            Handoff({"call_id": "call_H1", "output": '{"assistant": "billing"}'}),
        ),
        Updated(AgentRef("billing")),
        *done,
    ]

    async def agent(out: Output) -> None:
        await forward_run(out, Result(evs), meta=True)

    a, _ = await answer_of(agent)
    assert a.order == ["tool-call_H1", "result-call_H1", "text", "metadata"]
    (c,) = a.tool_calls
    assert (c.name, c.args, c.result) == ("transfer_to_billing", {}, '{"assistant": "billing"}')
    assert a.json("metadata")["agent"] == "billing"


@pytest.mark.parametrize("how", ["raises", "cut short"])
async def test_a_failing_run_ends_its_parts_with_the_reason_and_is_cancelled(how: str) -> None:
    evs = raw("agents_run")[:20]  # mid-text
    result = Result(evs, fail=ConnectionError("reset") if how == "raises" else None)
    if how == "cut short":
        result.is_complete = True  # the events end, the run claims done: no response.completed
    errors: list[BaseException] = []

    async def agent(out: Output) -> None:
        try:
            await forward_run(out, result)
        except (ConnectionError, RuntimeError) as exc:
            errors.append(exc)

    a, _ = await answer_of(agent)
    (exc,) = errors
    assert a.order == ["reasoning", "text"]
    assert a.parts["reasoning"].error == ""  # it ended before the failure
    err = a.parts["text"].error
    if how == "raises":
        assert isinstance(exc, ConnectionError) and result.cancelled == ["immediate"]
        assert err == "provider stream failed: internal error in agent: ConnectionError"
    else:
        assert "cut short" in str(exc) and result.cancelled == []
        assert err == "provider stream failed: internal error in agent: RuntimeError"
    assert a.parts["text"].text == "".join(f"Word{i:02d} " for i in range(7))
