"""Forwarding model streams by hand with the agent API's part calls (no adapter).

Each function is the whole loop a user writes for one source: text, reasoning, tool
calls with their arguments streaming, and the finish reason and usage. The adapters in
``unbroken.adapters`` do the same (plus failures, refusals, several choices…); these
show the API. ``tests/integration/adapters/test_by_hand.py`` runs them against real SDKs.
"""

from __future__ import annotations

import json
from typing import Any

from unbroken.server import Output
from unbroken.server.agent import ToolCall


# --- OpenAI Chat Completions (stream=True, stream_options={"include_usage": True})
async def forward_openai_chat(out: Output, stream: Any) -> list[ToolCall]:
    calls: dict[int, ToolCall] = {}
    finish, usage = "", None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            if choice.delta.content:
                await out.text(choice.delta.content)
            for tc in choice.delta.tool_calls or ():
                if tc.index not in calls:
                    calls[tc.index] = await out.tool_call(tc.id, tc.function.name)
                await calls[tc.index].append(tc.function.arguments or "")
            finish = choice.finish_reason or finish
    for call in calls.values():
        await call.close()
    await out.metadata(finish_reason=finish, usage=usage)
    return list(calls.values())


# --- Anthropic Messages (stream=True)
async def forward_anthropic(out: Output, stream: Any) -> list[ToolCall]:
    calls: dict[int, ToolCall] = {}
    finish, usage = "", {}
    async for ev in stream:
        if ev.type == "content_block_start" and ev.content_block.type == "tool_use":
            calls[ev.index] = await out.tool_call(ev.content_block.id, ev.content_block.name)
        elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            await out.text(ev.delta.text)
        elif ev.type == "content_block_delta" and ev.delta.type == "thinking_delta":
            await out.reasoning(ev.delta.thinking)
        elif ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
            await calls[ev.index].append(ev.delta.partial_json)
        elif ev.type == "content_block_stop" and ev.index in calls:
            await calls[ev.index].close()
        elif ev.type == "message_start":
            usage = ev.message.usage.model_dump(exclude_none=True)
        elif ev.type == "message_delta":
            finish = ev.delta.stop_reason
            usage.update(ev.usage.model_dump(exclude_none=True))
    await out.metadata(finish_reason=finish, usage=usage)
    return list(calls.values())


# --- LangGraph (graph.astream(..., stream_mode=["messages", "custom"]))
async def forward_langgraph(out: Output, stream: Any) -> None:
    calls: dict[tuple[str, int], ToolCall] = {}
    async for mode, data in stream:
        if mode == "custom":
            j = await out.json(name="custom")
            await j.append(json.dumps(data))
            await j.close()
            continue
        msg, _ = data
        if msg.type == "tool":
            await out.tool_result(msg.tool_call_id, msg.content)
            continue
        await out.reasoning(msg.additional_kwargs.get("reasoning_content", ""))
        await out.text(msg.content if isinstance(msg.content, str) else "")
        for tc in getattr(msg, "tool_call_chunks", ()):
            if (msg.id, tc["index"]) not in calls:
                calls[msg.id, tc["index"]] = await out.tool_call(tc["id"], tc["name"])
            await calls[msg.id, tc["index"]].append(tc["args"] or "")
        if getattr(msg, "chunk_position", "last") == "last":
            for call in calls.values():
                await call.close()
