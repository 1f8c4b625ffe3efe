"""Forward a pydantic-ai agent run into an answer: every model response, tool call and
tool result of the run, as they happen.

``pip install 'unbroken[pydantic-ai]'`` (and the extra of your model provider);
docs/how-to/adapters.md has the mapping::

    async with my_agent.run_stream_events(req.input) as events:
        turn = await forward_pydantic_ai(out, events)

Errors: whatever the run raises (``ModelHTTPError``, ``UnexpectedModelBehavior``, the
model SDK's own errors…) is raised again after every open part was ended with the
reason; a stall past ``stall_timeout`` raises :class:`TimeoutError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import asdict, is_dataclass
from typing import Any

from ..server.agent import Output
from ._common import (
    ToolCall,
    Turn,
    Writer,
    events,
    failure_text,
    missing_sdk,
)

try:
    import pydantic_ai  # noqa: F401  # the events come from it
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_sdk("pydantic_ai", "pydantic-ai") from None

__all__ = ["ToolCall", "Turn", "forward_pydantic_ai"]


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


async def forward_pydantic_ai(
    out: Output,
    stream: AsyncIterable[Any],
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward the events of a pydantic-ai run (``agent.run_stream_events(...)`` inside
    its ``async with``: they end with the run's ``AgentRunResultEvent``, without which
    the run counts as cut short) into ``out``; returns the :class:`Turn` of the whole
    run (``Turn.result``: the ``AgentRunResult``).

    Each text part of each model response → ``out.text`` (part ``text``, ``text-2``…
    for the next); each thinking part → ``out.reasoning``; each tool call →
    ``out.tool_call`` (part ``tool-<tool_call_id>``) with its arguments as they
    stream; each tool's result → ``out.tool_result`` (part ``result-<tool_call_id>``;
    its ``error`` set when the tool asked the model to retry); then ``out.metadata``
    (usage of the run, the last response's finish reason).
    """
    w = Writer(out, Turn())
    turn = w.turn
    response = 0  # which model response of the run the part indexes belong to
    ended: set[int] = set()  # part indexes of the current response that ended
    calls: dict[object, ToolCall] = {}
    finished = False
    try:
        async for ev in events(stream, stall_timeout):
            kind = getattr(ev, "event_kind", "")
            if kind == "part_delta":
                key = (response, ev.index)
                d = ev.delta
                dk = getattr(d, "part_delta_kind", "")
                if dk == "text":
                    await w.text(d.content_delta)
                elif dk == "thinking" and d.content_delta:
                    await w.reasoning(d.content_delta)
                elif dk == "tool_call" and isinstance(d.args_delta, str) and key in calls:
                    await calls[key].append(d.args_delta)
            elif kind == "part_start":
                if ev.index in ended:  # a new model response starts its parts again
                    response += 1
                    ended.clear()
                key = (response, ev.index)
                part = ev.part
                pk = getattr(part, "part_kind", "")
                if pk == "text":
                    await out.end_text()  # each text part of a response: a part of its own
                    await w.text(part.content)
                elif pk == "thinking":
                    await out.end_reasoning()
                    await w.reasoning(part.content)
                elif pk == "tool-call":
                    calls[key] = call = await w.call(part.tool_call_id, part.tool_name)
                    if isinstance(part.args, str):
                        await call.append(part.args)
            elif kind == "part_end":
                key = (response, ev.index)
                ended.add(ev.index)
                if key in calls:  # arguments that came as a dict are written whole
                    await w.end_call(calls[key], ev.part.args_as_json_str())
                elif getattr(ev.part, "part_kind", "") == "thinking":
                    await out.end_reasoning()
                else:
                    await out.end_text()
            elif kind == "function_tool_result":
                result = ev.part
                retry = getattr(result, "part_kind", "") == "retry-prompt"
                body = result.model_response_str() if retry else None
                await out.tool_result(
                    result.tool_call_id,
                    _jsonable(result.content) if body is None else body,
                    error=f"retry: {body}" if body is not None else "",
                    name=result.tool_name,
                )
            elif kind == "agent_run_result":
                run = ev.result
                turn.result = run
                last = getattr(run, "response", None)
                turn.model = getattr(last, "model_name", None) or ""
                turn.id = getattr(last, "provider_response_id", None) or ""
                turn.finish_reason = getattr(last, "finish_reason", None) or ""
                usage = run.usage  # a property now, a method in pydantic-ai before 2
                if callable(usage) and not is_dataclass(usage):
                    usage = usage()
                turn.usage = {k: v for k, v in _jsonable(usage).items() if v not in (None, 0, {})}
                finished = True
        if not finished:
            raise RuntimeError("the run's events ended before its result (cut short)")
    except Exception as exc:
        await w.end_all(failure_text(exc, out))
        raise
    return await w.finish("pydantic_ai", meta)
