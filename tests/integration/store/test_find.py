"""``StreamLog.find``: how a start repeated while new runs are refused (admission)
is answered with its stream, on both backends."""

from __future__ import annotations

from .conftest import MakeLog


async def test_find_returns_the_stream_of_a_known_request_only(make_log: MakeLog) -> None:
    log = make_log()
    try:
        assert await log.find("alice", "r1") is None
        created = await log.create("alice", "r1", 0.0)
        found = await log.find("alice", "r1")
        assert found is not None
        assert (found.stream, found.epoch, found.created) == (created.stream, created.epoch, False)
        assert found.producer == created.producer
        # another owner, another scope or another req is not that stream
        assert await log.find("bob", "r1") is None
        assert await log.find("alice", "r1", "some-scope") is None
        assert await log.find("alice", "r2") is None
        scoped = await log.create("anonymous", "r1", 0.0, "scope-a")
        got = await log.find("anonymous", "r1", "scope-a")
        assert got is not None and got.stream == scoped.stream
        assert await log.find("anonymous", "r1", "scope-b") is None
    finally:
        await log.close()
