"""Forward an OpenAI stream into an answer: Responses API events or Chat Completions chunks.

``pip install 'unbroken[openai]'``; docs/how-to/adapters.md has the mapping::

    stream = await client.responses.create(model=..., input=..., stream=True)
    turn = await forward_responses(out, stream)

Errors: a failed stream raises the SDK's own :class:`openai.APIError` (its subclasses
for HTTP and connection failures), after ending every open part with the reason; a
stall past ``stall_timeout`` raises :class:`TimeoutError`.
"""

from __future__ import annotations

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
    import openai
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_sdk("openai", "openai") from None

__all__ = ["ToolCall", "Turn", "forward_chat", "forward_responses"]


def _dump(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return cast(dict[str, Any], dump(exclude_none=True)) if callable(dump) else {}


def _error(stream: object, message: str, body: object = None) -> openai.APIError:
    """An :class:`openai.APIError` for a failure the SDK itself does not raise on
    (a Responses ``error`` event, ``response.failed``, a stream cut short)."""
    request = getattr(getattr(stream, "response", None), "request", None)
    return openai.APIError(message, cast(Any, request), body=body)


async def forward_responses(
    out: Output,
    stream: AsyncIterable[Any],
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward a Responses API stream (``client.responses.create(..., stream=True)`` or
    ``client.responses.stream(...)``) into ``out``; returns the :class:`Turn`.

    Output text → part ``text``; each reasoning item → ``reasoning`` (its summary or
    reasoning text); each function call → a JSON part ``tool-<call_id>`` with the
    arguments as they stream; a refusal → ``refusal``; then ``meta`` (unless
    ``meta=False``). Ids already used in the answer get a ``-2``, ``-3``… suffix.
    """
    turn = Turn()
    w = Writer(out, turn)
    calls: dict[str, ToolCall] = {}  # by item id
    summary_index: dict[str, int] = {}
    finished = False
    try:
        async for ev in events(stream, stall_timeout):
            t = getattr(ev, "type", "")
            if t == "response.output_text.delta":
                await w.text("text", "text", ev.delta)
            elif t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                key = ("reasoning", ev.item_id)
                index = getattr(ev, "summary_index", 0)
                last = summary_index.setdefault(ev.item_id, index)
                delta = ev.delta
                if index != last and w.is_open(key):
                    summary_index[ev.item_id] = index
                    delta = "\n\n" + delta  # the summary's next paragraph
                await w.text(key, "reasoning", delta, "reasoning")
            elif t == "response.function_call_arguments.delta":
                await w.args(("tool", ev.item_id), ev.delta)
            elif t == "response.function_call_arguments.done":
                if not w.streamed(("tool", ev.item_id)):  # sent whole, not as deltas
                    await w.args(("tool", ev.item_id), ev.arguments)
            elif t == "response.refusal.delta":
                await w.text("refusal", "refusal", ev.delta)
            elif t == "response.output_item.added":
                item = ev.item
                if item.type == "function_call":
                    call = ToolCall(item.call_id, item.name)
                    await w.call(("tool", item.id), f"tool-{item.call_id}", call)
                    calls[item.id] = call
            elif t == "response.output_item.done":
                item = ev.item
                if item.type == "function_call" and item.id in calls:
                    await w.end_call(("tool", item.id), calls[item.id], item.arguments or "")
                elif item.type == "reasoning":
                    await w.end(("reasoning", item.id))
                turn.output.append(_dump(item))
            elif t == "response.created":
                turn.id, turn.model = ev.response.id, ev.response.model
            elif t in ("response.completed", "response.incomplete"):
                r = ev.response
                turn.id, turn.model = r.id or turn.id, r.model or turn.model
                turn.usage = _dump(r.usage)
                details = getattr(r, "incomplete_details", None)
                turn.finish_reason = (
                    (getattr(details, "reason", None) or r.status or "")
                    if (t == "response.incomplete")
                    else (r.status or "completed")
                )
                finished = True
            elif t == "response.failed":
                err = getattr(ev.response, "error", None)
                message = getattr(err, "message", None) or "the response failed"
                raise _error(stream, f"response.failed: {message}", _dump(err))
            elif t == "error":
                code = getattr(ev, "code", None)
                message = getattr(ev, "message", "") or "error event"
                raise _error(stream, f"{code}: {message}" if code else message, _dump(ev))
        if not finished:
            raise _error(stream, "the stream ended before response.completed (cut short)")
    except Exception as exc:
        await w.end_all(failure_text(exc, w.out))
        raise
    finally:
        await close_quietly(stream)
    await w.end_all()
    w.finish()
    if meta:
        await w.meta("openai.responses")
    return turn


async def forward_chat(
    out: Output,
    stream: AsyncIterable[Any],
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward Chat Completions chunks (``client.chat.completions.create(...,
    stream=True)``; add ``stream_options={"include_usage": True}`` for usage) into
    ``out``; returns the :class:`Turn`.

    Content → part ``text`` (``text-<i>`` for choice ``i`` > 0); reasoning deltas that
    OpenAI-compatible servers send (``reasoning_content`` or ``reasoning``) →
    ``reasoning``; each tool call → a JSON part ``tool-<id>`` with its arguments as
    they stream; a refusal → ``refusal``; then ``meta``.
    """
    turn = Turn()
    w = Writer(out, turn)
    calls: dict[tuple[int, int], ToolCall] = {}
    finish: dict[int, str] = {}
    texts: dict[int, list[str]] = {}
    try:
        async for chunk in events(stream, stall_timeout):
            turn.id = getattr(chunk, "id", "") or turn.id
            turn.model = getattr(chunk, "model", "") or turn.model
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                turn.usage = _dump(usage)
            for choice in getattr(chunk, "choices", None) or ():
                i = choice.index
                d = choice.delta
                suffix = f"-{i}" if i else ""
                if d is not None:
                    extra = getattr(d, "model_extra", None) or {}
                    thinking = extra.get("reasoning_content") or extra.get("reasoning")
                    if isinstance(thinking, str):
                        await w.text(("reasoning", i), f"reasoning{suffix}", thinking, "reasoning")
                    if (d.content or d.tool_calls) and w.is_open(("reasoning", i)):
                        await w.end(("reasoning", i))  # the answer began: reasoning is over
                    if d.content:
                        texts.setdefault(i, []).append(d.content)
                        await w.text(("text", i), f"text{suffix}", d.content)
                    if getattr(d, "refusal", None):
                        await w.text(("refusal", i), f"refusal{suffix}", d.refusal)
                    for tc in d.tool_calls or ():
                        key = (i, tc.index)
                        fn = tc.function
                        call = calls.get(key)
                        if call is None:
                            name = (fn.name if fn else None) or ""
                            call = ToolCall(tc.id or f"{i}.{tc.index}", name)
                            await w.call(("tool", key), f"tool-{call.id}", call)
                            calls[key] = call
                        if fn is not None and fn.arguments:
                            await w.args(("tool", key), fn.arguments)
                if choice.finish_reason:
                    finish[i] = choice.finish_reason
                    for key in [k for k in calls if k[0] == i]:
                        await w.end_call(("tool", key), calls[key])
                    await w.end(("reasoning", i))
        if not finish:
            raise _error(stream, "the stream ended before a finish_reason (cut short)")
    except Exception as exc:
        await w.end_all(failure_text(exc, w.out))
        raise
    finally:
        await close_quietly(stream)
    await w.end_all()
    w.finish()
    turn.finish_reason = finish.get(0) or next(iter(finish.values()))
    turn.text = "".join(texts.get(0, ()))  # choice 0 (parts ``text-<i>`` hold the others)
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    mine = [c for k, c in calls.items() if k[0] == 0]
    if mine:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in mine
        ]
    turn.output.append(message)
    if meta:
        await w.meta("openai.chat")
    return turn
