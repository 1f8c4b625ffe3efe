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

    Output text → ``out.text`` (part ``text``); each reasoning item → ``out.reasoning``
    (its summary or reasoning text; a part per item); each function call →
    ``out.tool_call`` (part ``tool-<call_id>``) with the arguments as they stream; a
    refusal → a text part ``refusal``; then ``out.metadata`` (unless ``meta=False``).
    Ids already used in the answer get a ``-2``, ``-3``… suffix.
    """
    w = Writer(out, Turn())
    r = ResponseEvents(w, stream)
    try:
        async for ev in events(stream, stall_timeout):
            await r.on(ev)
        if not r.finished:
            raise _error(stream, "the stream ended before response.completed (cut short)")
    except Exception as exc:
        await r.end(failure_text(exc, out))
        raise
    finally:
        await close_quietly(stream)
    await r.end()
    return await w.finish("openai.responses", meta)


class ResponseEvents:
    """The Responses API mapping, one event at a time (:func:`forward_responses`, and
    the OpenAI Agents SDK adapter, whose raw events are Responses events): writes
    with ``w`` and fills its :class:`Turn` (``finished`` once ``response.completed``
    or ``.incomplete`` came). ``stream``: what an error's request comes from."""

    def __init__(self, w: Writer, stream: object = None) -> None:
        self.w = w
        self.stream = stream
        self.finished = False
        self._calls: dict[str, ToolCall] = {}  # by item id
        self._summary: dict[str, int] = {}  # the summary part each reasoning item is at
        self._refusal = ""

    async def on(self, ev: Any) -> None:
        """Forward one event; raises :class:`openai.APIError` on ``error`` and
        ``response.failed``."""
        w, out, turn = self.w, self.w.out, self.w.turn
        t = getattr(ev, "type", "")
        if t == "response.output_text.delta":
            await w.text(ev.delta)
        elif t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            index = getattr(ev, "summary_index", 0)
            if self._summary.setdefault(ev.item_id, index) != index:
                self._summary[ev.item_id] = index
                await w.reasoning("\n\n")  # the summary's next paragraph
            await w.reasoning(ev.delta)
        elif t == "response.function_call_arguments.delta":
            if ev.item_id in self._calls:
                await self._calls[ev.item_id].append(ev.delta)
        elif t == "response.refusal.delta":
            self._refusal = self._refusal or out.new_id("refusal")
            await out.text(ev.delta, self._refusal)
        elif t == "response.output_item.added":
            item = ev.item
            if item.type == "function_call":
                self._calls[item.id] = await w.call(item.call_id, item.name)
        elif t == "response.output_item.done":
            item = ev.item
            if item.type == "function_call":
                await w.end_call(self._calls.get(item.id), item.arguments or "")
            elif item.type == "reasoning":
                await out.end_reasoning()
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
            self.finished = True
        elif t == "response.failed":
            err = getattr(ev.response, "error", None)
            message = getattr(err, "message", None) or "the response failed"
            raise _error(self.stream, f"response.failed: {message}", _dump(err))
        elif t == "error":
            code = getattr(ev, "code", None)
            message = getattr(ev, "message", "") or "error event"
            raise _error(self.stream, f"{code}: {message}" if code else message, _dump(ev))

    async def end(self, error: str = "") -> None:
        """End what is open: the turn's parts and the refusal (with ``error``)."""
        if error:
            await self.w.end_all(error)
        if self._refusal in self.w.out.open_parts:
            await self.w.out.end_part(self._refusal, error)


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

    Content → ``out.text`` (part ``text``; a part ``text-<i>`` for choice ``i`` > 0);
    reasoning deltas that OpenAI-compatible servers send (``reasoning_content`` or
    ``reasoning``) → ``out.reasoning``; each tool call → ``out.tool_call`` (part
    ``tool-<id>``) with its arguments as they stream; a refusal → a text part
    ``refusal``; then ``out.metadata``.
    """
    w = Writer(out, Turn())
    turn = w.turn
    calls: dict[tuple[int, int], ToolCall] = {}
    finish: dict[int, str] = {}
    extra: dict[tuple[str, int], str] = {}  # the parts of choices > 0 and of refusals
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
                if d is not None:
                    more = getattr(d, "model_extra", None) or {}
                    thinking = more.get("reasoning_content") or more.get("reasoning")
                    if isinstance(thinking, str):
                        await _write(w, extra, i, "reasoning", thinking)
                    if d.content:
                        await _write(w, extra, i, "text", d.content)
                    if getattr(d, "refusal", None):
                        await _write(w, extra, i, "refusal", d.refusal)
                    for tc in d.tool_calls or ():
                        key = (i, tc.index)
                        fn = tc.function
                        call = calls.get(key)
                        if call is None:
                            name = (fn.name if fn else None) or ""
                            call = calls[key] = await w.call(tc.id or f"{i}.{tc.index}", name)
                        if fn is not None and fn.arguments:
                            await call.append(fn.arguments)
                if choice.finish_reason:
                    finish[i] = choice.finish_reason
                    for key, call in calls.items():
                        if key[0] == i:
                            await w.end_call(call)
                    if i == 0:
                        await out.end_reasoning()
        if not finish:
            raise _error(stream, "the stream ended before a finish_reason (cut short)")
    except Exception as exc:
        error = failure_text(exc, out)
        await w.end_all(error)
        for pid in extra.values():
            if pid in out.open_parts:
                await out.end_part(pid, error)
        raise
    finally:
        await close_quietly(stream)
    for pid in extra.values():
        if pid in out.open_parts:
            await out.end_part(pid)
    turn.finish_reason = finish.get(0) or next(iter(finish.values()))
    await w.finish("openai.chat", meta)
    # choice 0's (parts ``text-<i>`` hold the others)
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    mine = [c for k, c in calls.items() if k[0] == 0]
    if mine:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in mine
        ]
    turn.output.append(message)
    return turn


async def _write(
    w: Writer, extra: dict[tuple[str, int], str], i: int, what: str, delta: str
) -> None:
    """Choice ``i``'s ``what`` (text, reasoning, refusal): choice 0's text and
    reasoning are the answer's own; the rest get parts of their own."""
    if i == 0 and what == "text":
        await w.text(delta)
    elif i == 0 and what == "reasoning":
        await w.reasoning(delta)
    elif delta:
        pid = extra.get((what, i))
        if pid is None:
            pid = extra[(what, i)] = w.out.new_id(f"{what}-{i}" if i else what)
        if what == "reasoning":
            await w.out.reasoning(delta, pid)
        else:
            await w.out.text(delta, pid)
