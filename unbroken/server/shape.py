"""What an agent and an ``authenticate`` hook must look like.

Checked when they are registered (:func:`check_callable`: a function, not a
generator, that takes two arguments) and, for what no signature tells (a
``lambda`` or a ``functools.wraps`` wrapper may return a coroutine), when they
are called (:func:`not_awaitable`)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import AuthError, ConfigError
from ..protocol.frames import excerpt

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: the right shapes, shown in every error about a wrong one
HOOK_SHAPE = "write it as `async def authenticate(hello, info) -> Principal`"
HOOK_ARGS = "the hello frame (its token: hello.token) and the connection's info"


def agent_shape(fn: object) -> str:
    """The right shape of the agent ``fn``, by its name."""
    return f"write it as `async def {getattr(fn, '__name__', 'agent')}(req, out):`"


def check_callable(fn: object, what: str, called_with: str, shape: str, writes: str = "") -> None:
    """Raise :class:`ConfigError` unless ``fn`` can be called with two positional
    arguments and is not a generator function. ``what`` names it in the message
    (``agent 'x'``, ``the authenticate hook``); ``writes`` ends the sentence
    about a generator (what to do instead of ``yield``)."""
    if not callable(fn):
        raise ConfigError(f"{what} is {type(fn).__name__}, not a function; {shape}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(f"{what} is a generator: it does not yield{writes}; {shape}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an object without one: call it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise ConfigError(
            f"{what} takes ({', '.join(signature.parameters)}), but it is called with two "
            f"arguments, {called_with}; {shape}"
        ) from None


def not_awaitable(what: str, result: object, shape: str) -> str:
    """What to say when ``what`` returned ``result``, which cannot be awaited:
    a plain (sync) function, or a wrapper that does not return the coroutine."""
    return (
        f"{what} returned {excerpt(repr(result), 80)}, not an awaitable: it is a plain "
        f"(sync) function, or a wrapper that does not return the coroutine; {shape}"
    )


async def call_hook(hook: Callable[..., Awaitable[_T]], *args: object) -> _T:
    """Call the ``authenticate`` hook and await its answer; one that cannot be
    awaited (a plain ``def``) refuses the connection (:class:`AuthError`, close
    4002) and the log says why."""
    result = hook(*args)
    if not inspect.isawaitable(result):
        log.error(
            "%s; connection refused", not_awaitable("the authenticate hook", result, HOOK_SHAPE)
        )
        raise AuthError("credentials refused (the server's authenticate hook is not async)")
    return await result
