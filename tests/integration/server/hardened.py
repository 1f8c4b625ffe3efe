"""Serve an app the way ``unbroken serve`` does (connection guard, unbroken's WebSocket
layer: :func:`unbroken.server.serving.uvicorn_config`), on this event loop, plus raw
socket helpers for hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from unbroken.server import Unbroken
from unbroken.server.guard import ConnectionGuard
from unbroken.server.serving import uvicorn_config

from .process import Process

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Hardened:
    host: str
    port: int
    path: str
    server: uvicorn.Server
    guard: ConnectionGuard

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def serve_hardened(
    app: Unbroken | Any, path: str = "/ws", **kw: Any
) -> AsyncIterator[Hardened]:
    """``app`` behind the guard on a free loopback port; uvicorn's loggers are left
    unconfigured (``log_config=None``) so their records reach pytest's caplog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    kw.setdefault("ws_ping_interval", None)
    config, guard = uvicorn_config(
        app,
        path=path,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=1,
        ws_per_message_deflate=False,
        **kw,
    )
    sock.listen(config.backlog)
    sock.setblocking(False)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:  # noqa: ASYNC110 - polled under a timeout
                await asyncio.sleep(0.01)
        yield Hardened("127.0.0.1", sock.getsockname()[1], path, server, guard)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        sock.close()


async def raw(
    port: int, first: bytes = b"", local: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection (from ``local``), sending ``first`` at once."""
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    if first:
        w.write(first)
        await w.drain()
    return r, w


async def closed_after(reader: asyncio.StreamReader, limit: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes (EOF or reset), within ``limit``."""
    data = b""
    async with asyncio.timeout(limit):
        while True:
            try:
                chunk = await reader.read(65536)
            except (ConnectionResetError, BrokenPipeError):
                return data
            if not chunk:
                return data
            data += chunk


def upgrade_request(path: str = "/ws", host: str = "127.0.0.1") -> bytes:
    """A complete WebSocket upgrade request (RFC 6455 sample key)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: unbroken.v1\r\n\r\n"
    ).encode()


class ServeProcess(Process):
    """``unbroken serve`` as a child process (optionally under a descriptor limit),
    its log read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self.port = 0

    @classmethod
    async def start(
        cls,
        *args: str,
        nofile: int | None = None,
        target: str = "examples.agent_app:app",
        path: Path | None = None,
    ) -> ServeProcess:
        """``unbroken serve TARGET --port 0 *args``; ``path``: a directory put first on
        the child's ``PYTHONPATH`` (a test's own app module)."""

        def limit() -> None:  # in the child, before exec
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("unbroken")),
            "serve",
            target,
            "--port",
            "0",
            *args,
            cwd=ROOT,
            env={
                **os.environ,
                "UNBROKEN_EXAMPLE_TOKENS_PER_S": "0",
                **(
                    {"PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
                    if path is not None
                    else {}
                ),
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=limit,
        )
        p = cls(proc)
        m = await p.wait_line(r"serving \S+ on ws://[\d.]+:(\d+)/")
        p.port = int(m.group(1))
        return p

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
