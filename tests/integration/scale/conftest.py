"""Served processes for the scale tests: ``unbroken serve`` (one process or
several workers), a private redis-server, and checks that an answer is exact."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from unbroken import BackoffPolicy
from unbroken.client import Stream
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Kind, chunk, end, part_end, part_start

from ..redis.conftest import NO_REDIS, REDIS, RedisServer
from ..server.process import Process

ROOT = Path(__file__).resolve().parents[3]
UNBROKEN = Path(sys.executable).with_name("unbroken")
#: reconnect fast and for long: nodes come and go in these tests
FAST = BackoffPolicy(base=0.02, cap=0.25, max_attempts=400, deadline=60)


def expected_text(n: int) -> str:
    return "".join(f"tok{i:06d} " for i in range(n))


def full_digest(stream: str, epoch: str, n: int) -> str:
    """The end digest of a completed ``count`` answer of ``n`` tokens."""
    evs = [part_start(1, "text", "text", mime="text/plain")]
    evs += [chunk(i + 2, Kind.TEXT, "text", f"tok{i:06d} ") for i in range(n)]
    evs.append(part_end(n + 2, "text"))
    evs.append(end(n + 3, "completed"))
    return chain(stream, epoch, evs)[-1].hex()


async def until_seq(st: Stream, seq: int) -> None:
    """Consume the stream until its cursor reaches ``seq``."""
    async for _ in st:
        cur = st.cursor
        if cur is not None and cur.seq >= seq:
            return


class Served:
    """``unbroken serve TARGET --port 0 ARGS`` as a real process; its log read as
    it comes (every worker writes to the same stderr, each line tagged)."""

    def __init__(self, p: Process, url: str) -> None:
        self.p = p
        self.url = url
        self.port = int(url.split(":")[2].split("/")[0])

    @classmethod
    async def start(
        cls, target: str, *args: str, env: dict[str, str] | None = None, workers: int = 1
    ) -> Served:
        proc = await asyncio.create_subprocess_exec(
            str(UNBROKEN),
            "serve",
            target,
            "--port",
            "0",
            "--workers",
            str(workers),
            *args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        p = Process(proc)
        try:
            m = await p.wait_line(r"serving \S+ on (ws://\S+)", 30)
            for w in range(1, workers + 1):
                tag = rf"\[w{w} pid=\d+\] " if workers > 1 else ""
                await p.wait_line(tag + "Application startup complete", 30)
        except BaseException:
            await p.stop()
            raise
        return cls(p, m.group(1))

    @property
    def pid(self) -> int:
        return self.p.proc.pid

    @property
    def log(self) -> str:
        return "\n".join(self.p.lines)

    def workers(self) -> dict[int, int]:
        """Worker index → pid of the workers started so far (the latest per index)."""
        found: dict[int, int] = {}
        for line in self.p.lines:
            if m := re.search(r"worker (\d+) started pid=(\d+)", line):
                found[int(m.group(1))] = int(m.group(2))
        return found

    def where(self, what: str, stream: str) -> int:
        """The pid of the worker that logged ``what`` (start, resume) for ``stream``."""
        for line in self.p.lines:
            if f"{what} conn=" in line and f"stream={stream}" in line:
                m = re.search(r"\[w\d+ pid=(\d+)\]", line)
                assert m, line
                return int(m.group(1))
        raise AssertionError(f"no {what} of {stream} in the log:\n{self.log[-3000:]}")

    def signal(self, sig: int) -> None:
        if self.p.proc.returncode is None:
            os.kill(self.pid, sig)

    async def wait(self, limit: float = 30) -> int:
        return await asyncio.wait_for(self.p.proc.wait(), limit)

    async def stop(self) -> None:
        """Kill the process and, with workers, every worker it forked."""
        pids = list(self.workers().values())
        await self.p.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def served() -> AsyncIterator[list[Served]]:
    """Processes started by a test (append to it); each is killed afterwards."""
    started: list[Served] = []
    yield started
    for s in started:
        await s.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    if REDIS is None:
        pytest.skip(NO_REDIS)
    srv = RedisServer(tmp_path)
    srv.start()
    yield srv
    srv.stop(signal.SIGKILL)
