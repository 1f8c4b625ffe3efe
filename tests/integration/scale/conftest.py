"""Served processes for the scale tests: ``unbroken serve`` (one process or
several workers), a private redis-server, and checks that an answer is exact."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from unbroken import BackoffPolicy, StreamFailed
from unbroken.client import Client, Stream

from ..redis.conftest import (
    NO_REDIS,
    REDIS,
    RedisServer,
    expected_text,
    free_port,
    full_digest,
    until_seq,
)
from ..server.process import Process

ROOT = Path(__file__).resolve().parents[3]
UNBROKEN = Path(sys.executable).with_name("unbroken")
#: reconnect fast and for long: nodes come and go in these tests
FAST = BackoffPolicy(base=0.02, cap=0.25, max_attempts=400, deadline=60)


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

    async def where(self, what: str, stream: str) -> int:
        """The pid of the worker that logged ``what`` (start, resume) for ``stream``."""
        m = await self.p.wait_line(rf"\[w\d+ pid=(\d+)\] .*{what} conn=\S+ .*stream={stream}")
        return int(m.group(1))

    def signal(self, sig: int) -> None:
        if self.p.proc.returncode is None:
            os.kill(self.pid, sig)

    async def wait(self, limit: float = 30) -> int:
        return await asyncio.wait_for(self.p.proc.wait(), limit)

    async def stop(self) -> None:
        """Kill the process and, with workers, every worker it forked."""
        pids = list(self.workers().values())
        proc = self.p.proc
        if proc.returncode is None:
            proc.kill()
        # the workers too, before waiting: a dead parent sends them SIGTERM, a drain
        # that lets their runs finish within the grace, and they hold the parent's
        # stderr pipe meanwhile, which asyncio's wait() waits to see closed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        # the workers share the parent's stderr: read it to its end (the pipe closes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.p._reader, 10)


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


def redis_env(redis: RedisServer, *, lease: float = 5.0, prefix: str = "scale") -> dict[str, str]:
    """The environment of ``examples.redis_app`` on ``redis``."""
    return {
        "UNBROKEN_REDIS_URL": redis.url,
        "UNBROKEN_REDIS_LEASE": str(lease),
        "UNBROKEN_REDIS_PREFIX": prefix,
    }


class Follower:
    """A stream started on one connection (read to seq 1, then closed) and
    followed on a client of its own: the resume lands wherever ``urls`` lead."""

    def __init__(self, client: Client, stream: Stream, n: int) -> None:
        self.client = client
        self.stream = stream
        self.n = n
        self.mark = 0
        #: set once the cursor reaches ``mark`` or the stream ends
        self.at_mark = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            with contextlib.suppress(StreamFailed):
                async for _ in self.stream:
                    if self.mark and self.seq >= self.mark:
                        self.at_mark.set()
        finally:
            self.at_mark.set()

    @classmethod
    async def begin(
        cls, start_urls: list[str], follow_urls: list[str], n: int, pause: float
    ) -> Follower:
        async with Client(start_urls, policy=FAST) as starter:
            st0 = await starter.start("count", {"n": n, "every": 50, "pause": pause})
            await until_seq(st0, 1)
            cursor = st0.cursor
        assert cursor is not None
        client = Client(follow_urls, policy=FAST)
        await client.__aenter__()
        return cls(client, await client.resume(cursor), n)

    @property
    def seq(self) -> int:
        cur = self.stream.cursor
        return 0 if cur is None else cur.seq

    def heard(self, code: int) -> bool:
        """Whether the client's connection was closed with ``code`` at some point."""
        return any(e.kind == "disconnected" and e.code == code for e in self.client.history)

    async def settle(self) -> str:
        """Wait for the end; assert the answer is exact. ``completed``: every token,
        the right end digest. ``producer_lost``: the run's process died; what
        arrived is an exact prefix (each frame's digest verified by the client)."""
        await asyncio.wait_for(self.task, 60)
        st = self.stream
        try:
            answer = await st.wait()
        except StreamFailed as exc:
            assert exc.error == "producer_lost", exc
            text = st.result.text
            assert text and expected_text(self.n).startswith(text), text[-80:]
            return "producer_lost"
        finally:
            await self.client.close()
        assert answer.status == "completed"
        assert answer.text == expected_text(self.n)
        assert answer.digest == full_digest(st.id, st.epoch, self.n)
        return "completed"


async def all_past(followers: list[Follower], seq: int, limit: float = 30) -> None:
    """Wait until every follower's cursor is past ``seq`` (or its stream ended)."""
    for f in followers:
        f.mark = seq
        if f.seq >= seq:
            f.at_mark.set()
    async with asyncio.timeout(limit):
        for f in followers:
            await f.at_mark.wait()


HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
NO_HAPROXY = "haproxy not installed: apt-get install -y haproxy (./dev setup installs it when root)"


def need_haproxy() -> str:
    """The haproxy binary; skip without it, except under CI=true, where it must run."""
    if HAPROXY is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {NO_HAPROXY}")
        pytest.skip(NO_HAPROXY)
    return HAPROXY


HAPROXY_CFG = """\
global
    maxconn 8000
{global_extra}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # an upgraded WebSocket is a tunnel: the in-band heartbeats keep it busy
    timeout tunnel 1h
    timeout client-fin 5s
    # a node that refuses (killed, draining) costs a retry elsewhere, not an error
    option redispatch 1
    retries 3

frontend unbroken
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server {checks}
{servers}
"""


class HAProxy:
    """Debian's haproxy in front of ``backends`` (round robin, no stickiness),
    its config in ``dir``; stopped by pid."""

    def __init__(
        self,
        binary: str,
        dir: Path,
        backends: list[int],
        *,
        servers: list[str] | None = None,
        checks: str = "inter 500ms fall 2 rise 2",
        admin_socket: Path | None = None,
    ) -> None:
        """``servers``: whole ``server`` lines instead of one per port in ``backends``;
        ``checks``: the health-check timing; ``admin_socket``: a stats socket at level
        admin (put servers in or out of rotation at run time)."""
        self.binary = binary
        self.port = free_port()
        lines = servers or [f"server n{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, 1)]
        extra = f"    stats socket {admin_socket} mode 600 level admin\n" if admin_socket else ""
        self.cfg = dir / "haproxy.cfg"
        self.cfg.write_text(
            HAPROXY_CFG.format(
                port=self.port,
                global_extra=extra,
                checks=checks,
                servers="\n".join(f"    {line}" for line in lines),
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _launch(self) -> None:
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.cfg)], check=False)
        assert check.returncode == 0, "haproxy rejected its config"
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._launch)
        assert self.proc is not None
        deadline = time.monotonic() + 15
        while not await asyncio.to_thread(self._healthy):  # the LB answers for a node
            assert self.proc.poll() is None, "haproxy exited"
            assert time.monotonic() < deadline, "haproxy did not come up"
            await asyncio.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: haproxy's hard stop (every connection cut at once)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            await asyncio.to_thread(self.proc.wait, 15)
        self.proc = None
