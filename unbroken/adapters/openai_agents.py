"""Forward an OpenAI Agents SDK run into an answer: every model response, tool call,
tool result and handoff of ``Runner.run_streamed``, as they happen.

``pip install 'unbroken[openai-agents]'``; docs/how-to/adapters.md has the mapping::

    result = Runner.run_streamed(my_agent, req.input)
    turn = await forward_run(out, result)

The run's raw events are OpenAI Responses events (also for its Chat Completions and
LiteLLM models, which the SDK converts): they go through the same mapping as
:func:`unbroken.adapters.openai.forward_responses`. Events are recognised by their
``type``, so this module imports without the SDK (it needs ``openai``, which the SDK
depends on).

Errors: whatever the run raises (the model's ``openai.APIError``, ``MaxTurnsExceeded``,
a guardrail's tripwire…) is raised again after every open part was ended with the
reason and the run cancelled; a stall past ``stall_timeout`` raises
:class:`TimeoutError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..server.agent import Output
from ._common import ToolCall, Turn, Writer, events, failure_text

try:
    from .openai import ResponseEvents
except ConfigError:  # pragma: no cover - exercised without the extra
    raise ConfigError(
        "unbroken.adapters.openai_agents needs the 'openai' package: "
        "pip install 'unbroken[openai-agents]'"
    ) from None

__all__ = ["ToolCall", "Turn", "forward_run"]

_RESULTS = ("tool_output", "handoff_occured", "handoff_occurred")


def _field(obj: Any, name: str) -> Any:
    """A field of a raw item: the SDK holds some as dicts, some as pydantic models."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _add(total: dict[str, Any], usage: Mapping[str, Any]) -> None:
    """Add ``usage``'s token counts into ``total`` (nested details too)."""
    for k, v in usage.items():
        if isinstance(v, Mapping):
            _add(total.setdefault(k, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v


async def forward_run(
    out: Output,
    result: Any,
    *,
    stall_timeout: float | None = None,
    meta: bool = True,
) -> Turn:
    """Forward a streamed Agents SDK run (the ``RunResultStreaming`` of
    ``Runner.run_streamed(...)``, or its ``stream_events()``) into ``out``; returns
    the :class:`Turn` of the whole run (``Turn.result``: the ``RunResultStreaming``,
    its ``final_output`` set).

    Each model response as :func:`~unbroken.adapters.openai.forward_responses` maps
    it (text, a reasoning part per reasoning item, each function call ``tool-<call_id>``
    with its arguments as they stream, then ``out.metadata`` with the response's
    ``finish_reason`` and ``usage`` and the ``agent`` that called the model; none
    with ``meta=False``); each tool's output and each handoff's →
    ``out.tool_result`` (part ``result-<call_id>``); a tool call that came with no
    raw events (not streamed) → ``out.tool_call`` written whole. ``Turn.usage``: the
    run's, summed; ``Turn.finish_reason``: the last response's.
    """
    stream: AsyncIterable[Any] = (
        result.stream_events() if hasattr(result, "stream_events") else result
    )
    w = Writer(out, Turn(result=result if stream is not result else None))
    turn = w.turn
    r = ResponseEvents(w)
    agent = ""
    usage: dict[str, Any] = {}
    finish = ""
    responding = False  # a model response started and has not completed yet
    try:
        async for ev in events(stream, stall_timeout):
            t = getattr(ev, "type", "")
            if t == "raw_response_event":
                data = ev.data
                dt = getattr(data, "type", "")
                if dt == "response.created":
                    responding, r.finished = True, False
                await r.on(data)
                if r.finished and responding:
                    responding = False
                    _add(usage, turn.usage)
                    finish = turn.finish_reason
                    if meta:
                        info = {"provider": "openai_agents", "id": turn.id, "model": turn.model}
                        if agent:
                            info["agent"] = agent
                        await out.metadata(info, finish_reason=finish, usage=turn.usage)
            elif t == "run_item_stream_event":
                await _item(w, ev.name, ev.item)
            elif t == "agent_updated_stream_event":
                agent = getattr(ev.new_agent, "name", "") or agent
        if responding or not getattr(result, "is_complete", True):
            raise RuntimeError("the run's events ended before it completed (cut short)")
    except BaseException as exc:
        cancel = getattr(result, "cancel", None)
        if callable(cancel) and not getattr(result, "is_complete", True):
            cancel()
        if isinstance(exc, Exception):
            await r.end(failure_text(exc, out))
        raise
    await r.end()
    await w.finish("openai_agents", False)
    turn.usage, turn.finish_reason = usage, finish
    return turn


async def _item(w: Writer, name: str, item: Any) -> None:
    """A run item event: tool results and handoffs (the raw events already carried the
    text, reasoning and tool calls; a call they did not carry is written whole)."""
    raw = getattr(item, "raw_item", None)
    call_id = _field(raw, "call_id")
    if not isinstance(call_id, str) or not call_id:
        return
    if name in _RESULTS:
        value = item.output if hasattr(item, "output") else _field(raw, "output")
        await w.out.tool_result(call_id, _jsonable(value))
    elif (
        name == "tool_called"
        and _field(raw, "type") == "function_call"
        and all(c.id != call_id for c in w.turn.tool_calls)
    ):
        call = await w.call(call_id, str(_field(raw, "name") or ""))
        await w.end_call(call, str(_field(raw, "arguments") or ""))
