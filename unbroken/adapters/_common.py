"""What every adapter shares: the turn summary, and failing loudly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..server.agent import Output, ToolCall, part_id

__all__ = ["Output", "ToolCall", "Turn", "Writer", "part_id"]


def missing_sdk(module: str, extra: str) -> ConfigError:
    """The error raised when an adapter's SDK (the package ``module``) is not installed."""
    return ConfigError(
        f"unbroken.adapters.{module} needs the {module!r} package: pip install 'unbroken[{extra}]'"
    )


@dataclass(slots=True)
class Turn:
    """One model call, as forwarded: what the agent needs for its next step.

    ``finish_reason`` and ``usage`` are the provider's own values (``stop``,
    ``tool_calls``, ``end_turn``, ``tool_use``, ``completed``…; token counts as the
    provider names them). ``tool_calls``: the calls' handles (``id``, ``name``,
    ``arguments``, ``input`` parsed, ``part``). ``output`` is what to send back to the
    provider with the tool results (Responses output items, an assistant message,
    Anthropic content blocks), as plain dicts. ``parts`` lists the part ids written,
    in order. ``result``: the SDK's own final result when it has one (pydantic-ai's
    ``AgentRunResult``).
    """

    id: str = ""
    model: str = ""
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    output: list[dict[str, Any]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    result: Any = None


class Writer:
    """What a forwarded turn wrote: its text, reasoning and open tool calls, so that a
    failure can end them all with the reason (the parts themselves are the
    :class:`Output`'s: ``out.text``, ``out.reasoning``, ``out.tool_call``…)."""

    def __init__(self, out: Output, turn: Turn) -> None:
        self.out = out
        self.turn = turn
        self._first = len(out.parts)
        self._text: list[str] = []  # joined once at the end (``+=`` on a str is quadratic)
        self._reasoning: list[str] = []

    async def text(self, delta: str) -> None:
        if delta:
            self._text.append(delta)
            await self.out.text(delta)

    async def reasoning(self, delta: str) -> None:
        if delta:
            self._reasoning.append(delta)
            await self.out.reasoning(delta)

    async def call(self, id: str | None, name: str) -> ToolCall:
        """Open a tool call's part (its arguments follow with ``append``)."""
        call = await self.out.tool_call(id, name)
        self.turn.tool_calls.append(call)
        return call

    @staticmethod
    async def end_call(call: ToolCall | None, whole: str = "") -> None:
        """End a tool call's part; ``whole``: its arguments, written if none streamed
        (providers that send them in one piece at the end)."""
        if call is not None and not call.closed:
            if not call.arguments and whole:
                await call.append(whole)
            await call.close()

    async def end_all(self, error: str = "") -> None:
        """End what the turn left open (with ``error`` when it failed)."""
        for call in self.turn.tool_calls:
            if not call.closed:
                await call.close(error)
        await self.out.end_reasoning(error)
        await self.out.end_text(error)

    async def finish(self, provider: str, meta: bool) -> Turn:
        """End the turn: fill the :class:`Turn`, write its metadata part (unless
        ``meta`` is false: ``provider``, ``id``, ``model``, ``finish_reason``,
        ``usage``)."""
        await self.end_all()
        t = self.turn
        t.text, t.reasoning = "".join(self._text), "".join(self._reasoning)
        if meta:
            info = {"provider": provider, "id": t.id, "model": t.model}
            await self.out.metadata(info, finish_reason=t.finish_reason, usage=t.usage)
        t.parts = self.out.parts[self._first :]
        return t


async def events(stream: AsyncIterable[Any], stall_timeout: float | None) -> AsyncIterator[Any]:
    """The stream's events; :class:`TimeoutError` when none comes for ``stall_timeout`` s.

    Only the time spent waiting for the provider counts, never the time the caller
    takes between events. One timer per stream, re-armed lazily (a timeout scope per
    event doubled the cost of forwarding an event).
    """
    if stall_timeout is None:
        async for ev in stream:
            yield ev
        return
    if stall_timeout <= 0:
        raise ConfigError(f"stall_timeout must be positive, not {stall_timeout!r}")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside a task
        raise RuntimeError("events() must run in a task")
    limit = stall_timeout
    since: float | None = None  # when the current wait for an event began
    stalled = False
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal handle, stalled
        handle = None
        if since is None:
            return  # not waiting: the next wait arms the timer again
        due = since + limit
        if loop.time() >= due:
            stalled = True
            task.cancel()
        else:
            handle = loop.call_at(due, check)

    it = aiter(stream)
    try:
        while True:
            since = loop.time()
            if handle is None:
                handle = loop.call_at(since + limit, check)
            try:
                ev = await anext(it)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if stalled and task.uncancel() == 0:
                    raise TimeoutError(
                        f"provider stream stalled: no event for {limit:g}s"
                    ) from None
                raise
            finally:
                since = None
            yield ev
    finally:
        if handle is not None:
            handle.cancel()


async def close_quietly(stream: object) -> None:
    """Close the SDK stream (releases its HTTP connection); never raises."""
    for name in ("close", "aclose"):
        fn = getattr(stream, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            return


def failure_text(exc: BaseException, out: Output) -> str:
    """The error a failed turn ends its open parts with: a stall says so; a provider's
    error goes through the app's redaction hook (``out.redact``: by default its type
    only, the message stays in the server log), as a failed run's does."""
    if isinstance(exc, TimeoutError) and str(exc).startswith("provider stream stalled"):
        return str(exc)
    return f"provider stream failed: {out.redact(exc)}"
