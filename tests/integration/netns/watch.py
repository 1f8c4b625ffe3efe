"""A client stream under test: consumed in the background, its connection events kept,
and conditions to wait on (never a sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from unbroken.chaos.kernel.app import AnswerSpec, exactness
from unbroken.client import Answer, Client, ConnectionEvent, Stream


class Watch:
    """Pass :meth:`on_event` to the :class:`Client`, then :meth:`consume` its stream."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self.seq = 0
        self.received_bytes = 0
        self.started = time.monotonic()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stream: Stream | None = None

    def on_event(self, ev: ConnectionEvent) -> None:
        self.events.append(ev)
        self._changed.set()

    def consume(self, stream: Stream) -> None:
        self.stream = stream
        self._task = asyncio.get_running_loop().create_task(self._consume(stream))

    async def _consume(self, stream: Stream) -> None:
        with contextlib.suppress(Exception):  # the error is read back from stream.wait()
            async for ev in stream:
                self.seq = ev.seq
                self.received_bytes += len(str(getattr(ev, "text", "")))
                self._changed.set()
        self._changed.set()

    async def until(self, check: Callable[[], bool], limit: float, what: str) -> None:
        """Wait until ``check()`` holds (re-checked on every event), at most ``limit`` s."""
        try:
            async with asyncio.timeout(limit):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            kinds = [f"{e.kind}({e.cause or e.reason})" for e in self.events]
            raise AssertionError(
                f"no {what} within {limit:.0f} s; seq {self.seq}; connection events: {kinds}"
            ) from None

    async def until_seq(self, seq: int, limit: float = 15) -> None:
        await self.until(lambda: self.seq >= seq, limit, f"event seq {seq}")

    async def until_event(self, kind: str, limit: float, *, after: float = 0.0) -> ConnectionEvent:
        """The first connection event of ``kind`` at or after ``after`` (monotonic)."""
        found: list[ConnectionEvent] = []

        def check() -> bool:
            found[:] = [e for e in self.events if e.kind == kind and e.at >= after]
            return bool(found)

        await self.until(check, limit, f"{kind!r} connection event")
        return found[0]

    def kinds(self, after: float = 0.0) -> list[str]:
        return [e.kind for e in self.events if e.at >= after]

    async def answer(self, limit: float = 30) -> Answer:
        assert self.stream is not None
        answer = await asyncio.wait_for(self.stream.wait(), limit)
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)
        return answer


async def poll(check: Callable[[], bool], limit: float, what: str, every: float = 0.02) -> None:
    """Poll ``check()`` (e.g. a kernel counter, which nothing announces) every ``every`` s,
    at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {limit:.0f} s")
        await asyncio.sleep(every)


async def start(client: Client, watch: Watch, agent_input: dict[str, object]) -> Stream:
    stream = await client.start("answer", agent_input)
    watch.consume(stream)
    return stream


def assert_exact(spec: AnswerSpec, answer: Answer, epoch: str) -> None:
    problems = exactness(spec, answer, epoch)
    assert not problems, problems


def epoch_of(watch: Watch) -> str:
    assert watch.stream is not None and watch.stream.cursor is not None
    return watch.stream.cursor.epoch
