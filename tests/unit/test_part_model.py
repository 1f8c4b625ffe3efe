"""The part model for agents, without sockets: the agent API (reasoning, tool calls,
tool results, metadata, JSON parts opened without a context manager, generated ids)
writes a log, and the client's answer folded from that log keeps them apart."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.client.response import Answer, PartStarted, StreamEnded
from unbroken.errors import PartError
from unbroken.protocol.digest import ChainVerifier
from unbroken.protocol.events import part_start
from unbroken.protocol.roles import PartInfo, mime_params, part_info, quote, role_mime
from unbroken.server.agent import Output
from unbroken.server.producer import Producer
from unbroken.store.memory import MemoryStore

Write = Callable[[Output], Awaitable[None]]


async def answer_of(write: Write) -> tuple[Answer, list[Any]]:
    """Run ``write`` against a real producer and memory log; the answer a client
    folds from the log (digests recomputed), and its typed events."""
    store = MemoryStore()
    created = await store.create("alice", "r1", 0.0)
    producer = Producer(store, created.stream, created.epoch, created.producer)
    out = Output(producer)
    await write(out)
    await out.close_open_parts()
    await producer.finish("completed", "", 0.0)
    epoch, events = await store.read_all(created.stream)
    chain = ChainVerifier(created.stream, epoch)
    answer = Answer(created.stream)
    typed = []
    for ev in events:
        typed.append(answer.apply(ev, chain.feed(ev).hex()))
    assert answer.digest == producer.digest.hex()
    return answer, typed


async def test_an_agent_loop_keeps_text_reasoning_calls_and_metadata_apart() -> None:
    async def agent(out: Output) -> None:
        # turn 1: reasoning, text, two tool calls streamed across loop iterations
        for d in ["Let me ", "check."]:
            await out.reasoning(d)
        await out.text("Looking up ")
        calls = {}
        for i, (cid, frag) in enumerate(
            [("c1", '{"city":'), ("c2", '{"city": "Oslo"}'), ("c1", ' "Paris"}')]
        ):
            if cid not in calls:
                calls[cid] = await out.tool_call(cid, "weather")
            await calls[cid].append(frag)
            assert i < 3
        for c in calls.values():
            assert await c.close() == ""
        await out.metadata(finish_reason="tool_calls", usage={"input_tokens": 10, "d": {"x": 1}})
        await out.tool_result("c1", {"temp": 21})
        await out.tool_result("c2", None, error="timed out")
        # turn 2: more reasoning, then the answer: new parts after the tools
        await out.reasoning("Both known.")
        await out.text("Paris: 21 °C.")
        await out.metadata({"model": "m"}, finish_reason="stop", usage={"input_tokens": 5})

    a, typed = await answer_of(agent)
    assert a.order == [
        "reasoning",
        "text",
        "tool-c1",
        "tool-c2",
        "metadata",
        "result-c1",
        "result-c2",
        "reasoning-2",
        "text-2",
        "metadata-2",
    ]
    assert all(a.parts[p].ended for p in a.order)
    assert a.text == "Looking up Paris: 21 °C."  # reasoning is not in it
    assert a.reasoning == "Let me check.Both known."
    c1, c2 = a.tool_calls
    assert (c1.id, c1.name, c1.part, c1.args) == ("c1", "weather", "tool-c1", {"city": "Paris"})
    assert c1.has_result and c1.result == {"temp": 21} and c1.result_error == ""
    assert c2.args == {"city": "Oslo"} and c2.result is None and c2.result_error == "timed out"
    assert a.finish_reason == "stop"
    assert a.usage == {"input_tokens": 15, "d": {"x": 1}}
    assert a.metadata == {"finish_reason": "stop", "usage": {"input_tokens": 5}, "model": "m"}
    started = {e.part: e for e in typed if isinstance(e, PartStarted)}
    assert (started["tool-c1"].role, started["tool-c1"].call) == ("tool-call", "c1")
    assert started["reasoning-2"].role == "reasoning" and started["text"].role == ""
    assert started["result-c2"].tool == "weather"  # from its call
    end = typed[-1]
    assert isinstance(end, StreamEnded)
    assert (end.finish_reason, end.usage, end.metadata) == ("stop", a.usage, a.metadata)


async def test_json_parts_open_append_close_without_a_context_manager() -> None:
    async def agent(out: Output) -> None:
        plan = await out.json("plan", schema={"type": "object", "required": ["steps"]})
        other = await out.json(name="weather")  # a generated id: "json"
        for i in range(3):  # appended across loop iterations, interleaved
            await plan.append('{"steps": [' if i == 0 else f"{i},")
            await other.append("[1]" if i == 0 else "")
        await plan.append("3]}")
        assert await plan.close() == ""
        assert await plan.close() == ""  # once
        assert await other.close() == ""
        bad = await out.json()
        await bad.append("{")
        assert (await bad.close()).startswith("invalid JSON")
        async with out.json() as j:  # the context manager still works
            await j.write("true")
        whole = await out.tool_call(None, "f", arguments={"a": 1})  # closed on open
        assert whole.closed and whole.id == "call-1" and whole.input == {"a": 1}

    a, _ = await answer_of(agent)
    assert a.order == ["plan", "json", "json-2", "json-3", "tool-call-1"]
    assert a.json("plan") == {"steps": [1, 2, 3]}
    assert a.parts["json"].info == PartInfo(name="weather")
    assert a.parts["json-2"].error.startswith("invalid JSON")
    assert a.json("json-3") is True
    assert [(c.id, c.args) for c in a.tool_calls] == [("call-1", {"a": 1})]


async def test_the_first_api_still_writes_what_it_wrote() -> None:
    async def agent(out: Output) -> None:
        await out.text("a")
        await out.start_part("x", "json", mime="application/json")
        await out.chunk("x", "1")
        await out.end_part("x")
        await out.text("b")  # the old calls never end the current text part
        await out.text("c", "text")
        await out.end_part("text")
        await out.text("d")  # a part that ended: the next text opens a new one
        await out.text("e", part="mine")
        with pytest.raises(PartError, match="already started"):
            await out.start_part("x", "json")

    a, _ = await answer_of(agent)
    assert a.order == ["text", "x", "text-2", "mine"]
    assert a.parts["text"].text == "abc" and a.parts["text"].mime == "text/plain"
    assert a.text == "abcde"


async def test_reasoning_and_text_end_each_other_named_parts_stay_open() -> None:
    async def agent(out: Output) -> None:
        await out.reasoning("r1")
        await out.text("t1")
        await out.reasoning("r2")  # reasoning after text (interleaved thinking)
        await out.text("t2")
        await out.reasoning("x", part="named")
        await out.text("t3")
        await out.reasoning("y", part="named")  # a named part stays open
        await out.end_reasoning()
        await out.end_text()
        await out.end_part("named")

    a, typed = await answer_of(agent)
    assert a.order == ["reasoning", "text", "reasoning-2", "text-2", "named"]
    assert a.parts["named"].text == "xy" and a.parts["text-2"].text == "t2t3"
    assert a.reasoning == "r1r2xy" and a.text == "t1t2t3"
    ends = [e.seq for e in typed if getattr(e, "part", None) == "reasoning"]
    assert len(ends) == 3  # start, delta, end: ended before "t1"
    kinds = [(getattr(ev, "part", ""), type(ev).__name__) for ev in typed]
    assert kinds.index(("reasoning", "PartEnded")) < kinds.index(("text", "PartStarted"))


async def test_generated_ids_are_valid_and_unique() -> None:
    async def agent(out: Output) -> None:
        long = "x" * 100
        await out.tool_call(long, "f", arguments="{}")
        await out.tool_call(long, "f", arguments="{}")
        await out.tool_call("a b/ç", "g h", arguments="{}")
        await out.tool_result("a b/ç", [1])

    a, _ = await answer_of(agent)
    assert len(set(a.order)) == 4 and all(len(p) <= 64 for p in a.order)
    assert a.order[2] == "tool-a_b__" and a.order[3] == "result-a_b__"
    calls = a.tool_calls
    assert [c.id for c in calls] == ["x" * 100, "x" * 100, "a b/ç"]
    assert calls[2].name == "g h" and calls[2].result == [1]


def test_events_of_a_part_carry_its_role() -> None:
    a = Answer("s")
    mime = 'application/json; role=tool-call; tool="f"; call="c"'
    ev = a.apply(part_start(1, "t", "json", mime), "")
    assert isinstance(ev, PartStarted) and (ev.role, ev.tool, ev.call) == ("tool-call", "f", "c")
    assert a.parts["t"].role == "tool-call"


# ------------------------------------------------------------------ roles (pure)
@given(st.text(max_size=300), st.text(max_size=300))
def test_any_tool_name_and_call_id_survive_the_mime(name: str, call: str) -> None:
    mime = role_mime("application/json", "tool-call", tool=name, call=call)
    assert "\x00" not in mime and len(mime) <= 4096
    info = part_info("p", "json", mime)
    clean = {c: "_" for c in map(chr, [*range(32), 127])}
    assert info.role == "tool-call"
    assert info.tool == name[:256].translate(str.maketrans(clean))
    assert info.call == call[:256].translate(str.maketrans(clean)) or (
        not call and info.call == "p"
    )


def test_part_info_reads_roles_and_the_first_forms() -> None:
    assert part_info("r", "text", "text/plain; role=reasoning").role == "reasoning"
    assert part_info("r", "json", "application/json; role=reasoning").role == ""
    assert part_info("m", "json", "application/json; role=meta").role == "metadata"
    assert part_info("x", "json", "application/json; role=custom").role == ""
    assert part_info("tool-c9", "json", 'application/json; tool="f"') == PartInfo(
        "tool-call", "f", "c9"
    )
    assert part_info("result-c9", "json", "application/json; role=tool-result").call == "c9"
    assert part_info("t", "text", "text/plain") == PartInfo()
    assert mime_params('a/b; x="1;2"; y=3 ; bad; z="q\\""') == {"x": "1;2", "y": "3", "z": 'q"'}
    assert quote('a"b\\c\x00') == '"a\\"b\\\\c_"'
    assert json.dumps(mime_params("a/b;;=;k")) == "{}"


async def test_the_tables_outputs_start_with_shared_are_never_written() -> None:
    """An Output's rarely written tables start as one shared empty dict (issue 21):
    an answer that writes all of them (closed parts, JSON parts, numbered ids, tool
    names) leaves it empty, and another Output's tables as they were."""
    from unbroken.server import agent

    other = Output(Producer(MemoryStore(), "s", "e", "p"))

    async def write(out: Output) -> None:
        await out.text("a")
        await out.tool_call(None, "f", arguments={"a": 1})
        await out.tool_result("call-1", {"ok": True})
        await out.start_part("x", "json", mime="application/json")
        await out.chunk("x", "{}")
        await out.end_part("x")
        await out.reasoning("hm")

    answer, _ = await answer_of(write)
    assert agent._SHARED_EMPTY == {}
    assert other.new_id("text") == "text"  # nothing of the other answer's ids leaked
    assert [c.id for c in answer.tool_calls] == ["call-1"]
