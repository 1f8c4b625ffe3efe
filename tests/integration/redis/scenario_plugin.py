"""Run the scenario suite (tests/scenarios) with RedisStore instead of MemoryStore.

The scenario harness builds its own ``MemoryStore``; this pytest plugin swaps in a
RedisStore on a private redis-server without touching the harness::

    .venv/bin/pytest -p tests.integration.redis.scenario_plugin tests/scenarios/test_quick_tier.py

The server runs on a thread of its own while the checks read the log from the test's
loop: calls from another loop are forwarded to the store's loop.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import signal
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from unbroken.scenarios import harness
from unbroken.store.base import Retention
from unbroken.store.redis import RedisStore

from .conftest import RedisServer

_URL: list[str] = []


def _forward(
    name: str,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    method = getattr(RedisStore, name)

    @functools.wraps(method)
    async def call(self: ScenarioRedisStore, *args: Any) -> Any:
        home = self._home
        loop = asyncio.get_running_loop()
        if home is None:
            self._home = loop
        elif home is not loop and not home.is_closed():
            fut = asyncio.run_coroutine_threadsafe(method(self, *args), home)
            return await asyncio.wrap_future(fut)
        return await method(self, *args)

    return call


class ScenarioRedisStore(RedisStore):
    """A RedisStore shaped as the harness expects (``MemoryStore(retention)``)."""

    total_bytes = 0

    def __init__(self, retention: Retention | None = None) -> None:
        super().__init__(_URL[0], retention=retention, prefix=f"sc{secrets.token_hex(4)}")
        self._home: asyncio.AbstractEventLoop | None = None

    for _name in (
        "create",
        "append",
        "finish",
        "read",
        "meta",
        "tombstone",
        "digest_at",
        "sweep",
        "read_all",
        "read_digests",
        "close",
    ):
        locals()[_name] = _forward(_name)


@pytest.fixture(scope="session", autouse=True)
def _redis_for_scenarios() -> Iterator[None]:
    srv = RedisServer(Path(tempfile.mkdtemp(prefix="unbroken-scenarios-redis-")))
    srv.start()
    _URL.append(srv.url)
    mp = pytest.MonkeyPatch()
    mp.setattr(harness, "MemoryStore", ScenarioRedisStore)
    yield
    mp.undo()
    srv.stop(signal.SIGTERM)
