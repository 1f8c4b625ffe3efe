"""What every adapter shares: the turn summary, part naming, and failing loudly."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..errors import ConfigError, PartError
from ..server.agent import Output

#: Characters a part id may not hold (docs/reference/protocol.md: ``[A-Za-z0-9_.:-]{1,64}``).
_BAD_ID: Final = re.compile(r"[^A-Za-z0-9_.:\-]")

#: mime types of the parts adapters write (the part kind alone cannot tell them apart)
TEXT_MIME: Final = "text/plain"
REASONING_MIME: Final = "text/plain; role=reasoning"
META_MIME: Final = "application/json; role=meta"


def tool_mime(name: str) -> str:
    """The mime type of a tool call's arguments part: the tool's name as a parameter."""
    return f'application/json; tool="{_BAD_ID.sub("_", name)[:256]}"'


def result_mime(name: str) -> str:
    """The mime type of a tool result part (agent frameworks that run the tools)."""
    return f"application/json; role=tool-result; {tool_mime(name).split('; ', 1)[1]}"


def missing_sdk(module: str, extra: str) -> ConfigError:
    """The error raised when an adapter's SDK (the package ``module``) is not installed."""
    return ConfigError(
        f"unbroken.adapters.{module} needs the {module!r} package: pip install 'unbroken[{extra}]'"
    )


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made; its arguments streamed into JSON part ``part``."""

    id: str
    name: str
    arguments: str = ""
    part: str = ""

    @property
    def input(self) -> Any:
        """The arguments, parsed (``{}`` when the model sent none)."""
        return json.loads(self.arguments) if self.arguments.strip() else {}


@dataclass(slots=True)
class Turn:
    """One model call, as forwarded: what the agent needs for its next step.

    ``finish_reason`` and ``usage`` are the provider's own values (``stop``,
    ``tool_calls``, ``end_turn``, ``tool_use``, ``completed``…; token counts as the
    provider names them). ``output`` is what to send back to the provider with the
    tool results (Responses output items, an assistant message, Anthropic content
    blocks), as plain dicts. ``parts`` lists the part ids written, in order.
    ``result``: the SDK's own final result when it has one (pydantic-ai's
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


Role = Literal["text", "reasoning", "tool", "meta"]


class Writer:
    """Opens, feeds and ends the parts of one turn.

    Parts are addressed by a key of the adapter's choosing (a content block index,
    an item id); each gets a part id from a wanted name made unique within the
    answer (``text``, then ``text-2`` for the next turn, …), so the turns of an
    agent loop, and retries, share one answer without clashes.
    """

    def __init__(self, out: Output, turn: Turn) -> None:
        self.out = out
        self.turn = turn
        self._parts: dict[object, tuple[str, Role]] = {}
        self._open: list[object] = []
        # what was written, joined once at the end (``+=`` on a str is quadratic)
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._args: dict[object, list[str]] = {}
        self._calls: dict[object, ToolCall] = {}

    def part(self, key: object) -> str | None:
        """The part id of ``key`` if it was opened."""
        found = self._parts.get(key)
        return found[0] if found else None

    def is_open(self, key: object) -> bool:
        return key in self._open

    async def open(self, key: object, want: str, role: Role, mime: str) -> str:
        """Open the part for ``key`` (once); returns its id."""
        found = self._parts.get(key)
        if found is not None:
            return found[0]
        kind: Literal["text", "json"] = "json" if role in ("tool", "meta") else "text"
        base = part_id(want)
        for n in range(1, 10_000):
            pid = base if n == 1 else _suffixed(base, n)
            try:
                await self.out.start_part(pid, kind, mime=mime)
            except PartError as exc:
                if "already started" in str(exc):
                    continue
                raise
            self._parts[key] = (pid, role)
            self._open.append(key)
            self.turn.parts.append(pid)
            return pid
        raise PartError(f"no free part id for {want!r}")  # pragma: no cover

    async def write(self, key: object, body: str) -> None:
        """Append to ``key``'s open part (no-op for an empty body)."""
        if not body:
            return
        pid, role = self._parts[key]
        if role in ("tool", "meta"):
            await self.out.chunk(pid, body)
        else:
            await self.out.text(body, pid)

    async def text(self, key: object, want: str, delta: str, role: Role = "text") -> None:
        """Write a text (or reasoning) delta, opening its part on first use."""
        if not delta:
            return
        if key in self._parts and key not in self._open:
            del self._parts[key]  # ended already: a late delta opens a new part (``-2``)
        if key not in self._parts:
            await self.open(key, want, role, REASONING_MIME if role == "reasoning" else TEXT_MIME)
        await self.write(key, delta)
        if role == "reasoning":
            self._reasoning.append(delta)
        elif role == "text":
            self._text.append(delta)

    async def call(self, key: object, want: str, call: ToolCall) -> None:
        """Open the JSON part of a tool call (its arguments follow with :meth:`args`)."""
        call.part = await self.open(key, want, "tool", tool_mime(call.name))
        self._args[key] = []
        self._calls[key] = call
        self.turn.tool_calls.append(call)

    async def args(self, key: object, fragment: str) -> None:
        """Stream a fragment of a tool call's arguments."""
        if fragment and key in self._args:
            self._args[key].append(fragment)
            await self.write(key, fragment)

    def streamed(self, key: object) -> bool:
        """Whether any argument fragment of ``key``'s call was written."""
        return bool(self._args.get(key))

    async def end_call(self, key: object, call: ToolCall, whole: str = "") -> str:
        """End a tool call's part; ``whole``: its arguments, written if none streamed
        (providers that send them in one piece at the end)."""
        if not self.streamed(key) and whole:
            await self.args(key, whole)
        call.arguments = "".join(self._args.get(key, ()))
        return await self.end(key)

    def finish(self) -> None:
        """Fill the turn's ``text`` and ``reasoning`` from what was written."""
        self.turn.text = "".join(self._text)
        self.turn.reasoning = "".join(self._reasoning)

    async def end(self, key: object, error: str = "") -> str:
        """End ``key``'s part if it is open; returns its error (JSON checked at the end)."""
        if key not in self._open:
            return ""
        self._open.remove(key)
        return await self.out.end_part(self._parts[key][0], error)

    async def end_all(self, error: str = "") -> None:
        for key in list(self._open):
            await self.end(key, error)
        for key, call in self._calls.items():
            call.arguments = "".join(self._args[key])

    async def meta(self, provider: str) -> None:
        """The turn's closing ``meta`` part: id, model, finish reason and usage.

        The stream's ``end`` event has no room for them (its status and error only),
        so they travel as a small JSON part of their own.
        """
        t = self.turn
        body = {
            "provider": provider,
            "id": t.id,
            "model": t.model,
            "finish_reason": t.finish_reason,
            "usage": t.usage,
            "tool_calls": [{"id": c.id, "name": c.name, "part": c.part} for c in t.tool_calls],
        }
        key = ("meta",)
        await self.open(key, "meta", "meta", META_MIME)
        await self.write(key, json.dumps(body, separators=(",", ":"), default=str))
        await self.end(key)


def part_id(want: str) -> str:
    """A valid part id from any name: bad characters replaced, long names shortened
    with a hash so that two long ids stay apart."""
    clean = _BAD_ID.sub("_", want) or "part"
    if len(clean) <= 56:
        return clean
    digest = hashlib.blake2b(want.encode(), digest_size=4).hexdigest()
    return f"{clean[:47]}-{digest}"


def _suffixed(base: str, n: int) -> str:
    tail = f"-{n}"
    return base[: 64 - len(tail)] + tail


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
