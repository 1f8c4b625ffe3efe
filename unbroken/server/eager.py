"""Run a coroutine eagerly: up to its first real wait, in the caller's stack.

A WebSocket send (uvicorn's ASGI ``send``, Starlette's ``send``) almost never waits:
it frames the message and writes it to the socket's buffer. Giving every such send a
task and a trip through the event loop would cost more than the send itself, on every
token. :func:`start` runs the coroutine at once; only if it suspends (the socket's
buffer is full: backpressure) does a task take over from where it stopped. Python
3.12 calls this an eager task; this is the same idea for 3.11, without a task when
none is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` until it finishes or first suspends.

    Returns ``None`` when it finished, or a future (a task) that completes when the
    rest of it does. An exception raised before the first suspension propagates
    here, at once.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    task = asyncio.ensure_future(_Rest(coro, yielded))
    # a task cancelled before its first step never reaches the coroutine: close it
    # then (its ``finally`` blocks run); after it ended, close() does nothing
    task.add_done_callback(lambda _task: coro.close())
    return task


def run_now(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run ``coro`` until it finishes or first suspends: ``(True, its result)``, or
    ``(False, an awaitable of the rest)`` (await it from a task; its value is the
    coroutine's). An exception raised before the first suspension propagates here."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    except BaseException:
        coro.close()
        raise
    return False, _Rest(coro, yielded)


class _Rest:
    """The rest of a coroutine that suspended on ``yielded``, as an awaitable."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, thrown into the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
