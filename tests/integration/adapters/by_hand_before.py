"""The same forwarding as ``examples/forward_by_hand.py``, written with the calls there
were before part roles (``start_part``/``chunk``/``end_part``, mimes spelled by hand,
part ids invented, a meta part of one's own): kept to count the glue it took, and to
check that this code still works and gives the same answer."""

from __future__ import annotations

import json
from typing import Any

from unbroken.server import Output

REASONING = "text/plain; role=reasoning"


def tool_mime(name: str) -> str:
    return f'application/json; tool="{name}"'


class Parts:
    """Invented part ids: unique in the answer, and which are open."""

    def __init__(self, out: Output) -> None:
        self.out, self.used, self.open = out, set[str](), set[str]()

    async def start(self, want: str, kind: Any, mime: str) -> str:
        pid, n = want, 1
        while pid in self.used:
            n += 1
            pid = f"{want}-{n}"
        await self.out.start_part(pid, kind, mime=mime)
        self.used.add(pid)
        self.open.add(pid)
        return pid

    async def end(self, pid: str | None) -> None:
        if pid in self.open:
            self.open.discard(pid)
            await self.out.end_part(pid)


async def forward_openai_chat(out: Output, stream: Any, parts: Parts) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    text = None
    finish, usage = "", None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            if choice.delta.content:
                if text is None:
                    text = await parts.start("text", "text", "text/plain")
                await out.chunk(text, choice.delta.content)
            for tc in choice.delta.tool_calls or ():
                if tc.index not in calls:
                    await parts.end(text)  # the text before a tool call is its own part
                    pid = await parts.start(f"tool-{tc.id}", "json", tool_mime(tc.function.name))
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "part": pid}
                await out.chunk(calls[tc.index]["part"], tc.function.arguments or "")
            finish = choice.finish_reason or finish
    await parts.end(text)
    for call in calls.values():
        await parts.end(call["part"])
    meta = await parts.start("meta", "json", "application/json; role=meta")
    await out.chunk(meta, json.dumps({"finish_reason": finish, "usage": usage}))
    await parts.end(meta)
    return list(calls.values())


async def forward_anthropic(out: Output, stream: Any, parts: Parts) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    blocks: dict[int, str] = {}  # block index -> its part
    finish, usage = "", {}
    async for ev in stream:
        if ev.type == "content_block_start":
            cb = ev.content_block
            if cb.type == "tool_use":
                pid = await parts.start(f"tool-{cb.id}", "json", tool_mime(cb.name))
                calls[ev.index] = {"id": cb.id, "name": cb.name, "part": pid}
                blocks[ev.index] = pid
            elif cb.type == "thinking":
                blocks[ev.index] = await parts.start("reasoning", "text", REASONING)
            elif cb.type == "text":
                blocks[ev.index] = await parts.start("text", "text", "text/plain")
        elif ev.type == "content_block_delta":
            d = ev.delta
            body = getattr(d, "text", None) or getattr(d, "thinking", None)
            body = body if body is not None else getattr(d, "partial_json", None)
            if body and ev.index in blocks:
                await out.chunk(blocks[ev.index], body)
        elif ev.type == "content_block_stop":
            await parts.end(blocks.get(ev.index))
        elif ev.type == "message_start":
            usage = ev.message.usage.model_dump(exclude_none=True)
        elif ev.type == "message_delta":
            finish = ev.delta.stop_reason
            usage.update(ev.usage.model_dump(exclude_none=True))
    meta = await parts.start("meta", "json", "application/json; role=meta")
    await out.chunk(meta, json.dumps({"finish_reason": finish, "usage": usage}))
    await parts.end(meta)
    return list(calls.values())


async def forward_langgraph(out: Output, stream: Any, parts: Parts) -> None:
    calls: dict[tuple[str, int], str] = {}
    msgs: dict[str, dict[str, str]] = {}  # message id -> its open text / reasoning part
    async for mode, data in stream:
        if mode == "custom":
            pid = await parts.start("custom", "json", "application/json; role=custom")
            await out.chunk(pid, json.dumps(data))
            await parts.end(pid)
            continue
        msg, _ = data
        if msg.type == "tool":
            pid = await parts.start(
                f"result-{msg.tool_call_id}", "json", "application/json; role=tool-result"
            )
            await out.chunk(pid, json.dumps(msg.content))
            await parts.end(pid)
            continue
        mine = msgs.setdefault(msg.id, {})
        reasoning = msg.additional_kwargs.get("reasoning_content", "")
        if reasoning:
            if "reasoning" not in mine:
                mine["reasoning"] = await parts.start("reasoning", "text", REASONING)
            await out.chunk(mine["reasoning"], reasoning)
        if isinstance(msg.content, str) and msg.content:
            await parts.end(mine.get("reasoning"))
            if "text" not in mine:
                mine["text"] = await parts.start("text", "text", "text/plain")
            await out.chunk(mine["text"], msg.content)
        for tc in getattr(msg, "tool_call_chunks", ()):
            if (msg.id, tc["index"]) not in calls:
                pid = await parts.start(f"tool-{tc['id']}", "json", tool_mime(tc["name"]))
                calls[msg.id, tc["index"]] = pid
            await out.chunk(calls[msg.id, tc["index"]], tc["args"] or "")
        if getattr(msg, "chunk_position", "last") == "last":
            for pid in [*mine.values(), *calls.values()]:
                await parts.end(pid)
