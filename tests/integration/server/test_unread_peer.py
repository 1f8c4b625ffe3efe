"""A peer that stops reading must not hold the server's socket and its unsent bytes.

A client whose link dies one way (its FIN reaches the server, the server's data no
longer reaches it) or that simply stops reading leaves the server's send queue full.
A graceful TCP close waits for that queue to drain, which never happens: the socket
used to sit in ``CLOSE-WAIT`` (the peer's EOF ignored) or ``FIN-WAIT-1`` (orphaned,
its megabyte of unsent data held by the kernel for minutes) long after the
connection was given up. The WebSocket layer (:mod:`unbroken.server.websocket`)
resets such a connection instead: these tests watch the kernel's socket table.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from unbroken.server import Output, Request, Unbroken, websocket

from .hardened import serve_hardened, upgrade_request

#: Seconds to wait for the kernel to drop the server's socket (the fix: a few; before it:
#: minutes, or forever in CLOSE-WAIT).
GONE_WITHIN = 20.0

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp"
)


def _frame(text: str) -> bytes:
    """One masked client text frame."""
    data = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + mask + body


def _server_socket(server_port: int, client_port: int) -> list[str] | None:
    """The /proc/net/tcp row of the server's side of the connection to
    ``client_port``, or ``None`` when the kernel no longer has it."""
    want_local = f"0100007F:{server_port:04X}"
    want_remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return fields
    return None


def _unsent(server_port: int, client_port: int) -> int:
    """Bytes in the server socket's send queue (``tx_queue`` of its row)."""
    row = _server_socket(server_port, client_port)
    return 0 if row is None else int(row[4].split(":")[0], 16)


def _big_app(**kw: object) -> Unbroken:
    app = Unbroken(allow_anonymous=True, **kw)  # type: ignore[arg-type]

    @app.agent("flood")
    async def flood(req: Request, out: Output) -> None:
        for _ in range(20_000):
            await out.text("x" * 1000)
            await asyncio.sleep(0)

    return app


async def _stalled_peer(port: int) -> socket.socket:
    """A client that upgrades, starts the flood and never reads: a tiny receive buffer
    so the server's send queue fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request())
    head = b""
    async with asyncio.timeout(10):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)  # byte by byte: leave the rest unread
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(sock, _frame(json.dumps({"t": "hello"})))
    await loop.sock_sendall(sock, _frame(json.dumps({"t": "start", "req": "r", "agent": "flood"})))
    return sock


async def _wait_queue_full(server_port: int, client_port: int) -> None:
    async with asyncio.timeout(10):
        while _unsent(server_port, client_port) < 64 * 1024:  # noqa: ASYNC110 - kernel state
            await asyncio.sleep(0.02)


async def _wait_gone(server_port: int, client_port: int) -> None:
    async with asyncio.timeout(GONE_WITHIN):
        while _server_socket(server_port, client_port) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_peer_eof_with_unsent_data_resets_the_connection() -> None:
    # peer silence and send timeouts far away: only the peer's EOF can end it
    app = _big_app(peer_silence=120.0, send_timeout=120.0)
    async with serve_hardened(app) as srv:
        sock = await _stalled_peer(srv.port)
        client_port = sock.getsockname()[1]
        try:
            await _wait_queue_full(srv.port, client_port)
            sock.shutdown(socket.SHUT_WR)  # the peer is gone one way: its FIN arrives
            await _wait_gone(srv.port, client_port)
            async with asyncio.timeout(10):
                while app.connections:  # noqa: ASYNC110 - the app learns it too
                    await asyncio.sleep(0.02)
        finally:
            sock.close()


async def test_given_up_peer_with_unsent_data_is_reset_not_orphaned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the server gives up on the silent peer (4004) but the close frame cannot get
    # through the full queue: the socket must not be left to the kernel for minutes.
    # The close goes unanswered for CLOSE_TIMEOUT first (10 s; 1 s here, as short as
    # peer_silence is: what is tested is the reset after it, not its length)
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 1.0)
    app = _big_app(peer_silence=0.5)
    async with serve_hardened(app) as srv:
        sock = await _stalled_peer(srv.port)
        client_port = sock.getsockname()[1]
        try:
            await _wait_queue_full(srv.port, client_port)
            await _wait_gone(srv.port, client_port)
            # the reset reaches the peer: its next read fails (its buffered data is dropped)
            with pytest.raises(ConnectionResetError):
                while sock.recv(65536, socket.MSG_DONTWAIT):
                    pass
        finally:
            sock.close()
