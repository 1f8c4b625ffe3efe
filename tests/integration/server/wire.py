"""A plain ``websockets`` client speaking protocol v1 through the sans-I/O
:class:`~unbroken.protocol.client_session.ClientSession` (decode + digest verification),
plus a tiny TCP relay that can cut a connection at an exact byte.

Deliberately not the unbroken client: these tests check the server against the
protocol, with nothing in between but a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from unbroken.protocol.client_session import (
    ClientOutput,
    ClientSession,
    Cursor,
    ServerError,
    StreamEvents,
    StreamGoneOut,
    StreamResumed,
    StreamStarted,
    Welcomed,
)
from unbroken.protocol.digest import chain, seed
from unbroken.protocol.events import Event, Kind
from unbroken.protocol.frames import ClientFrame, Error, encode

TIMEOUT = 10.0
SUBPROTOCOL: Any = "unbroken.v1"


class Closed(Exception):
    """The server closed the connection; ``code`` is its close code."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed code={code} reason={reason}")
        self.code = code
        self.reason = reason


@dataclass
class Wire:
    """One WebSocket connection; outputs are recorded per stream as they arrive."""

    ws: ClientConnection
    cs: ClientSession
    events: dict[str, list[Event]] = field(default_factory=dict)
    errors: list[Error] = field(default_factory=list)
    gone: dict[str, StreamGoneOut] = field(default_factory=dict)
    resumed: dict[str, StreamResumed] = field(default_factory=dict)
    started: dict[str, str] = field(default_factory=dict)  # req -> stream
    frames: int = 0

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    async def open(
        cls,
        url: str,
        *,
        session: ClientSession | None = None,
        token: str | None = None,
        hello: bool = True,
    ) -> Wire:
        ws = await connect(
            url,
            subprotocols=[SUBPROTOCOL],
            max_size=None,
            ping_interval=None,
            open_timeout=TIMEOUT,
            close_timeout=2,
            compression=None,
        )
        w = cls(ws, session if session is not None else ClientSession())
        if hello:
            await w.hello(token)
        return w

    async def hello(self, token: str | None = None) -> None:
        """Send hello, wait for welcome, then send what the session has pending
        (resumes of detached streams, starts not yet answered)."""
        await self.send(self.cs.connect(token))
        out = await self.next()
        assert isinstance(out, Welcomed), out
        # ack at least twice per window, or a small window stalls the stream
        self.cs.ack_every = min(self.cs.ack_every, out.welcome.limits.window // 2)
        for frame in self.cs.after_welcome():
            await self.send(frame)

    def abort(self) -> None:
        """Drop the connection abruptly (no close handshake), as a network fault would."""
        self.ws.transport.abort()
        self.cs.connection_lost()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), TIMEOUT)

    # ---------------------------------------------------------------- sending
    async def send(self, frame: ClientFrame | None) -> None:
        if frame is not None:
            await self.ws.send(encode(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def start(self, req: str, agent: str, input: Any = None) -> str:
        """Start a run and return its stream id (events that follow are recorded)."""
        await self.send(self.cs.start(req, agent, input))
        await self.until(lambda _o: req in self.started)
        return self.started[req]

    async def replay(self, stream: str, epoch: str, req: str = "replay") -> None:
        """Resume ``stream`` from seq 0 (read the whole answer again)."""
        cursor = Cursor(stream, 0, seed(stream, epoch).hex(), epoch)
        await self.send(self.cs.adopt(req, cursor))

    # ---------------------------------------------------------------- receiving
    async def recv_raw(self, limit: float = TIMEOUT) -> str | bytes:
        try:
            return await asyncio.wait_for(self.ws.recv(), limit)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None

    async def next(self, limit: float = TIMEOUT) -> ClientOutput:
        """Receive, decode and verify one frame; record what it says; send due acks."""
        data = await self.recv_raw(limit)
        self.frames += 1
        out = self.cs.receive(data)
        if isinstance(out, StreamEvents):
            self.events.setdefault(out.stream, []).extend(out.events)
        elif isinstance(out, StreamStarted):
            self.started[out.req] = out.stream
        elif isinstance(out, StreamResumed):
            self.resumed[out.stream] = out
        elif isinstance(out, StreamGoneOut):
            self.gone[out.stream] = out
        elif isinstance(out, ServerError):
            self.errors.append(out.error)
        for ack in self.cs.take_acks():
            await self.send(ack)
        return out

    async def until(
        self, done: Callable[[ClientOutput | None], bool], limit: float = TIMEOUT
    ) -> None:
        """Read outputs until ``done(output)`` is true (checked first with ``None``)."""
        if done(None):
            return
        async with asyncio.timeout(limit):
            while True:
                out = await self.next()
                if done(out):
                    return

    async def read_to_end(self, stream: str, limit: float = TIMEOUT) -> list[Event]:
        """Read until the stream's ``end`` event; returns all its events received here."""
        await self.until(lambda _o: self.ended(stream), limit)
        return self.events[stream]

    async def read_until_seq(self, stream: str, seq: int, limit: float = TIMEOUT) -> None:
        await self.until(lambda _o: self.seq(stream) >= seq, limit)

    def seq(self, stream: str) -> int:
        evs = self.events.get(stream)
        return evs[-1].seq if evs else 0

    def ended(self, stream: str) -> bool:
        evs = self.events.get(stream)
        return bool(evs) and evs[-1].kind is Kind.END

    async def expect_close(self, limit: float = TIMEOUT) -> int | None:
        """Read (recording) until the server closes; return its close code."""
        async with asyncio.timeout(limit):
            while True:
                try:
                    await self.next()
                except Closed as exc:
                    return exc.code

    async def ping(self) -> None:
        """Round trip a ping: proves the connection is still served."""
        from unbroken.protocol.client_session import PongOut
        from unbroken.protocol.frames import Ping

        await self.send(Ping(n=7))
        await self.until(lambda o: isinstance(o, PongOut) and o.n == 7)


# ---------------------------------------------------------------- answer checks
def text_of(events: list[Event], part: str = "text") -> str:
    return "".join(e.body for e in events if e.kind is Kind.TEXT and e.part == part)


def body_of(events: list[Event], part: str) -> str:
    return "".join(
        e.body for e in events if e.kind in (Kind.TEXT, Kind.JSON, Kind.DATA) and e.part == part
    )


def end_of(events: list[Event]) -> Event:
    assert events and events[-1].kind is Kind.END, "stream did not end"
    return events[-1]


def assert_exact(events: list[Event]) -> None:
    """Seqs are exactly 1..N: no duplicate, no gap; exactly one end, last."""
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), "duplicate or gap in seqs"
    assert [e.kind for e in events].count(Kind.END) == 1
    assert events[-1].kind is Kind.END


def rechain(stream: str, epoch: str, events: list[Event]) -> bytes:
    """Digest of ``events`` under this stream's identity (seed)."""
    return chain(stream, epoch, events)[-1]


def same_content(a: list[Event], b: list[Event]) -> bool:
    """Same events (seq, kind and every field), whatever stream they came from."""
    return a == b


# ---------------------------------------------------------------- TCP relay
class Relay:
    """A loopback TCP relay in front of a server that can cut a connection after
    exactly ``n`` bytes went from the server to the client (mid-frame if need be)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._cut_after: int | None = None
        self.downstream_bytes = 0
        self.cut_done = asyncio.Event()
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for a, b in self._pairs:
            a.transport.abort()
            b.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.listen_port}{path}"

    def cut_after(self, n: int) -> None:
        """Abort the current connection once ``n`` more server bytes were relayed."""
        self._cut_after = self.downstream_bytes + n
        self.cut_done.clear()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(self.host, self.port)
        self._pairs.append((cw, sw))
        up = asyncio.get_running_loop().create_task(self._pipe(cr, sw, down=False))
        down = asyncio.get_running_loop().create_task(self._pipe(sr, cw, down=True))
        self._tasks |= {up, down}
        await asyncio.gather(up, down, return_exceptions=True)
        self._tasks -= {up, down}

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, down: bool) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(65536):
                if down and self._cut_after is not None:
                    room = self._cut_after - self.downstream_bytes
                    if len(data) >= room:
                        w.write(data[:room])
                        self.downstream_bytes += room
                        self._cut_after = None
                        for a, b in self._pairs:
                            a.transport.abort()
                            b.transport.abort()
                        self.cut_done.set()
                        return
                if down:
                    self.downstream_bytes += len(data)
                w.write(data)
                await w.drain()
        w.transport.abort()
