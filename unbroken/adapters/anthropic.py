"""Forward an Anthropic Messages stream into an answer: text, thinking and tool use.

``pip install 'unbroken[anthropic]'``; docs/how-to/adapters.md has the mapping::

    stream = await client.messages.create(model=..., messages=..., max_tokens=..., stream=True)
    turn = await forward_messages(out, stream)

Errors: a failed stream raises the SDK's own :class:`anthropic.APIError` (an ``error``
event mid-stream becomes e.g. :class:`anthropic.APIStatusError` for
``overloaded_error``), after ending every open part with the reason; a stall past
``stall_timeout`` raises :class:`TimeoutError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import Any, cast

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
    import anthropic
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_sdk("anthropic", "anthropic") from None

__all__ = ["ToolCall", "Turn", "forward_messages"]

#: the helper events ``client.messages.stream()`` adds next to the raw ones it also yields
_HELPER_EVENTS = frozenset({"text", "input_json", "thinking", "signature", "citation"})
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def _dump(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return cast(dict[str, Any], dump(exclude_none=True)) if callable(dump) else {}


async def forward_messages(
    out: Output,
    stream: AsyncIterable[Any],
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward a Messages stream (``client.messages.create(..., stream=True)``, or the
    ``client.messages.stream(...)`` helper inside its ``async with``) into ``out``;
    returns the :class:`Turn`.

    Text blocks → ``out.text`` (part ``text``); each thinking block →
    ``out.reasoning`` (a part per block); each ``tool_use`` block → ``out.tool_call``
    (part ``tool-<id>``) with its ``input_json_delta`` fragments as they arrive; then
    ``out.metadata`` (``stop_reason`` as ``finish_reason``, ``usage`` merged from
    ``message_start`` and ``message_delta``). ``Turn.output``
    holds the content blocks to send back (thinking with its signature, tool_use with
    its parsed input).
    """
    w = Writer(out, Turn())
    turn = w.turn
    blocks: dict[int, dict[str, Any]] = {}
    calls: dict[int, ToolCall] = {}
    finished = False
    try:
        async for ev in events(stream, stall_timeout):
            t = getattr(ev, "type", "")
            if t == "content_block_delta":
                i, d = ev.index, ev.delta
                block = blocks.get(i)
                if block is None:
                    continue
                if d.type == "text_delta":
                    block.setdefault("_text", []).append(d.text)
                    await w.text(d.text)
                elif d.type == "input_json_delta" and i in calls:
                    await calls[i].append(d.partial_json)
                elif d.type == "thinking_delta":
                    block.setdefault("_text", []).append(d.thinking)
                    await w.reasoning(d.thinking)
                elif d.type == "signature_delta":
                    block["signature"] = block.get("signature", "") + d.signature
            elif t in _HELPER_EVENTS:
                continue
            elif t == "content_block_start":
                i, cb = ev.index, ev.content_block
                block = _dump(cb)
                blocks[i] = block
                if cb.type == "text":
                    block["text"] = cb.text or ""
                    await w.text(block["text"])
                elif cb.type == "thinking":
                    block["thinking"] = cb.thinking or ""
                    await out.end_reasoning()  # a block of its own: a part of its own
                    await w.reasoning(block["thinking"])
                elif cb.type in _TOOL_BLOCKS:
                    calls[i] = await w.call(cb.id, cb.name)
            elif t == "content_block_stop":
                i = ev.index
                done = calls.get(i)
                if done is not None:  # no deltas: the input came whole, with the start
                    await w.end_call(done, json.dumps(blocks[i].get("input") or {}))
                    blocks[i]["input"] = done.input
                elif blocks.get(i, {}).get("type") == "thinking":
                    await out.end_reasoning()
            elif t == "message_start":
                m = ev.message
                turn.id, turn.model = m.id, m.model
                turn.usage = _dump(m.usage)
            elif t == "message_delta":
                turn.finish_reason = getattr(ev.delta, "stop_reason", None) or turn.finish_reason
                turn.usage.update(_dump(getattr(ev, "usage", None)))
            elif t == "message_stop":
                finished = True
        if not finished:
            request = getattr(getattr(stream, "response", None), "request", None)
            raise anthropic.APIError(
                "the stream ended before message_stop (cut short)", cast(Any, request), body=None
            )
    except Exception as exc:
        await w.end_all(failure_text(exc, out))
        raise
    finally:
        await close_quietly(stream)
    await w.finish("anthropic.messages", meta)
    for block in blocks.values():  # the blocks' text, as their deltas brought it
        streamed = "".join(block.pop("_text", ()))
        if block.get("type") in ("text", "thinking"):
            block[block["type"]] += streamed
    turn.output = [blocks[i] for i in sorted(blocks)]
    return turn
