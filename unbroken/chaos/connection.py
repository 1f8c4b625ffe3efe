"""One proxied connection: its two sockets, its two directions and how it is cut.

Created by :class:`~unbroken.chaos.proxy.FaultProxy`, which hands each connection its
:class:`~unbroken.chaos.port.ProxyPort` (the only part of the proxy a connection and its
links see). Users meet :class:`ProxiedConnection` and :class:`Link` through
``proxy.connections`` and ``proxy.wait_connection()`` for their state and byte counters, and
:class:`InstalledToxic` through ``proxy.add_toxic()``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import functools
import logging
import random
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, cast

from ..errors import ConfigError
from .addresses import format_address
from .port import InstalledToxic, ProxyPort
from .toxics import CUT_MODES, DIRECTIONS, Chunk, CutMode, Direction
from .toxics.base import DetailValue

__all__ = ["Connection", "ConnectionState", "InstalledToxic", "Link", "ProxiedConnection"]

logger = logging.getLogger(__name__)

ConnectionState = Literal["connecting", "open", "blackhole", "closing", "closed"]

#: Bytes queued in a direction before the proxy stops reading from its source.
QUEUE_HIGH_WATER: Final = 256 * 1024

_TIOCOUTQ: Final = 0x5411  # Linux: bytes in a socket's send queue not yet acked by the peer


def _unsent_bytes(sock: Any) -> int:
    """Bytes the kernel still holds for ``sock`` (sent but not acked, or not sent). Linux."""
    if not sys.platform.startswith("linux"):
        return 0
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), _TIOCOUTQ, buf)
    except OSError:
        return 0
    return int(buf[0])


def _resolve(fut: asyncio.Future[Any], value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: the client's or the upstream server's.

    Bytes read go to ``outbound`` (the direction this socket feeds); a change of its write
    buffer tells ``inbound`` (the direction that writes to it). Its connection learns of the
    rest through the ``made``, ``eof`` and ``lost`` callbacks it passed.
    """

    outbound: Link
    inbound: Link

    def __init__(
        self,
        role: Literal["client", "upstream"],
        *,
        made: Callable[[_Side], None],
        eof: Callable[[_Side], None],
        lost: Callable[[_Side, Exception | None], None],
    ) -> None:
        self.role = role
        self._made = made
        self._eof = eof
        self._lost = lost
        self.transport: asyncio.Transport | None = None
        self.writable = True
        self.reading_paused = False
        self.eof = False
        self.lost = False
        self.gone: asyncio.Future[None] | None = None
        self._writable_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gone = asyncio.get_running_loop().create_future()
        self._made(self)

    def data_received(self, data: bytes) -> None:
        self.outbound.feed(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.gone is not None:
            _resolve(self.gone)
        self._eof(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.writable = True
        if self.gone is not None:
            _resolve(self.gone)
        if self._writable_waiter is not None:
            _resolve(self._writable_waiter)
        self._lost(self, exc)

    def pause_writing(self) -> None:
        self.writable = False
        self.inbound.update_reading()

    def resume_writing(self) -> None:
        self.writable = True
        if self._writable_waiter is not None:
            _resolve(self._writable_waiter)
            self._writable_waiter = None
        self.inbound.update_reading()

    # -- helpers
    @property
    def alive(self) -> bool:
        """Connected and not closing."""
        return self.transport is not None and not self.lost and not self.transport.is_closing()

    async def wait_writable(self) -> None:
        """Return when the transport's buffer is below its high-water mark (or it is gone)."""
        while not self.writable and not self.lost:
            if self._writable_waiter is None or self._writable_waiter.done():
                self._writable_waiter = asyncio.get_running_loop().create_future()
            await self._writable_waiter

    def set_reading(self, want: bool) -> None:
        """Pause or resume reading from the socket."""
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        if want and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        elif not want and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()

    async def flush(self, limit: float) -> None:
        """Wait until every byte written so far is acked by the peer (at most ``limit`` s)."""
        transport = self.transport
        if transport is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        sock = transport.get_extra_info("socket")
        while not self.lost and loop.time() < deadline:
            if transport.get_write_buffer_size() == 0 and (
                sock is None or _unsent_bytes(sock) == 0
            ):
                return
            await asyncio.sleep(0.001)

    def reset(self) -> None:
        """Close with ``SO_LINGER`` 0: the peer gets a TCP RST (``ECONNRESET``)."""
        transport = self.transport
        if transport is None or self.lost:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


class _Binding:
    """A toxic acting on one direction of one connection (the toxic's :class:`ToxicContext`)."""

    def __init__(self, link: Link, installed: InstalledToxic, active: bool) -> None:
        self.link = link
        self._port = link.connection.port
        self.installed = installed
        self.active = active
        self.state: dict[str, float] = {}
        self.detached = False
        self._sleepers: set[asyncio.Future[bool]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connection_id(self) -> int:
        return self.link.connection.id

    @property
    def direction(self) -> Direction:
        return self.link.direction

    @property
    def rng(self) -> random.Random:
        return self.link.connection.rng

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> bool:
        if self.detached:
            return False
        if seconds <= 0:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_later(seconds, _resolve, fut, True)
        self._sleepers.add(fut)
        try:
            return await fut
        finally:
            handle.cancel()
            self._sleepers.discard(fut)

    def drop(self, chunk: Chunk) -> None:
        self.link.dropped += len(chunk.data)

    def cut(self, mode: CutMode, reason: str, **detail: DetailValue) -> None:
        self.link.connection.cut(
            mode, reason, direction=self.link.direction, toxic=self.installed.name, **detail
        )

    def record(self, kind: str, **detail: DetailValue) -> None:
        self._port.record(
            kind, self.link.connection, self.link.direction, toxic=self.installed.name, **detail
        )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._port.spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def detach(self) -> None:
        """Stop acting: wake sleepers with ``False`` and cancel background tasks."""
        self.detached = True
        for fut in list(self._sleepers):
            _resolve(fut, False)
        for task in list(self._tasks):
            task.cancel()


class Link:
    """One direction of a proxied connection, with its byte counters.

    ``received``: bytes read from the source; ``sent``: bytes written to the destination;
    ``dropped``: bytes read and discarded (by a toxic or a cut); ``queued``: bytes in flight
    inside the proxy.
    """

    def __init__(
        self,
        connection: ProxiedConnection,
        direction: Direction,
        src: _Side,
        dst: _Side,
        *,
        finished: Callable[[], None],
    ) -> None:
        self.connection = connection
        self._port = connection.port
        self._finished = finished
        """Called once the close is forwarded (the connection closes when both are done)."""
        self.direction: Direction = direction
        self.src = src
        self.dst = dst
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.eof_seen = False
        self.done = False
        self._queue: deque[Chunk | None] = deque()
        self._queued_bytes = 0
        self._busy = False
        self._wake: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._bindings: dict[str, _Binding] = {}
        self._chain: list[_Binding] = []
        self._early: list[bytes] | None = []
        """Bytes read while the connection was still ``connecting``, held until it opens.
        Reading is paused then, but CPython before 3.11.3 resumed a socket paused inside
        ``connection_made`` (its reader was added afterwards), and a client's first bytes
        (the HTTP upgrade) were lost. ``None`` once released."""
        self._early_eof = False

    @property
    def queued(self) -> int:
        """Bytes read but neither sent nor dropped yet."""
        return self._queued_bytes

    @property
    def toxics(self) -> list[str]:
        """Names of the toxics acting on this direction (after the toxicity roll)."""
        return [b.installed.name for b in self._chain]

    # -- toxics
    def bind(self, installed: InstalledToxic) -> None:
        """Start applying ``installed`` here, if its toxicity roll succeeds."""
        conn = self.connection
        active = installed.toxicity >= 1.0 or conn.rng.random() < installed.toxicity
        binding = _Binding(self, installed, active)
        old = self._bindings.pop(installed.name, None)
        if old is not None:
            old.detach()
        self._bindings[installed.name] = binding
        self._rebuild_chain()
        if active:
            self._port.record(
                "toxic_applied",
                conn,
                self.direction,
                toxic=installed.name,
                type=installed.type,
                toxicity=installed.toxicity,
            )
            installed.toxic.activate(binding)

    def unbind(self, name: str) -> None:
        """Stop applying toxic ``name`` here."""
        binding = self._bindings.pop(name, None)
        if binding is not None:
            binding.detach()
            self._rebuild_chain()

    def _rebuild_chain(self) -> None:
        order = self._port.chains[self.direction]
        chain = []
        for installed in order:
            binding = self._bindings.get(installed.name)
            if binding is not None and binding.active and not binding.detached:
                chain.append(binding)
        self._chain = chain

    def _detach_all(self) -> None:
        for binding in self._bindings.values():
            binding.detach()
        self._bindings.clear()
        self._chain = []

    # -- input
    def _fast(self) -> bool:
        return not self._chain and not self._queue and not self._busy

    def feed(self, data: bytes) -> None:
        """Bytes read from the source."""
        n = len(data)
        self.received += n
        if self._early is not None and self.connection.state == "connecting" and not self.done:
            self._early.append(data)
        else:
            self._pass(data)
        if self._port.waiters:
            self._port.notify()

    def _pass(self, data: bytes) -> None:
        n = len(data)
        if self.done or self.connection.state != "open":
            self.dropped += n
        elif self._fast():
            self._deliver_now(data)
            self.update_reading()
        else:
            self._enqueue(Chunk(data, asyncio.get_running_loop().time()))
            self.update_reading()

    def feed_eof(self) -> None:
        """The source closed its sending side (or went away)."""
        if self.eof_seen:
            return
        self.eof_seen = True
        if self._early is not None and self.connection.state == "connecting" and not self.done:
            self._early_eof = True
            return
        self._pass_eof()

    def _pass_eof(self) -> None:
        if self.done or self.connection.state != "open":
            return
        if self._fast():
            self._deliver_eof()
        else:
            self._enqueue(None)

    def release_early(self) -> None:
        """The connection left ``connecting``: pass on (or drop, if it did not open)
        what was read meanwhile, in order; from now on bytes go straight through."""
        early, self._early = self._early, None
        for data in early or ():
            self._pass(data)
        if self._early_eof:
            self._pass_eof()

    def abandon(self) -> None:
        """The destination is gone: drop what is queued; nothing more can be delivered."""
        self._drop_queue()
        self.done = True
        if self._writer is not None:
            self._writer.cancel()

    def update_reading(self) -> None:
        """Pause the source while this direction is backed up; always read when discarding."""
        state = self.connection.state
        if state in ("blackhole", "closing"):
            want = True
        elif state == "open":
            want = self._queued_bytes < QUEUE_HIGH_WATER and self.dst.writable
        else:
            want = False
        self.src.set_reading(want)

    def _drop_queue(self) -> None:
        for item in self._queue:
            if item is not None:
                self.dropped += len(item.data)
        self._queue.clear()
        self._queued_bytes = 0

    def halt(self) -> None:
        """Stop for good (a cut or a close): drop the queue, stop the writer and the toxics."""
        self._drop_queue()
        self._detach_all()
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    # -- slow path: a writer task runs chunks through the toxics
    def _enqueue(self, item: Chunk | None) -> None:
        self._queue.append(item)
        if item is not None:
            self._queued_bytes += len(item.data)
        if self._writer is None:
            self._writer = self._port.spawn(self._run())
        elif self._wake is not None:
            _resolve(self._wake)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            item = self._queue.popleft()
            self._busy = True
            try:
                if item is None:
                    for binding in list(self._chain):
                        await binding.installed.toxic.finish(binding)
                    self._deliver_eof()
                    return
                self._queued_bytes -= len(item.data)
                self.update_reading()
                await self._through(self._chain, 0, item)
            finally:
                self._busy = False

    async def _through(self, chain: list[_Binding], index: int, chunk: Chunk) -> None:
        if self.done or self.connection.state != "open":
            self.dropped += len(chunk.data)
            return
        while index < len(chain) and (chain[index].detached or not chain[index].active):
            index += 1
        if index == len(chain):
            self._deliver_now(chunk.data)
            await self.dst.wait_writable()
            return
        binding = chain[index]
        emit = functools.partial(self._through, chain, index + 1)
        await binding.installed.toxic.transmit(chunk, binding, emit)

    # -- output
    def _deliver_now(self, data: bytes) -> None:
        n = len(data)
        transport = self.dst.transport
        if self.done or self.connection.state != "open" or transport is None or self.dst.lost:
            self.dropped += n
            return
        port = self._port
        if port.byte_cuts:
            cut = port.byte_cut_due(self.direction, self.sent, n)
            if cut is not None:
                sent = port.sent[self.direction] if cut.total else self.sent
                head = max(0, cut.offset - sent)
                if head:
                    transport.write(data[:head])
                    self.sent += head
                    port.sent[self.direction] += head
                self.dropped += n - head
                port.fire(cut, self.connection, self.direction)
                return
        transport.write(data)
        self.sent += n
        port.sent[self.direction] += n
        if port.waiters:
            port.notify()

    def _deliver_eof(self) -> None:
        transport = self.dst.transport
        if transport is not None and self.dst.alive and transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()
        self.done = True
        self._finished()


class ProxiedConnection:
    """One client connection through the proxy: two :class:`Link` directions and a state.

    ``state``: ``connecting`` (waiting for upstream), ``open``, ``blackhole`` (held open,
    nothing passes), ``closing``, ``closed``. ``port``: what it sees of its proxy.
    """

    def __init__(self, port: ProxyPort[ProxiedConnection], connection_id: int) -> None:
        self.port = port
        self.id = connection_id
        self.state: ConnectionState = "connecting"
        seed = port.seed
        self.rng = random.Random(f"{seed}:{connection_id}") if seed is not None else random.Random()
        made, eof, lost = self._side_made, self._on_eof, self._on_lost
        self.client = _Side("client", made=made, eof=eof, lost=lost)
        self.server = _Side("upstream", made=made, eof=eof, lost=lost)
        done = self._check_done
        self.upstream = Link(self, "upstream", self.client, self.server, finished=done)
        self.downstream = Link(self, "downstream", self.server, self.client, finished=done)
        self.client.outbound = self.server.inbound = self.upstream
        self.server.outbound = self.client.inbound = self.downstream
        self.peer: str = ""
        self.opened_at = 0.0
        self.cut_mode: CutMode | None = None
        self._connect_done = False
        self._closed: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<ProxiedConnection {self.id} {self.state} up={self.upstream.sent}"
            f" down={self.downstream.sent}>"
        )

    def link(self, direction: Direction) -> Link:
        """The :class:`Link` of ``direction``."""
        return self.upstream if direction == "upstream" else self.downstream

    @property
    def is_live(self) -> bool:
        """Not closing or closed."""
        return self.state in ("connecting", "open", "blackhole")

    async def wait_closed(self) -> None:
        """Return when both sockets are closed."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    # -- cuts
    def cut(
        self,
        mode: CutMode,
        reason: str = "cut",
        *,
        direction: Direction | None = None,
        **detail: DetailValue,
    ) -> asyncio.Future[None]:
        """Cut this connection now; the returned future is done when the cut is on the wire.

        ``fin``: both peers see an orderly close after the bytes already delivered.
        ``rst``: the delivered bytes are flushed to the peers, then both get a TCP RST.
        ``blackhole``: the sockets stay open but no byte passes in either direction.
        """
        if mode not in CUT_MODES:
            raise ConfigError(f"cut mode {mode!r} is not one of fin, rst, blackhole")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        if self.state in ("closing", "closed") or (mode == "blackhole" and self.state == mode):
            return done
        self.state = "blackhole" if mode == "blackhole" else "closing"
        self.cut_mode = mode
        self.upstream.halt()
        self.downstream.halt()
        self.port.record("cut", self, direction, mode=mode, reason=reason, **detail)
        if mode == "blackhole":
            self.client.set_reading(True)
            self.server.set_reading(True)
            self._maybe_closed()
            return done
        finisher = self._finish_fin() if mode == "fin" else self._finish_rst()
        return self.port.spawn(finisher)

    def _sides(self) -> list[_Side]:
        return [s for s in (self.client, self.server) if s.transport is not None and not s.lost]

    async def _finish_fin(self) -> None:
        sides = self._sides()
        for side in sides:
            side.set_reading(True)
            transport = side.transport
            if transport is not None and transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()
        waits = [s.gone for s in sides if s.gone is not None and not (s.eof or s.lost)]
        if waits:
            await asyncio.wait(waits, timeout=self.port.close_grace)
        for side in sides:
            if side.transport is not None:
                side.transport.close()

    async def _finish_rst(self) -> None:
        sides = self._sides()
        await asyncio.gather(*(s.flush(self.port.flush_timeout) for s in sides))
        for side in sides:
            side.reset()

    def close_now(self) -> None:
        """Close both sockets without waiting (proxy shutdown)."""
        if self.state == "closed":
            return
        self.state = "closing"
        self.upstream.halt()
        self.downstream.halt()
        if self.server.transport is None:
            self._connect_done = True
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.close()
        self._maybe_closed()

    def abort(self) -> None:
        """Abort both sockets at once, nothing flushed (the last step of a proxy stop)."""
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.abort()

    # -- events from the sides
    def _side_made(self, side: _Side) -> None:
        if side is self.server:
            self.server.set_reading(False)  # until connect_upstream opens the connection
            return
        if side is self.client:
            self.opened_at = asyncio.get_running_loop().time()
            peer = side.transport.get_extra_info("peername") if side.transport else None
            self.peer = format_address((str(peer[0]), int(peer[1]))) if peer else ""
            self._closed = asyncio.get_running_loop().create_future()
            self.client.set_reading(False)
            self.port.opened(self)
            self.port.record("accepted", self, None, peer=self.peer)
            if not self.port.accepting:
                self._refuse()
                return
            self.port.spawn(self.connect_upstream())

    def _refuse(self) -> None:
        """The proxy went down between the listener's accept and this connection's start
        (asyncio accepts a socket, then makes its protocol a loop turn later, and closing
        the listener leaves such a socket open): reset it, as a closed port would have, and
        never open its upstream. Else a client that reconnected at once got through a
        proxy that was down."""
        self.state = "closing"
        self.cut_mode = "rst"
        self._connect_done = True
        self.upstream.halt()
        self.downstream.halt()
        self.port.record("refused", self, None, mode="rst", reason="proxy down")
        self.client.reset()
        self._maybe_closed()

    async def connect_upstream(self) -> None:
        """Open the upstream socket, then let bytes flow (run as a task on accept)."""
        loop = asyncio.get_running_loop()
        host, upstream_port = self.port.upstream_address
        try:
            # not wait_for: on 3.11 it loses a cancel that comes as the connection
            # opens (the port closing would leave this upstream socket open)
            async with asyncio.timeout(self.port.connect_timeout):
                await loop.create_connection(lambda: self.server, host, upstream_port)
        except asyncio.CancelledError:
            self._connect_done = True
            self._release_early()
            self._maybe_closed()
            raise
        except (OSError, TimeoutError) as exc:
            self._connect_done = True
            self._release_early()
            self.port.record("upstream_error", self, None, error=f"{type(exc).__name__}: {exc}")
            if self.state == "connecting":
                self.state = "closing"
            if self.client.transport is not None and not self.client.lost:
                self.client.transport.close()
            self._maybe_closed()
            return
        self._connect_done = True
        if self.state != "connecting":
            self._release_early()
            if self.server.transport is not None:
                self.server.transport.close()
            self._maybe_closed()
            return
        self.state = "open"
        for direction in DIRECTIONS:
            link = self.link(direction)
            for installed in self.port.chains[direction]:
                link.bind(installed)
        self._release_early()
        self.upstream.update_reading()
        self.downstream.update_reading()
        self.port.notify()

    def _release_early(self) -> None:
        for direction in DIRECTIONS:
            self.link(direction).release_early()

    def _on_eof(self, side: _Side) -> None:
        if self.state in ("open", "connecting"):  # connecting: held until it opens
            (self.upstream if side is self.client else self.downstream).feed_eof()

    def _on_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.state == "connecting":
            self.state = "closing"
        elif self.state == "open":
            outgoing, incoming = (
                (self.upstream, self.downstream)
                if side is self.client
                else (self.downstream, self.upstream)
            )
            incoming.abandon()
            outgoing.feed_eof()
            self._check_done()
        if exc is not None:
            logger.debug(
                "proxy %s conn %d: %s side lost: %r", self.port.name, self.id, side.role, exc
            )
        self._maybe_closed()

    def _check_done(self) -> None:
        if self.state == "open" and self.upstream.done and self.downstream.done:
            self.state = "closing"
            for s in self._sides():
                if s.transport is not None:
                    s.transport.close()
            self._maybe_closed()

    def _maybe_closed(self) -> None:
        if self.state == "closed":
            return
        server_finished = self.server.lost or (self.server.transport is None and self._connect_done)
        if self.client.lost and server_finished:
            self.state = "closed"
            self.upstream.halt()
            self.downstream.halt()
            self.port.closed(self)
            self.port.record(
                "closed",
                self,
                None,
                received_up=self.upstream.received,
                received_down=self.downstream.received,
            )
            if self._closed is not None:
                _resolve(self._closed)


Connection = ProxiedConnection
"""The old name (it clashed with the server's ``Connection``)."""
