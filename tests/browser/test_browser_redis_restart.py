"""A server restart mid-answer on a Redis log (issue 14): the page is half-way
through a 1.1 MB answer the agent has written to Redis when its server shuts down
(close 1012); a new server on the same port and the same Redis serves the rest.
The page resumes from its cursor and ends exact; the agent ran once."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unbroken.chaos import Bandwidth, FaultProxy
from unbroken.store.redis import RedisStore
from unbroken.testing import serve

from .conftest import Rig, _Site, mixed_app
from .test_browser_faults import SIZE, _finish, assert_exact, disconnects

# on the run's event loop, with its browser (conftest.py)
pytestmark = pytest.mark.asyncio(loop_scope="session")

REDIS = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server (stopped by its pid)."""
    if REDIS is None:
        pytest.skip("redis-server not installed: apt-get install -y redis-server")
    port = _free_port()
    args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # (it prints this line once it listens)
        if "Ready to accept connections" in line:
            break
    else:
        pytest.fail("redis-server did not start")
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(15)
        drain.wait(15)


async def _until_completed(store: RedisStore, stream: str) -> None:
    """The agent's whole answer is in the log (it wrote at full speed; the page
    reads it through a slow link)."""
    changed = asyncio.Event()
    unsubscribe = store.subscribe(stream, lambda _stream, _head: changed.set())
    try:
        async with asyncio.timeout(20):
            while True:
                changed.clear()
                meta = await store.meta(stream)
                if meta is not None and meta.status == "completed":
                    return
                await changed.wait()  # the log's next change (its end among them)
    finally:
        unsubscribe()


async def test_a_server_restart_on_redis_mid_answer_is_resumed_exactly(
    redis_url: str, browser: Any
) -> None:
    calls: dict[str, int] = {}
    first = mixed_app(calls, store=RedisStore(redis_url))
    running = serve(_Site(first), path="/ws")
    server = await running.__aenter__()
    port = server.port
    try:
        async with FaultProxy(("127.0.0.1", port)) as proxy:
            proxy.add_toxic(Bandwidth(rate=300_000))  # ~4.5 s for the answer
            rig = Rig(first, server, proxy, calls)
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(rig.url(SIZE))
            await page.wait_for_function(f"window.log.received > {SIZE // 12 // 3}", polling=10)
            stream = await page.evaluate("window.log.streamId")
            assert isinstance(first.store, RedisStore)
            await _until_completed(first.store, stream)
            done = await page.evaluate("window.log.done")
            assert done is False, "the restart must come mid-answer"
            # the server goes (draining: close 1012), a new one comes on the same port
            await running.__aexit__(None, None, None)
            running = None
            second = mixed_app(calls, store=RedisStore(redis_url))
            async with serve(_Site(second), path="/ws", port=port) as again:
                log = await _finish(page)
                lost = disconnects(log)
                # the server went: its close 1012, or a drop when the close frame was
                # still queued behind the slow link as the server closed the socket
                assert lost and lost[0]["code"] in (1012, None), lost
                assert log["fromSeq"] == 0
                await assert_exact(Rig(second, again, proxy, calls), log, runs=1)
    finally:
        if running is not None:
            await running.__aexit__(None, None, None)
