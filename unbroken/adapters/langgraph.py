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
)

try:
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_sdk("langgraph", "langgraph") from None

__all__ = ["CUSTOM_MIME", "ToolCall", "Turn", "forward_graph"]

#: the mime type of a custom-mode payload's part (``get_stream_writer()(payload)``);
#: ``adispatch_custom_event(name, data)``'s has ``name="<name>"``
CUSTOM_MIME = 'application/json; name="custom"'

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
    """The state of one forwarded run: which message each part belongs to (messages of
    parallel nodes may interleave, so each has parts of its own)."""

    def __init__(self, w: Writer) -> None:
        self.w = w
        self.out = w.out
        self.texts: dict[str, list[str]] = {}  # message id -> its open text parts
        self.calls: dict[object, ToolCall] = {}
        self.open_calls: dict[str, list[ToolCall]] = {}  # message id -> its calls
        self.usage: dict[str, Any] = {}
        self.anonymous = 0
        self.done: set[str] = set()

    async def write(self, mid: str, role: str, delta: str) -> None:
        if not delta:
            return
        parts = self.texts.setdefault(mid, ["", ""])  # [reasoning, text]
        i = role == "text"
        if not parts[i]:
            parts[i] = self.out.new_id(role)
        if i:
            if parts[0]:  # its text began: its reasoning is over
                await self.out.end_part(parts[0])
                parts[0] = ""
            self.w._text.append(delta)
            await self.out.text(delta, parts[1])
        else:
            self.w._reasoning.append(delta)
            await self.out.reasoning(delta, parts[0])

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
        await self.write(mid, "reasoning", _reasoning(msg))
        await self.write(mid, "text", _text(msg))
        calls = self.open_calls.setdefault(mid, [])
        w = self.w
        if isinstance(msg, AIMessageChunk):
            for i, tc in enumerate(msg.tool_call_chunks):
                idx = tc.get("index")
                key = (mid, i if idx is None else idx)
                call = self.calls.get(key)
                if call is None:
                    call = await w.call(tc.get("id") or f"{mid}-{i}", tc.get("name") or "")
                    self.calls[key] = call
                    calls.append(call)
                await call.append(tc.get("args") or "")
        else:
            for i, tcall in enumerate(msg.tool_calls):
                call = await w.call(tcall.get("id") or f"{mid}-{i}", tcall["name"])
                await w.end_call(call, json.dumps(tcall.get("args") or {}))
        t = w.turn
        rm = msg.response_metadata or {}
        t.finish_reason = str(rm.get("finish_reason") or rm.get("stop_reason") or t.finish_reason)
        t.model = str(rm.get("model_name") or rm.get("model") or t.model)
        t.id = mid
        for k, v in (msg.usage_metadata or {}).items():
            if isinstance(v, int):
                self.usage[k] = self.usage.get(k, 0) + v
        if not isinstance(msg, AIMessageChunk) or msg.chunk_position == "last":
            await self.end_message(mid)

    def pending(self) -> list[str]:
        """The messages with parts still open."""
        return list(dict.fromkeys([*self.texts, *self.open_calls]))

    async def end_message(self, mid: str, error: str = "") -> None:
        self.done.add(mid)
        for pid in self.texts.pop(mid, ()):
            if pid in self.out.open_parts:
                await self.out.end_part(pid, error)
        for call in self.open_calls.pop(mid, ()):
            if error:
                await call.close(error)
            else:
                await self.w.end_call(call)

    async def result(self, msg: ToolMessage) -> None:
        value = msg.content
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # tools' dicts come JSON-encoded
                value = json.loads(value)
        failed = msg.status == "error"
        await self.out.tool_result(
            msg.tool_call_id,
            value,
            error=f"tool failed: {msg.content}"[:500] if failed else "",
            name=msg.name or None,
        )

    async def custom_payload(self, data: Any) -> None:
        name = ""
        if isinstance(data, _Named):
            name, data = data.name, data.data
        j = await self.out.json(self.out.new_id("custom"), name=name or "custom")
        await j.append(json.dumps(data, separators=(",", ":"), default=str))
        await j.close()


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
    its reasoning (``reasoning_content``, thinking or reasoning blocks) → a reasoning
    part; each tool call → ``out.tool_call`` (``tool-<id>``) with its argument chunks
    as they stream; each ``ToolMessage`` → ``out.tool_result`` (``result-<tool_call_id>``,
    ended with an error when its status is ``error``); each custom-mode payload → its
    own JSON part ``custom`` (``custom-2``…, mime :data:`CUSTOM_MIME`); then
    ``out.metadata`` (summed ``usage_metadata``, the last message's finish reason). A
    message's parts end at its last chunk (``chunk_position="last"``), or when the run
    ends. Other modes are skipped.
    """
    w = Writer(out, Turn())
    g = _Graph(w)
    try:
        async for item in events(stream, stall_timeout):
            mode, data = _split(item)
            if mode == "messages" and isinstance(data, tuple) and len(data) == 2:
                await g.message(data[0], data[1] if isinstance(data[1], dict) else {})
            elif mode == "custom":
                await g.custom_payload(data)
    except Exception as exc:
        error = failure_text(exc, out)
        for mid in g.pending():
            await g.end_message(mid, error)
        await w.end_all(error)
        raise
    finally:
        await close_quietly(stream)
    for mid in g.pending():
        await g.end_message(mid)
    w.turn.usage = g.usage
    return await w.finish("langgraph", meta)
