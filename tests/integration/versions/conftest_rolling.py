"""A fleet for the rolling-upgrade tests: three ``unbroken serve`` nodes sharing one real
redis-server, each replaced in turn by a process speaking other ``--protocols``, behind
Debian's HAProxy (round robin, health-checked, driven through its admin socket), with
the project's fault proxy in front of it all (the clients' only address: a cut there is
a real cut of every client connection). And the streams the tests follow through it,
with the checks that an answer is exact or a verified prefix.

Imported by the tests of this folder (not a conftest: the v2 suite has its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from unbroken import BackoffPolicy, UnbrokenError
from unbroken.chaos import FaultProxy
from unbroken.client import Answer, Client, ConnectionEvent, Stream
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Event, Kind, chunk, part_start

from ..redis.conftest import NO_REDIS, REDIS, RedisServer, expected_text, free_port, full_digest
from ..scale.conftest import HAProxy, need_haproxy
from ..server.process import Process

ROOT = Path(__file__).resolve().parents[3]
UNBROKEN = Path(sys.executable).with_name("unbroken")
APP = "tests.integration.versions.rolling_app:app"
#: reconnect at once and keep trying: nodes come and go
FAST = BackoffPolicy(base=0.02, cap=0.25, max_attempts=400, deadline=60)
#: one token's bytes: ``tok000000 ``
TOKEN = 10

Versions = tuple[str, ...]


class Balancer(HAProxy):
    """The scale suite's HAProxy with a server per node and generation (``n1g0``: node
    1's first process; later generations in maintenance until put in rotation), a
    health check every 200 ms and an admin socket (put a server in or out of rotation,
    ask whether it is up)."""

    def __init__(self, binary: str, dir: Path, ports: list[list[int]]) -> None:
        self.sock = dir / "haproxy.sock"
        servers = [
            f"server {server_name(i, g)} 127.0.0.1:{p} check" + (" disabled" if g else "")
            for i, gens in enumerate(ports)
            for g, p in enumerate(gens)
        ]
        super().__init__(
            binary,
            dir,
            [],
            servers=servers,
            checks="inter 200ms fall 1 rise 1",
            admin_socket=self.sock,
        )

    async def command(self, line: str) -> str:
        """One command on the admin socket; its answer."""
        reader, writer = await asyncio.open_unix_connection(str(self.sock))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()

    async def status(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it (``UP``, ``DOWN``, ``MAINT`` …)."""
        head, *rows = [line for line in (await self.command("show stat")).splitlines() if line]
        cols = head.lstrip("# ").split(",")
        out = {}
        for row in rows:
            cells = dict(zip(cols, row.split(","), strict=False))
            if cells.get("pxname") == "nodes" and cells.get("svname") not in ("BACKEND", None):
                out[cells["svname"]] = cells.get("status", "")
        return out

    async def rotate(self, out: str, into: str, limit: float = 15) -> None:
        """Take server ``out`` out of rotation and put ``into`` in; returns once
        HAProxy sends ``into`` connections."""
        await self.command(f"set server nodes/{out} state maint")
        await self.command(f"set server nodes/{into} state ready")
        async with asyncio.timeout(limit):
            while (await self.status()).get(into) != "UP":  # noqa: ASYNC110 - HAProxy's
                await asyncio.sleep(0.05)  # verdict, polled under a timeout (checks: 200 ms)

    async def wait_up(self, names: list[str], limit: float = 15) -> None:
        """Until every server in ``names`` is up."""
        async with asyncio.timeout(limit):
            while True:
                status = await self.status()
                if all(status.get(n) == "UP" for n in names):
                    return
                await asyncio.sleep(0.05)


def server_name(node: int, generation: int) -> str:
    """HAProxy's name for node ``node``'s (0-based) process of ``generation``."""
    return f"n{node + 1}g{generation}"


class Node:
    """``unbroken serve rolling_app:app --port PORT [--protocols …]`` as a process."""

    def __init__(self, p: Process, port: int, versions: Versions | None) -> None:
        self.p = p
        self.port = port
        self.versions = versions

    @classmethod
    async def start(cls, port: int, versions: Versions | None, env: dict[str, str]) -> Node:
        args = [str(UNBROKEN), "serve", APP, "--port", str(port)]
        args += ["--timeout-graceful-shutdown", "60"]
        if versions is not None:
            args += ["--protocols", ",".join(versions)]
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        p = Process(proc)
        try:
            await p.wait_line("Application startup complete", 60)
        except BaseException:
            await p.stop()
            raise
        return cls(p, port, versions)

    @property
    def log(self) -> str:
        return "\n".join(self.p.lines)

    async def drain(self) -> None:
        """SIGTERM: the node stops listening, tells its clients 1012 and finishes its
        runs in the background (it exits once they end)."""
        if self.p.proc.returncode is None:
            os.kill(self.p.proc.pid, signal.SIGTERM)
        await self.p.wait_line("Shutting down", 15)

    async def exit_code(self, limit: float = 30) -> int:
        return await asyncio.wait_for(self.p.proc.wait(), limit)

    async def kill(self) -> None:
        await self.p.stop()


def label(versions: Versions | None) -> str:
    return "default" if versions is None else "+".join(versions)


@dataclass
class Fleet:
    """``len(procs)`` nodes, each a process per generation (``procs[i][g]``: node
    ``i``'s process speaking ``plan[g]``, each on a port of its own), the balancer and
    the fault proxy in front of it all. The first generation serves from the start; the
    later ones boot in the background meanwhile (as a deployment with surge starts the
    replacement before it retires the old process), out of rotation: a node's upgrade
    is the move to its next process."""

    plan: list[Versions | None]
    procs: list[list[asyncio.Task[Node]]]
    lb: Balancer
    front: FaultProxy
    current: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where every client connects: the fault proxy."""
        return f"ws://127.0.0.1:{self.front.port}/ws"

    @property
    def versions(self) -> list[Versions | None]:
        """What each node speaks now."""
        return [self.plan[g] for g in self.current]

    @property
    def retired(self) -> list[Node]:
        """The processes taken out of rotation (drained or draining)."""
        return [
            gens[g].result() for i, gens in enumerate(self.procs) for g in range(self.current[i])
        ]

    async def upgrade(self, index: int) -> None:
        """Node ``index`` onto its next generation: the new process put in the
        balancer's rotation, the old one taken out and drained (its clients are told
        1012 and come back through the balancer, its runs go on until they end)."""
        g = self.current[index]
        old = self.procs[index][g].result()
        new = await self.procs[index][g + 1]
        await self.lb.rotate(server_name(index, g), server_name(index, g + 1))
        await old.drain()
        self.current[index] = g + 1
        self.steps.append(f"n{index + 1}: {label(old.versions)} -> {label(new.versions)}")

    async def close(self) -> None:
        await self.front.stop()
        await self.lb.stop()
        tasks = [t for gens in self.procs for t in gens]
        for t in tasks:
            t.cancel()  # (a process still booting is stopped by its own start)
        for t in tasks:
            with contextlib.suppress(BaseException):
                await (await t).kill()


@contextlib.asynccontextmanager
async def fleet(
    redis: RedisServer, dir: Path, plan: Sequence[Versions | None], *, size: int = 3
) -> AsyncIterator[Fleet]:
    """``size`` nodes on ``redis``, each with a process for every generation of
    ``plan`` (the first in rotation, the others booting), behind HAProxy and the fault
    proxy; every process stopped afterwards (by pid)."""
    binary = need_haproxy()
    env = {
        "UNBROKEN_REDIS_URL": redis.url,
        "UNBROKEN_REDIS_LEASE": "5",
        "UNBROKEN_REDIS_PREFIX": "versions",
    }
    ports = [[free_port() for _ in plan] for _ in range(size)]
    loop = asyncio.get_running_loop()
    first = [loop.create_task(Node.start(gens[0], plan[0], env)) for gens in ports]
    f = Fleet(
        list(plan),
        [[first[i]] for i in range(size)],
        Balancer(binary, dir, ports),
        FaultProxy(upstream=("127.0.0.1", 0), close_grace=0.5, flush_timeout=0.5),
        [0] * size,
    )
    try:
        await asyncio.gather(*first)
        for i, gens in enumerate(ports):
            for port, versions in zip(gens[1:], plan[1:], strict=True):
                f.procs[i].append(loop.create_task(Node.start(port, versions, env)))
        await f.lb.start()
        await f.lb.wait_up([server_name(i, 0) for i in range(size)])
        f.front.upstream_address = ("127.0.0.1", f.lb.port)
        await f.front.start()
        yield f
    finally:
        await f.close()


def start_redis(tmp_path: Path) -> RedisServer:
    """A started redis-server of the test's own (skip without one)."""
    if REDIS is None:
        pytest.skip(NO_REDIS)
    srv = RedisServer(tmp_path)
    srv.start()
    return srv


# ------------------------------------------------------------------ streams
class Spoken:
    """The version each connection of a client spoke, in order (read from
    ``Client.version`` when the client says it connected)."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.versions: list[str | None] = []

    def __call__(self, ev: ConnectionEvent) -> None:
        if ev.kind == "connected" and self.client is not None:
            self.versions.append(self.client.version)


def client(url: str, pinned: Versions | None) -> tuple[Client, Spoken]:
    """An old client (``pinned``: it offers only those versions) or a new one (None:
    the default offer, v2 then v1), reconnecting fast; and what its connections spoke."""
    spoken = Spoken()
    options: dict[str, object] = {} if pinned is None else {"protocols": pinned}
    c = Client(url, policy=FAST, on_event=spoken, **options)  # type: ignore[arg-type]
    spoken.client = c
    return c, spoken


def token_events(seq: int) -> list[Event]:
    """The first ``seq`` events of a ``ticker`` answer (part start, one per token)."""
    evs = [part_start(1, "text", "text", mime="text/plain")]
    evs += [chunk(i + 2, Kind.TEXT, "text", f"tok{i:06d} ") for i in range(seq - 1)]
    return evs[:seq]


class Followed:
    """One ``ticker`` stream read to its end by its client (``pinned``: the client
    offers only those versions; None: the client's default offer)."""

    def __init__(self, client: Client, pinned: Versions | None, stream: Stream) -> None:
        self.client = client
        self.pinned = pinned
        self.stream = stream
        self.error: BaseException | None = None
        self.answer: Answer | None = None
        self._target = 0
        self._reached = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for _ in self.stream:
                if self._target and self.seq >= self._target:
                    self._reached.set()
            self.answer = await self.stream.wait()
        except UnbrokenError as exc:
            self.error = exc
        finally:
            self._reached.set()

    @property
    def seq(self) -> int:
        cur = self.stream.cursor
        return 0 if cur is None else cur.seq

    @property
    def done(self) -> bool:
        return self.task.done()

    async def reach(self, seq: int) -> None:
        """Until this stream's cursor is at ``seq`` (or it ended)."""
        self._target = seq
        self._reached.clear()
        if not self.done and self.seq < seq:
            await self._reached.wait()

    async def advance(self, by: int) -> None:
        """Until this stream got ``by`` more events (or ended)."""
        await self.reach(self.seq + by)

    def exact(self) -> int:
        """Assert the answer is whole and exact: every token in order, the end digest
        the one computed here from the tokens; returns how many tokens."""
        st, answer = self.stream, self.answer
        assert self.error is None, f"{st.id}: {self.error!r}"
        assert answer is not None and answer.status == "completed", answer
        n = len(answer.text) // TOKEN
        assert n >= 1 and answer.text == expected_text(n), answer.text[-60:]
        assert answer.digest == full_digest(st.id, st.epoch, n), st.id
        return n

    def verified_prefix(self) -> int:
        """Assert what arrived before the stream failed is an exact prefix: the tokens
        in order, and the cursor's digest the chain's after its seq; returns the seq."""
        st = self.stream
        cur = st.cursor
        assert cur is not None, f"{st.id}: no cursor"
        text = st.result.text
        assert text == expected_text(len(text) // TOKEN), text[-60:]
        assert cur.seq == 1 + len(text) // TOKEN, (cur.seq, len(text))
        assert cur.digest == chain(st.id, st.epoch, token_events(cur.seq))[-1].hex()
        return cur.seq


async def advance_all(streams: Sequence[Followed], by: int, limit: float = 20) -> None:
    """Until every stream still running got ``by`` more events: they flow."""
    async with asyncio.timeout(limit):
        await asyncio.gather(*(s.advance(by) for s in streams if not s.done))
