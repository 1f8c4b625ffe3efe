"""Private redis-server processes and unbroken nodes, each stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from unbroken.client import Stream
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Kind, chunk, end, part_end, part_start

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
ROOT = Path(__file__).resolve().parents[3]
NO_REDIS = "redis-server not installed: apt-get update && apt-get install -y redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_text(n: int) -> str:
    """The text of a completed ``count`` answer of ``n`` tokens."""
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


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> None:
    """Read the process's output until a line contains ``needle`` (or fail)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return
    raise RuntimeError(f"{needle!r} not seen; output:\n{''.join(seen)[-3000:]}")


class RedisServer:
    """One private redis-server on a free port, data in ``dir``."""

    def __init__(self, dir: Path, *, aof: bool = False, cluster: bool = False) -> None:
        assert REDIS is not None
        self.dir = dir
        self.aof = aof
        self.cluster = cluster
        self.bus_port = free_port() if cluster else 0
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", "", "--daemonize", "no", "--loglevel", "notice"]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster:  # its node table in its own dir: a restart keeps its slots
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
            ]
            # the bus on a free port of its own (not port + 10000, maybe taken or > 65535)
            args += ["--cluster-port", str(self.bus_port)]
            # a master down (a test kills one) leaves the others serving their slots
            args += ["--cluster-require-full-coverage", "no"]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        _wait_line(self.proc, "Ready to accept connections", 15)
        # keep draining its output so it never blocks on a full pipe
        subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(15)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip(NO_REDIS)
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (restart it, flush it, kill it)."""
    if REDIS is None:
        pytest.skip(NO_REDIS)
    srv = RedisServer(tmp_path)
    yield srv
    srv.stop(signal.SIGKILL)


#: node logs live outside the checkout (a fresh clone has no .pytest_cache yet)
NODE_LOGS = Path(tempfile.gettempdir()) / f"unbroken-redis-nodes-{os.getpid()}"


class Node:
    """``unbroken serve examples.redis_app:app`` (or ``app``) in a process of its own."""

    def __init__(
        self,
        redis_url: str,
        *,
        lease: float = 5.0,
        prefix: str = "unbroken",
        cluster: bool = False,
        outage_timeout: float = 30.0,
        app: str = "examples.redis_app:app",
    ) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            UNBROKEN_REDIS_CLUSTER="1" if cluster else "",
            UNBROKEN_REDIS_URL=redis_url,
            UNBROKEN_REDIS_LEASE=str(lease),
            UNBROKEN_REDIS_PREFIX=prefix,
            UNBROKEN_REDIS_OUTAGE_TIMEOUT=str(outage_timeout),
            PYTHONPATH=str(ROOT),
        )
        NODE_LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = NODE_LOGS / f"node-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("unbroken")),
                "serve",
                app,
                "--port",
                str(self.port),
                "--log-level",
                "info",
                "--timeout-graceful-shutdown",
                "20",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:  # wait for the socket, with a deadline
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node did not start: {self.output()}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
        self.log.close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    """Nodes started by a test (append to it); each is killed by pid afterwards."""
    started: list[Node] = []
    yield started
    for n in started:
        n.stop()


class RedisCluster:
    """A private Redis Cluster: ``masters`` redis-servers (cluster mode, no replicas)
    on free ports, data under ``dir``, the slots spread by ``redis-cli --cluster create``."""

    def __init__(self, dir: Path, masters: int = 3) -> None:
        self.dir = dir
        self.servers: list[RedisServer] = []
        for i in range(masters):
            d = dir / f"m{i}"
            d.mkdir()
            self.servers.append(RedisServer(d, cluster=True))

    @property
    def url(self) -> str:
        """A seed URL (any master: the client discovers the others)."""
        return self.servers[0].url

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def cli(self, *args: str, timeout: float = 60) -> str:
        """``redis-cli`` with ``args``; its output (raises on a non-zero exit)."""
        assert REDIS_CLI is not None
        done = subprocess.run(
            [REDIS_CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        for s in self.servers:
            s.start()
        self.cli("--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every master reports ``cluster_state:ok`` and agrees on the slots."""
        deadline = time.monotonic() + timeout
        while True:
            infos = [self.cli("-p", str(s.port), "cluster", "info") for s in self.servers]
            if all("cluster_state:ok" in i and "cluster_slots_ok:16384" in i for i in infos):
                try:
                    self.cli("--cluster", "check", self.addresses[0])
                    return
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok: {infos}")
            time.sleep(0.1)

    def owner(self, slot: int) -> int:
        """Index in :attr:`servers` of the master serving ``slot`` (asked of a live one)."""
        alive = next(s for s in self.servers if s.proc is not None)
        for line in self.cli("-p", str(alive.port), "cluster", "nodes").splitlines():
            f = line.split()
            if "fail" in f[2] or "master" not in f[2]:
                continue
            port = int(f[1].split("@")[0].split(":")[1])
            for r in f[8:]:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return next(i for i, s in enumerate(self.servers) if s.port == port)
        raise LookupError(slot)

    def node_id(self, index: int) -> str:
        return self.cli("-p", str(self.servers[index].port), "cluster", "myid").strip()

    def stop(self) -> None:
        for s in self.servers:
            s.stop(signal.SIGKILL)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters of this test's own (each redis-server stopped by pid)."""
    if REDIS is None or REDIS_CLI is None:
        pytest.skip(NO_REDIS)
    cluster = RedisCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
