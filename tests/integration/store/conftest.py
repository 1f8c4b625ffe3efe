"""Both StreamLog backends behind one fixture: the conformance suite runs against each.

The Redis one is a private redis-server the test session starts itself (the
``redis_server`` fixture of ``tests/integration/redis``), one key prefix per log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from unbroken.store.base import Retention, StreamLog
from unbroken.store.memory import MemoryStore
from unbroken.store.redis import RedisStore

from ..redis.conftest import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture: imported for the backends below

#: Builds a new, empty log (with these retention limits, if given).
MakeLog = Callable[..., StreamLog]


@pytest.fixture(scope="session", params=["memory", "redis"])
def make_log(request: pytest.FixtureRequest) -> Iterator[MakeLog]:
    """A factory of empty logs of one backend: each call a log of its own."""
    if request.param == "memory":

        def memory(retention: Retention | None = None) -> StreamLog:
            return MemoryStore(retention)

        yield memory
        return
    server: RedisServer = request.getfixturevalue("redis_server")

    def redis(retention: Retention | None = None) -> StreamLog:
        return RedisStore(server.url, prefix=f"c{secrets.token_hex(6)}", retention=retention)

    yield redis
