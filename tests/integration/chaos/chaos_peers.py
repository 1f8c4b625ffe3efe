"""Plain asyncio peers for the chaos tests: echo / sink / source servers and a recording client.

They record every byte and how the connection ended (EOF, reset), and offer futures to wait
on, so tests never sleep to synchronise.
"""

from __future__ import annotations

import asyncio
from typing import cast


class Peer(asyncio.Protocol):
    """One end of a TCP connection that records what it receives.

    ``echo``: write back every byte (and the EOF). ``greeting``: bytes to send on connect;
    ``close_after_greeting``: then send a FIN. On EOF the peer closes its socket, as most
    programs do, unless ``half_close`` (or ``echo``) keeps its sending side open.
    """

    def __init__(
        self,
        *,
        echo: bool = False,
        greeting: bytes = b"",
        close_after_greeting: bool = False,
        half_close: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.greeting = greeting
        self.close_after_greeting = close_after_greeting
        self.half_close = half_close
        self.data = bytearray()
        self.reads = 0
        self.eof = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()  # EOF or lost
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.greeting:
            self.transport.write(self.greeting)
        if self.close_after_greeting:
            self.transport.write_eof()
        self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.reads += 1
        if self.echo and self.transport is not None:
            self.transport.write(data)
        for n, fut in list(self._waiters):
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        if not self.ended.done():
            self.ended.set_result(None)
        if self.echo and self.transport is not None:
            self.transport.write_eof()
        return self.echo or self.half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        if not self.ended.done():
            self.ended.set_result(None)
        if not self.lost.done():
            self.lost.set_result(exc)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionError(f"lost after {len(self.data)} bytes: {exc!r}"))

    async def wait_bytes(self, n: int) -> bytes:
        """Wait until at least ``n`` bytes arrived; returns everything received so far."""
        if len(self.data) < n:
            if self.lost.done():
                raise ConnectionError(f"lost after {len(self.data)} bytes")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await fut
        return bytes(self.data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class PeerServer:
    """A listening server whose accepted connections are :class:`Peer` objects."""

    def __init__(self, **peer_options: object) -> None:
        self.peer_options = peer_options
        self.peers: list[Peer] = []
        self._server: asyncio.Server | None = None
        self._accepted: list[asyncio.Future[Peer]] = []

    async def start(self) -> PeerServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, "127.0.0.1", 0)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    def _factory(self) -> Peer:
        peer = Peer(**self.peer_options)  # type: ignore[arg-type]
        self.peers.append(peer)
        index = len(self.peers) - 1
        self._future(index).set_result(peer)
        return peer

    def _future(self, index: int) -> asyncio.Future[Peer]:
        while len(self._accepted) <= index:
            self._accepted.append(asyncio.get_running_loop().create_future())
        return self._accepted[index]

    async def peer(self, index: int = 0) -> Peer:
        """The ``index``-th accepted connection (waits for it)."""
        peer = await self._future(index)
        await peer.connected
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def connect(port: int) -> Peer:
    """A recording client connected to 127.0.0.1:``port``."""
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_connection(Peer, "127.0.0.1", port)
    await peer.connected
    return peer
