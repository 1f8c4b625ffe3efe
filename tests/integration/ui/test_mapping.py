"""The mappers and the prelude, as pure logic (no sockets): for any interleaving of
parts, a prelude (compacted) up to any point followed by the live chunks builds the
same message as every chunk sent one by one; error and end paths map as documented."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start
from unbroken.server.ui_streams import (
    AG_UI_DELTAS,
    AI_SDK_DELTAS,
    AgUiMapper,
    AiSdkMapper,
    compact,
    mime_params,
)

from .parsers import ag_ui_run, ai_sdk_message

MIMES = {
    "text": ("text", "text/plain"),
    "reasoning": ("text", "text/plain; role=reasoning"),
    "tool": ("json", 'application/json; tool="search"'),  # the first form: call id in the id
    "call": ("json", 'application/json; role=tool-call; tool="search"; call="{pid}"'),
    "data": ("json", "application/json"),
}


@st.composite
def answers(draw: st.DrawFn) -> list[Event]:
    """An answer: parts of each family, their chunks interleaved, each part ended,
    then the end event (seq numbers as the log gives them)."""
    families = draw(st.lists(st.sampled_from(sorted(MIMES)), min_size=1, max_size=5))
    pending: list[tuple[str, list[str]]] = []
    for i, fam in enumerate(families):
        pid = f"tool-c{i}" if fam == "tool" else f"{fam}-{i}"
        if fam in ("tool", "call", "data"):
            value = draw(st.dictionaries(st.text(max_size=3), st.integers(), max_size=3))
            text = json.dumps(value)
            cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
            bodies = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        else:
            bodies = draw(st.lists(st.text(max_size=4), max_size=5))
        pending.append((pid, [f"start:{fam}", *bodies, "end"]))
    events: list[Event] = []
    seq = 1
    while pending:
        i = draw(st.integers(0, len(pending) - 1))
        pid, steps = pending[i]
        step = steps.pop(0)
        if step.startswith("start:"):
            kind, mime = MIMES[step[6:]]
            mime = mime.replace("{pid}", f"id {pid}")  # a call id no part id could hold
            events.append(part_start(seq, pid, kind, mime))  # type: ignore[arg-type]
        elif step == "end" and not steps:
            events.append(part_end(seq, pid))
            pending.pop(i)
        else:
            kind = Kind.TEXT if pid.startswith(("text", "reasoning")) else Kind.JSON
            events.append(chunk(seq, kind, pid, step))
        seq += 1
    events.append(end(seq, draw(st.sampled_from(["completed", "failed", "cancelled"]))))
    return events


def ai_sdk(events: list[Event], cut: int) -> tuple[dict[str, Any], dict[str, Any]]:
    whole = AiSdkMapper("s")
    chunks = whole.begin()
    for ev in events:
        chunks += whole.event(ev)
    resumed = AiSdkMapper("s")
    prelude = resumed.begin()
    for ev in events[:cut]:
        prelude += resumed.event(ev)
    live = [c for ev in events[cut:] for c in resumed.event(ev)]
    return ai_sdk_message(chunks), ai_sdk_message(compact(prelude, AI_SDK_DELTAS) + live)


def ag_ui(events: list[Event], cut: int) -> tuple[dict[str, Any], dict[str, Any]]:
    whole = AgUiMapper("s", "t")
    chunks = whole.begin()
    for ev in events:
        chunks += whole.event(ev)
    resumed = AgUiMapper("s", "t")
    prelude = resumed.begin()
    for ev in events[:cut]:
        prelude += resumed.event(ev)
    live = [c for ev in events[cut:] for c in resumed.event(ev)]
    return ag_ui_run(chunks), ag_ui_run(compact(prelude, AG_UI_DELTAS) + live)


@settings(max_examples=150, deadline=None)
@given(answers(), st.data())
def test_a_prelude_at_any_point_then_live_builds_the_same_message(
    events: list[Event], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(events)))
    full, resumed = ai_sdk(events, cut)
    assert full == resumed
    full, resumed = ag_ui(events, cut)
    assert full == resumed
    # and the message holds the log's text
    texts = {}
    for ev in events:
        if ev.kind == Kind.TEXT:
            texts[ev.part] = texts.get(ev.part, "") + ev.body
    built = [m["content"] for m in full["messages"]]
    starts = [e.part for e in events if e.kind == Kind.PART_START and e.part.startswith("text")]
    assert built == [texts.get(p, "") for p in starts]


def test_errors_ends_and_data_map_as_documented() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    events = [
        part_start(1, "tool-x", "json", 'application/json; tool="calc"'),
        chunk(2, Kind.JSON, "tool-x", '{"a": '),
        part_end(3, "tool-x"),  # not JSON: an input error
        part_start(4, "text", "text", "text/plain"),
        chunk(5, Kind.TEXT, "text", ""),
        part_end(6, "text", "provider stream failed: boom"),
        part_start(7, "img", "data", "image/png;base64"),
        chunk(8, Kind.DATA, "img", png),
        part_end(9, "img"),
        part_start(10, "rows", "json", "application/json"),
        chunk(11, Kind.JSON, "rows", "[1,"),
        part_end(12, "rows", "invalid JSON"),
        end(13, "failed", "stalled: 30 s"),
    ]
    m = AiSdkMapper("s")
    out = [c for ev in events for c in m.event(ev)]
    types = [c["type"] for c in out]
    assert types == [
        "tool-input-start",
        "tool-input-delta",
        "tool-input-error",
        "text-start",
        "text-end",
        "data-part-error",
        "file",
        "data-rows",
        "error",
    ]
    assert out[2]["input"] == '{"a": ' and out[2]["errorText"].startswith("invalid JSON")
    assert out[6] == {
        "type": "file",
        "url": f"data:image/png;base64,{png}",
        "mediaType": "image/png",
    }
    assert out[7]["data"] == {"error": "invalid JSON", "partial": "[1,"}
    assert out[8] == {"type": "error", "errorText": "stalled: 30 s"}
    assert AiSdkMapper("s").event(end(1, "cancelled")) == [{"type": "abort", "reason": "cancelled"}]

    g = AgUiMapper("s", "t")
    out = [c for ev in events for c in g.event(ev)]
    assert [c["type"] for c in out] == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TEXT_MESSAGE_START",  # the empty delta is skipped (AG-UI: deltas are non-empty)
        "TEXT_MESSAGE_END",
        "CUSTOM",
        "CUSTOM",
        "CUSTOM",
        "RUN_ERROR",
    ]
    assert out[5]["value"] == {"part": "text", "error": "provider stream failed: boom"}
    assert out[6] == {
        "type": "CUSTOM",
        "name": "img",
        "value": {"mediaType": "image/png", "data": png},
    }
    assert out[8] == {"type": "RUN_ERROR", "message": "stalled: 30 s", "code": "failed"}
    cancelled = AgUiMapper("s", "t").event(end(1, "cancelled"))
    assert cancelled == [
        {"type": "RUN_ERROR", "message": "the answer cancelled", "code": "cancelled"}
    ]


def test_roles_map_one_to_one_and_take_ids_from_the_mime() -> None:
    """The agent API's parts (generated ids, call ids in the mime) in both protocols."""
    call = 'application/json; role=tool-call; tool="get weather"; call="toolu_01 \\"x\\""'
    result = 'application/json; role=tool-result; tool="get weather"; call="toolu_01 \\"x\\""'
    meta = '{"finish_reason":"tool_use","usage":{"input_tokens":3}}'
    events = [
        part_start(1, "r", "text", "text/plain; role=reasoning"),
        chunk(2, Kind.TEXT, "r", "hmm"),
        part_end(3, "r"),
        part_start(4, "t7", "json", call),
        chunk(5, Kind.JSON, "t7", '{"q": 1}'),
        part_end(6, "t7"),
        part_start(7, "r7", "json", result),
        chunk(8, Kind.JSON, "r7", '"sunny"'),
        part_end(9, "r7"),
        part_start(10, "json-2", "json", 'application/json; name="weather"'),
        chunk(11, Kind.JSON, "json-2", "[1]"),
        part_end(12, "json-2"),
        part_start(13, "metadata", "json", "application/json; role=metadata"),
        chunk(14, Kind.JSON, "metadata", meta),
        part_end(15, "metadata"),
        end(16, "completed"),
    ]
    m = AiSdkMapper("s")
    out = [c for ev in events for c in m.event(ev)]
    cid = 'toolu_01 "x"'
    assert out == [
        {"type": "reasoning-start", "id": "r"},
        {"type": "reasoning-delta", "id": "r", "delta": "hmm"},
        {"type": "reasoning-end", "id": "r"},
        {"type": "tool-input-start", "toolCallId": cid, "toolName": "get weather"},
        {"type": "tool-input-delta", "toolCallId": cid, "inputTextDelta": '{"q": 1}'},
        {
            "type": "tool-input-available",
            "toolCallId": cid,
            "toolName": "get weather",
            "input": {"q": 1},
        },
        {"type": "tool-output-available", "toolCallId": cid, "output": "sunny"},
        {"type": "data-weather", "id": "json-2", "data": [1]},
        {"type": "message-metadata", "messageMetadata": json.loads(meta)},
        {"type": "finish", "finishReason": "tool-calls"},
    ]
    g = AgUiMapper("s", "t")
    out = [c for ev in events for c in g.event(ev)]
    assert [c["type"] for c in out] == [
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "CUSTOM",
        "CUSTOM",
        "RUN_FINISHED",
    ]
    assert out[5] == {"type": "TOOL_CALL_START", "toolCallId": cid, "toolCallName": "get weather"}
    assert out[8]["toolCallId"] == cid and out[8]["content"] == '"sunny"'
    assert out[9] == {"type": "CUSTOM", "name": "weather", "value": [1]}
    assert out[10] == {"type": "CUSTOM", "name": "metadata", "value": json.loads(meta)}
    assert out[11]["result"] == {"metadata": json.loads(meta)}
    # the first forms still read: role=meta, a tool="…" JSON part, ids from part ids
    legacy = [
        part_start(1, "tool-c1", "json", 'application/json; tool="f"'),
        chunk(2, Kind.JSON, "tool-c1", "{}"),
        part_end(3, "tool-c1"),
        part_start(4, "result-c1", "json", 'application/json; role=tool-result; tool="f"'),
        chunk(5, Kind.JSON, "result-c1", "1"),
        part_end(6, "result-c1"),
        part_start(7, "meta", "json", "application/json; role=meta"),
        chunk(8, Kind.JSON, "meta", '{"finish_reason": "stop"}'),
        part_end(9, "meta"),
        end(10, "completed"),
    ]
    m = AiSdkMapper("s")
    types = [(c["type"], c.get("toolCallId")) for ev in legacy for c in m.event(ev)]
    assert types == [
        ("tool-input-start", "c1"),
        ("tool-input-delta", "c1"),
        ("tool-input-available", "c1"),
        ("tool-output-available", "c1"),
        ("message-metadata", None),
        ("finish", None),
    ]


def test_mime_params() -> None:
    assert mime_params('application/json; role=tool-result; tool="get weather"') == {
        "role": "tool-result",
        "tool": "get weather",
    }
    assert mime_params("text/plain") == {}
