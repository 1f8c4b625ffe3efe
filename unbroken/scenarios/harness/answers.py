"""The answering agent: an app whose agent ``answer`` replays a generated answer
(:mod:`unbroken.chaos.generators`) at a pace."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...chaos import GeneratedAnswer
from ...server import Output, Request, Unbroken
from ...store.base import Retention
from ...store.memory import MemoryStore


def store_class() -> type[MemoryStore]:
    """The class the test app's stream log is made from: :class:`MemoryStore`, unless a
    plugin swapped ``unbroken.scenarios.harness.MemoryStore`` (the Redis scenario plugin,
    ``tests/integration/redis/scenario_plugin.py``, runs the scenarios on RedisStore so).

    Read from the package at call time, not imported: the package re-exports this module."""
    package = sys.modules.get(__package__ or "")
    found = getattr(package, "MemoryStore", MemoryStore)
    assert isinstance(found, type)
    return found


class Hold:
    """Where the ``answer`` agent stops (before writing event ``index``) until the run
    lets it go: a faulty run's timing point, so the fault is played before the answer
    can end (the agent never outruns the cut). Thread-safe: the agent runs on the
    server's thread, the run on its own."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.reached: concurrent.futures.Future[None] = concurrent.futures.Future()
        """Done when the agent got to ``index`` (and waits there)."""
        self._release: concurrent.futures.Future[None] = concurrent.futures.Future()

    def release(self) -> None:
        """Let the agent go on (idempotent)."""
        if not self._release.done():
            self._release.set_result(None)

    @property
    def released(self) -> bool:
        return self._release.done()

    async def wait(self) -> None:
        """The agent's side: say it got here, then wait to be released."""
        if not self.reached.done():
            self.reached.set_result(None)
        await asyncio.wrap_future(self._release)


@dataclass
class AnswerBook:
    """Answers the ``answer`` agent can replay, by key, with the seconds to take."""

    answers: dict[str, GeneratedAnswer] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ticks: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    holds: dict[str, Hold] = field(default_factory=dict)

    def add(
        self,
        answer: GeneratedAnswer,
        seconds: float = 0.0,
        key: str | None = None,
        *,
        tick: float = 0.01,
        hold: Hold | None = None,
    ) -> str:
        """Register ``answer``, to be written over ``seconds`` in bursts ``tick`` seconds
        apart (stopping at ``hold`` until it is released); returns the key to pass as
        ``{"answer": key}``."""
        key = key or f"a{len(self.answers)}"
        self.answers[key] = answer
        self.seconds[key] = seconds
        self.ticks[key] = tick
        if hold is not None:
            self.holds[key] = hold
        return key


def answer_app(
    book: AnswerBook,
    *,
    heartbeat: float = 0.25,
    retention: Retention | None = None,
    **options: Any,
) -> Unbroken:
    """An :class:`Unbroken` app with one agent, ``answer``: it replays
    ``book.answers[input["answer"]]`` over ``book.seconds[...]`` seconds (paced against the
    clock, in bursts ``book.ticks[...]`` seconds apart), waits at ``book.holds[...]`` if
    any, and counts its calls in ``book.calls``."""
    store = store_class()(
        retention or Retention(max_stream_bytes=256 * 1024 * 1024, max_total_bytes=2**32)
    )
    options.setdefault("shutdown_grace", 1.0)
    app = Unbroken(store=store, allow_anonymous=True, heartbeat=heartbeat, **options)

    @app.agent("answer")
    async def answer(req: Request, out: Output) -> None:
        key = str(req.input["answer"])
        book.calls[key] += 1
        events = book.answers[key].events
        seconds = book.seconds.get(key, 0.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = len(events)
        tick = book.ticks.get(key, 0.01)
        burst = max(1, math.ceil(n * tick / seconds)) if seconds > 0 else n + 1
        hold = book.holds.get(key)
        for i, ev in enumerate(events):
            if hold is not None and i == hold.index:
                held = loop.time()
                await hold.wait()
                t0 += loop.time() - held  # then on at its pace, not in a catch-up burst
            await out.emit(ev)
            if i % burst == burst - 1:
                # the agent's pace (against the clock, so slow ticks do not stretch it)
                await asyncio.sleep(max(0.0, t0 + (i + 1) / n * seconds - loop.time()))

    return app
