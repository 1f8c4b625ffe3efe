"""Readers of the two UI protocols, written from their published formats (not from
the server's code): an SSE parser (the WHATWG event-stream rules), the AI SDK's
UI-message reduction (how ``useChat`` builds a message from chunks) and an AG-UI
event reducer that also checks the event order the AG-UI spec requires."""

from __future__ import annotations

import json
from typing import Any


def sse_events(raw: bytes) -> list[str]:
    """The ``data`` of each event of an event stream (comments and other fields skipped)."""
    out: list[str] = []
    data: list[str] = []
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        if line == "":
            if data:
                out.append("\n".join(data))
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
    return out


def ai_sdk_chunks(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The chunks of a UI message stream, and whether it ended with ``[DONE]``."""
    events = sse_events(raw)
    done = bool(events) and events[-1] == "[DONE]"
    if done:
        events = events[:-1]
    assert "[DONE]" not in events
    return [json.loads(e) for e in events], done


def ai_sdk_message(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The UI message ``chunks`` build, the way the AI SDK's ``processUIMessageStream``
    does: parts in the order they start; deltas append; data parts with an id are
    replaced in place; tool parts move through their states."""
    msg: dict[str, Any] = {"id": None, "metadata": None, "parts": [], "end": None}
    parts: list[dict[str, Any]] = msg["parts"]
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    for c in chunks:
        t = c["type"]
        assert msg["end"] is None, f"chunk after the end: {c}"
        if t == "start":
            msg["id"] = c.get("messageId")
        elif t in ("text-start", "reasoning-start"):
            kind = t.split("-")[0]
            p = {"type": kind, "text": "", "state": "streaming"}
            parts.append(p)
            by_id[(kind, c["id"])] = p
        elif t in ("text-delta", "reasoning-delta"):
            by_id[(t.split("-")[0], c["id"])]["text"] += c["delta"]
        elif t in ("text-end", "reasoning-end"):
            by_id[(t.split("-")[0], c["id"])]["state"] = "done"
        elif t == "tool-input-start":
            p = {
                "type": f"tool-{c['toolName']}",
                "toolCallId": c["toolCallId"],
                "state": "input-streaming",
                "raw": "",
            }
            parts.append(p)
            by_id[("tool", c["toolCallId"])] = p
        elif t == "tool-input-delta":
            by_id[("tool", c["toolCallId"])]["raw"] += c["inputTextDelta"]
        elif t == "tool-input-available":
            p = by_id[("tool", c["toolCallId"])]
            p.update(state="input-available", input=c["input"])
        elif t == "tool-input-error":
            p = by_id[("tool", c["toolCallId"])]
            p.update(state="output-error", input=c["input"], errorText=c["errorText"])
        elif t == "tool-output-available":
            p = by_id[("tool", c["toolCallId"])]
            assert p["state"] == "input-available"
            p.update(state="output-available", output=c["output"])
        elif t == "tool-output-error":
            by_id[("tool", c["toolCallId"])].update(state="output-error", errorText=c["errorText"])
        elif t.startswith("data-"):
            key = (t, c.get("id") or "")
            if c.get("id") and key in by_id:
                by_id[key]["data"] = c["data"]
            else:
                p = {"type": t, "id": c.get("id"), "data": c["data"]}
                parts.append(p)
                if c.get("id"):
                    by_id[key] = p
        elif t == "file":
            parts.append({"type": "file", "url": c["url"], "mediaType": c["mediaType"]})
        elif t == "message-metadata":
            msg["metadata"] = {**(msg["metadata"] or {}), **c["messageMetadata"]}
        elif t in ("finish", "abort", "error"):
            msg["end"] = {k: v for k, v in c.items()}
        else:
            raise AssertionError(f"unknown chunk {c}")
    for p in parts:  # the raw input text is the SDK's partial state, not the message's
        p.pop("raw", None)
    return msg


def ag_ui_events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(e) for e in sse_events(raw)]


def ag_ui_run(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What an AG-UI client builds from ``events`` (messages, reasoning, tool calls,
    custom events, the run's outcome), checking the spec's ordering rules on the way:
    RUN_STARTED first, content only inside its START/END, non-empty deltas, nothing
    after RUN_FINISHED / RUN_ERROR."""
    run: dict[str, Any] = {
        "messages": [],
        "reasoning": [],
        "tools": [],
        "results": [],
        "custom": [],
        "end": None,
    }
    assert events and events[0]["type"] == "RUN_STARTED", events[:1]
    run["runId"], run["threadId"] = events[0]["runId"], events[0]["threadId"]
    open_text: dict[str, dict[str, Any]] = {}
    open_reasoning: dict[str, dict[str, Any]] = {}
    open_tools: dict[str, dict[str, Any]] = {}
    for ev in events[1:]:
        t = ev["type"]
        assert run["end"] is None, f"event after the run's end: {ev}"
        if t == "TEXT_MESSAGE_START":
            assert ev["role"] == "assistant"
            m = {"id": ev["messageId"], "content": "", "done": False}
            run["messages"].append(m)
            open_text[ev["messageId"]] = m
        elif t == "TEXT_MESSAGE_CONTENT":
            assert ev["delta"], "empty delta"
            open_text[ev["messageId"]]["content"] += ev["delta"]
        elif t == "TEXT_MESSAGE_END":
            open_text.pop(ev["messageId"])["done"] = True
        elif t == "REASONING_START":
            pass
        elif t == "REASONING_MESSAGE_START":
            assert ev["role"] == "reasoning"
            m = {"id": ev["messageId"], "content": "", "done": False}
            run["reasoning"].append(m)
            open_reasoning[ev["messageId"]] = m
        elif t == "REASONING_MESSAGE_CONTENT":
            assert ev["delta"], "empty delta"
            open_reasoning[ev["messageId"]]["content"] += ev["delta"]
        elif t == "REASONING_MESSAGE_END":
            open_reasoning.pop(ev["messageId"])["done"] = True
        elif t == "REASONING_END":
            pass
        elif t == "TOOL_CALL_START":
            tc = {"id": ev["toolCallId"], "name": ev["toolCallName"], "args": "", "done": False}
            run["tools"].append(tc)
            open_tools[ev["toolCallId"]] = tc
        elif t == "TOOL_CALL_ARGS":
            assert ev["delta"], "empty delta"
            open_tools[ev["toolCallId"]]["args"] += ev["delta"]
        elif t == "TOOL_CALL_END":
            open_tools.pop(ev["toolCallId"])["done"] = True
        elif t == "TOOL_CALL_RESULT":
            assert ev["role"] == "tool"
            assert any(tc["id"] == ev["toolCallId"] for tc in run["tools"])
            run["results"].append({"toolCallId": ev["toolCallId"], "content": ev["content"]})
        elif t == "CUSTOM":
            run["custom"].append({"name": ev["name"], "value": ev["value"]})
        elif t in ("RUN_FINISHED", "RUN_ERROR"):
            assert not open_text and not open_reasoning and not open_tools
            run["end"] = ev
        else:
            raise AssertionError(f"unknown event {ev}")
    return run
