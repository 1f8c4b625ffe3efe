"""Forward a LangGraph run into an answer: every model message, tool call, tool result
and custom stream payload of the graph, as they happen.

``pip install 'unbroken[langgraph]'`` (and your model's langchain integration);
docs/how-to/adapters.md has the mapping::

    stream = graph.astream(inputs, stream_mode=["messages", "custom"])
    turn = await forward_graph(out, stream)

``graph.astream(..., version="v2")``, ``subgraphs=True`` and ``graph.astream_events(...)``
work too. Errors: whatever the graph raises (the model's SDK errors, a node's own) is
raised again after every open part was ended with the reason; a stall past
``stall_timeout`` raises :class:`TimeoutError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable
from typing import Any, NamedTuple

from ..server.agent import Output
from ._common import (
    ToolCall,
    Turn,
    Writer,
    close_quietly,
    events,
    failure_text,
    missing_sdk,
    part_id,
    result_mime,
)

try:
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_sdk("langgraph", "langgraph") from None

__all__ = ["CUSTOM_MIME", "ToolCall", "Turn", "forward_graph"]

#: the mime type of a custom-mode payload's part (``get_stream_writer()(payload)``)
CUSTOM_MIME = "application/json; role=custom"

_MODES = frozenset({"messages", "custom", "updates", "values", "debug", "tasks", "checkpoints"})


class _Named(NamedTuple):
    """A custom event's payload with the name it was dispatched under."""

    name: str
    data: Any


def _split(item: Any) -> tuple[str, Any]:
    """``(mode, data)`` of one streamed item, whatever form ``astream`` gave it."""
    if isinstance(item, dict):
        if "event" in item:  # astream_events
            ev = item["event"]
            if ev == "on_chat_model_stream":
                return ("messages", (item.get("data", {}).get("chunk"), item.get("metadata") or {}))
            if ev == "on_custom_event":  # adispatch_custom_event(name, data)
                return ("custom", _Named(str(item.get("name") or ""), item.get("data")))
            if ev == "on_tool_end":
                return ("messages", (item.get("data", {}).get("output"), {}))
            return ("", None)
        if "type" in item and "data" in item:  # version="v2"
            return (str(item["type"]), item["data"])
    if isinstance(item, tuple):
        if len(item) == 3:  # subgraphs=True, several modes: (namespace, mode, data)
            return (str(item[1]), item[2])
        if len(item) == 2:
            head, data = item
            if isinstance(head, str) and head in _MODES:  # several modes
                return (head, data)
            if isinstance(head, BaseMessage):  # stream_mode="messages" alone
                return ("messages", item)
            if isinstance(head, tuple):  # subgraphs=True, one mode: (namespace, data)
                return _split(data) if isinstance(data, tuple) else ("custom", data)
    return ("custom", item)  # stream_mode="custom" alone


def _reasoning(msg: BaseMessage) -> str:
    """Reasoning text carried by a message chunk, in the shapes integrations use."""
    parts: list[str] = []
    rc = msg.additional_kwargs.get("reasoning_content")
    if isinstance(rc, str):
        parts.append(rc)
    if isinstance(msg.content, list):
        for block in msg.content:
            if not isinstance(block, dict):
                continue
            t = block.get("type")
            if t == "thinking" and isinstance(block.get("thinking"), str):
                parts.append(block["thinking"])
            elif t == "reasoning":
                if isinstance(block.get("reasoning"), str):
                    parts.append(block["reasoning"])
                for s in block.get("summary") or ():
                    if isinstance(s, dict) and isinstance(s.get("text"), str):
                        parts.append(s["text"])
    return "".join(parts)


def _text(msg: BaseMessage) -> str:
    if isinstance(msg.content, str):
        return msg.content
    return "".join(
        b if isinstance(b, str) else str(b.get("text") or "")
        for b in msg.content
        if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")
    )


class _Graph:
    """The state of one forwarded run: which message each part belongs to."""

    def __init__(self, w: Writer) -> None:
        self.w = w
        self.calls: dict[object, ToolCall] = {}
        self.open_calls: dict[str, list[object]] = {}  # message id -> its calls' keys
        self.usage: dict[str, Any] = {}
        self.custom = 0
        self.anonymous = 0
        self.done: set[str] = set()

    async def message(self, msg: Any, metadata: dict[str, Any]) -> None:
        if isinstance(msg, ToolMessage):
            await self.result(msg)
            return
        if not isinstance(msg, AIMessage):  # inputs and messages a node made up
            return
        if msg.id:
            mid = msg.id
        elif isinstance(msg, AIMessageChunk):
            mid = "message"  # chunks without an id: one message
        else:  # a whole message a node made without an id: its own
            self.anonymous += 1
            mid = f"message-{self.anonymous}"
        if mid in self.done:  # a whole message repeating the chunks it was streamed as
            return
        w = self.w
        await w.text(("reasoning", mid), "reasoning", _reasoning(msg), "reasoning")
        text = _text(msg)
        if text:
            await w.end(("reasoning", mid))
        await w.text(("text", mid), "text", text)
        keys = self.open_calls.setdefault(mid, [])
        if isinstance(msg, AIMessageChunk):
            for i, tc in enumerate(msg.tool_call_chunks):
                idx = tc.get("index")
                key = ("tool", mid, i if idx is None else idx)
                if key not in self.calls:
                    call = ToolCall(tc.get("id") or f"{mid}-{i}", tc.get("name") or "")
                    await w.call(key, f"tool-{call.id}", call)
                    self.calls[key] = call
                    keys.append(key)
                await w.args(key, tc.get("args") or "")
        else:
            for i, tcall in enumerate(msg.tool_calls):
                key = ("tool", mid, i)
                call = ToolCall(tcall.get("id") or f"{mid}-{i}", tcall["name"])
                await w.call(key, f"tool-{call.id}", call)
                self.calls[key] = call
                await w.end_call(key, call, json.dumps(tcall.get("args") or {}))
        t = w.turn
        rm = msg.response_metadata or {}
        t.finish_reason = str(rm.get("finish_reason") or rm.get("stop_reason") or t.finish_reason)
        t.model = str(rm.get("model_name") or rm.get("model") or t.model)
        t.id = mid
        for k, v in (msg.usage_metadata or {}).items():
            if isinstance(v, int):
                self.usage[k] = self.usage.get(k, 0) + v
        last = not isinstance(msg, AIMessageChunk) or msg.chunk_position == "last"
        if last:
            await self.end_message(mid)

    async def end_message(self, mid: str) -> None:
        self.done.add(mid)
        w = self.w
        await w.end(("reasoning", mid))
        await w.end(("text", mid))
        for key in self.open_calls.pop(mid, ()):
            await w.end_call(key, self.calls[key])

    async def result(self, msg: ToolMessage) -> None:
        key = ("result", msg.tool_call_id)
        w = self.w
        await w.open(key, f"result-{msg.tool_call_id}", "tool", result_mime(msg.name or ""))
        value = msg.content
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # tools' dicts come JSON-encoded
                value = json.loads(value)
        await w.write(key, json.dumps(value, separators=(",", ":"), default=str))
        failed = msg.status == "error"
        await w.end(key, f"tool failed: {msg.content}"[:500] if failed else "")

    async def custom_payload(self, data: Any) -> None:
        self.custom += 1
        key = ("custom", self.custom)
        mime = CUSTOM_MIME
        if isinstance(data, _Named):
            mime += f'; name="{part_id(data.name)[:200]}"'
            data = data.data
        await self.w.open(key, "custom", "tool", mime)
        await self.w.write(key, json.dumps(data, separators=(",", ":"), default=str))
        await self.w.end(key)


async def forward_graph(
    out: Output,
    stream: AsyncIterable[Any],
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward a LangGraph run (``graph.astream(..., stream_mode=["messages", "custom"])``,
    also with ``version="v2"`` or ``subgraphs=True``, or ``graph.astream_events(...)``)
    into ``out``; returns the :class:`Turn` of the whole run.

    Each AI message's text → a text part ``text`` (``text-2``… for the next message);
    its reasoning (``reasoning_content``, thinking or reasoning blocks) → ``reasoning``;
    each tool call → a JSON part ``tool-<id>`` with its argument chunks as they stream;
    each ``ToolMessage`` → ``result-<tool_call_id>`` (ended with an error when its status
    is ``error``); each custom-mode payload → its own JSON part ``custom`` (``custom-2``…,
    mime :data:`CUSTOM_MIME`); then ``meta`` (summed ``usage_metadata``, the last
    message's finish reason). A message's parts end at its last chunk
    (``chunk_position="last"``), or when the run ends. Other modes are skipped.
    """
    turn = Turn()
    w = Writer(out, turn)
    g = _Graph(w)
    try:
        async for item in events(stream, stall_timeout):
            mode, data = _split(item)
            if mode == "messages" and isinstance(data, tuple) and len(data) == 2:
                await g.message(data[0], data[1] if isinstance(data[1], dict) else {})
            elif mode == "custom":
                await g.custom_payload(data)
    except Exception as exc:
        await w.end_all(failure_text(exc, w.out))
        raise
    finally:
        await close_quietly(stream)
    for mid in list(g.open_calls):
        await g.end_message(mid)
    await w.end_all()
    w.finish()
    turn.usage = g.usage
    if meta:
        await w.meta("langgraph")
    return turn
