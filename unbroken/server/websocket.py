"""The WebSocket layer under an unbroken app: uvicorn's ``websockets-sansio``
protocol with two changes.

- **A message size limit the app moves.** A connection starts with a small limit
  (``max_hello_frame``, 64 KiB by default: a ``hello`` with a large JWT fits) and
  the app raises it once the ``hello`` is accepted (to ``max_client_frame``, 1 MiB
  by default). The limit is checked by websockets' parser on each frame header,
  before its payload is read, and across the fragments of a message, so a peer
  can make the server hold at most the limit per connection (a 15 MiB message
  never completed used to be held whole). Over it: close **1009**. The app finds
  the setter in the ASGI scope: ``scope["extensions"]["unbroken.max_size"]``.
- **Invalid UTF-8 in a text message closes 1007** (RFC 6455 §8.1) with one
  WARNING line (flood-limited), not an ERROR with a traceback per message.

- **A text message is written at once when nothing needs waiting for.** The app's
  frames are UTF-8 bytes already; through ASGI each was decoded to ``str`` for the
  ``websocket.send`` message, encoded back, framed through a ``BytesIO`` and joined.
  :meth:`UnbrokenWebSocketProtocol.send_text_now` writes the frame header and the
  bytes straight to the transport when the handshake is done, no close was sent,
  writing is not paused and no extension applies; otherwise (and for every other
  message) the ASGI send runs as before. The app finds it in the ASGI scope
  (``scope["extensions"]["unbroken.send_text"]``) and uses it only when the ``send``
  it was given is this protocol's own (a wrapper, like the demo page's fault
  injection, keeps every message).

And after a failure (1009, 1007, a protocol error) it reads and drops the peer's
data for a moment before closing the socket, so the close frame reaches the peer
instead of being destroyed by a TCP reset.

- **A peer that no longer reads is reset, not waited for.** A graceful TCP close
  waits until the send queue drains, which never happens when the peer stopped
  reading: the socket sat in ``CLOSE-WAIT`` after the peer's EOF (the app never
  told) or, after the app gave up on the peer, in ``FIN-WAIT-1`` with its unsent
  megabyte held by the kernel for minutes. Now the peer's EOF with bytes still
  unsent, and a close the peer has not answered within the close timeout while
  bytes are still unsent, abort the connection (TCP reset): the socket and its
  buffers are freed at once. Its runs go on into the log; the client resumes.

- **Less held per connection.** uvicorn's ``asyncio.Queue`` of ASGI receive events
  and its ``writable`` ``asyncio.Event`` allocate ``deque`` blocks up front (~3 KB
  together, per connection); here they are :class:`_Inbox` and
  :class:`~unbroken.server.flag.Flag` (a list, and futures only while someone
  waits). The handshake's request and response (their header objects, ~3 KB) are
  let go once the ``accept`` is sent. uvicorn's ~40 attributes of connection state are
  kept in slots (no instance dict a connection, ~1.6 KB). The keepalive pings are due
  times checked once a second by one shared timer per loop (:mod:`.ticker`), not a
  timer per connection. And the app may take its receive events without a coroutine
  of this layer (``scope["extensions"]["unbroken.receive"]``): a connection waiting
  for a message holds only a future. And the app may hand the serving of its
  connection to this layer (``scope["extensions"]["unbroken.run"]``) and return:
  the layer's task then awaits the connection's ``run`` itself, and the frames of
  the app's ``__call__`` and of uvicorn's proxy-headers middleware are not held
  for the connection's life, nor is the ASGI scope (~1.8 KB a connection). The layer offers it only
  when the app it calls is unbroken's (:class:`~unbroken.server.asgi.ASGIApp`),
  alone or under that middleware (which only rewrites the scope first): an app
  behind any other middleware runs as ASGI has it.

Use it through :func:`unbroken.server.serving.uvicorn_config`, which builds the
class with the limits of an app (:func:`websocket_protocol`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import secrets
import socket
import struct
import termios
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, Final

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

from ..protocol.codes import CloseCode
from .flag import Flag
from .logfilter import FloodFilter
from .ticker import ticker

log = logging.getLogger(__name__)

#: The ASGI scope extension holding the size setter (``Callable[[int], None]``).
MAX_SIZE_EXTENSION = "unbroken.max_size"
#: The ASGI scope extension holding the direct text send (``Callable[[bytes], bool]``).
SEND_TEXT_EXTENSION = "unbroken.send_text"
#: The same for a binary message (protocol v2).
SEND_BINARY_EXTENSION = "unbroken.send_binary"
#: The ASGI scope extension holding the receive without a coroutine: ``(take, wait)``,
#: ``take()`` the next receive event or ``None``, ``wait()`` a future done when one
#: arrives (:meth:`UnbrokenWebSocketProtocol.receive_nowait`).
RECEIVE_EXTENSION = "unbroken.receive"
#: The ASGI scope extension through which the app hands its connection's serving to
#: the layer: ``hand_off(run)``, then the app returns; the layer's task awaits
#: ``run()`` (:meth:`UnbrokenWebSocketProtocol.run_asgi`). Offered only to an app
#: that says it takes it (``unbroken_hand_off = True``: :class:`~unbroken.server.asgi.ASGIApp`).
RUN_EXTENSION = "unbroken.run"
_SHORT: Final = struct.Struct("!BB").pack
_MID: Final = struct.Struct("!BBH").pack
_LONG: Final = struct.Struct("!BBQ").pack
_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_OPEN: Final = State.OPEN
#: Seconds a failed connection keeps reading (and dropping) after its close frame.
LINGER = 2.0
#: Seconds between the checks of the keepalive pings (one shared timer per loop): a
#: ping goes, and a missing pong is acted on, at most this late.
KEEPALIVE_TICK = 1.0
#: Seconds the peer has to answer the server's close frame (uvicorn's default, 10 s,
#: is kept for a peer that reads; one with bytes still unsent then is reset).
CLOSE_TIMEOUT = 10.0


def unsent_bytes(transport: Any) -> int:
    """Bytes written but not yet taken by the peer: the transport's own buffer plus
    the kernel's send queue (``SIOCOUTQ``, Linux; 0 where it cannot be read)."""
    total = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            total += int.from_bytes(buf, "little", signed=True)
        except (OSError, ValueError):  # pragma: no cover - not a TCP socket, or closed
            pass
    return total


class _Inbox:
    """What uvicorn uses of its ``asyncio.Queue`` of receive events (``put_nowait``,
    ``get``, ``empty``; one reader: the app's ``receive``), in a list."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def waiter(self) -> asyncio.Future[None]:
        """A future done when an item is put (the one reader awaits it)."""
        w = self._waiter
        if w is None or w.done():  # (a cancelled wait leaves a done one behind)
            w = self._waiter = asyncio.get_running_loop().create_future()
        return w

    async def get(self) -> Any:
        items = self._items
        while not items:
            try:
                await self.waiter()
            finally:
                self._waiter = None
        return items.pop(0)


#: The attributes uvicorn's protocol and this one set on a connection: kept in slots,
#: not in an instance dict (uvicorn's ~40 are past what a shared-key dict holds: each
#: connection had a dict of its own, ~1.6 KB; the slots take 8 bytes each). A name
#: uvicorn drops costs a slot unused; one it adds goes to the dict, as before. A name
#: that is a class attribute of uvicorn's protocol is left out (a slot would hide it).
_STATE: Final = tuple(
    name
    for name in (
        *("app", "app_state", "asgi_version", "client", "close_sent", "close_timeout"),
        *("close_timer", "config", "conn", "connections", "curr_msg_data_type"),
        *("default_headers", "disconnected", "frames", "handshake_complete"),
        *("handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop"),
        *("pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout"),
        *("ping_timer", "pong_timer", "queue", "read_paused", "request", "response"),
        *("root_path", "scheme", "scope", "server", "tasks", "transport", "writable"),
        *("_lingering", "_open_plain", "_ping_due", "_pong_due", "_write_paused"),
        "_then",
    )
    if not hasattr(WebSocketsSansIOProtocol, name)
)


class UnbrokenWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module doc. ``initial_max_size`` is the limit before the app moves
    it (``None``: uvicorn's ``ws_max_size``)."""

    __slots__ = _STATE
    initial_max_size: ClassVar[int | None] = None
    flood: ClassVar[FloodFilter] = FloodFilter(burst=10, interval=10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]
        self._lingering = False
        self._ping_due = 0.0  # when the next keepalive ping goes (0: none scheduled)
        self._pong_due = 0.0  # when an unanswered ping gives the peer up (0: none awaited)
        self._write_paused = False  # the transport asked us to stop writing
        #: the handshake is done and answered with no extension (it stays so)
        self._open_plain = False
        #: what the app handed over to be awaited once it returned (RUN_EXTENSION)
        self._then: Callable[[], Awaitable[None]] | None = None
        if self.initial_max_size is not None:
            self.set_max_size(self.initial_max_size)

    def set_max_size(self, size: int) -> None:
        """Largest message accepted from now on (frames already read are not
        checked again)."""
        conn: Any = self.conn
        if hasattr(conn, "max_message_size"):  # websockets >= 15
            conn.max_message_size = size
        else:  # pragma: no cover - older websockets
            conn.max_size = size

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # the handshake goes on: the app may move the limit
            scope["extensions"][MAX_SIZE_EXTENSION] = self.set_max_size
            scope["extensions"][SEND_TEXT_EXTENSION] = self.send_text_now
            scope["extensions"][SEND_BINARY_EXTENSION] = self.send_binary_now
            inbox: _Inbox = self.queue  # type: ignore[assignment]
            scope["extensions"][RECEIVE_EXTENSION] = (self.receive_nowait, inbox.waiter)
            if _takes_hand_off(self.app):
                scope["extensions"][RUN_EXTENSION] = self.hand_off

    def hand_off(self, run: Callable[[], Awaitable[None]]) -> None:
        """The app hands the rest of its connection's serving over: once its call
        returns, :meth:`run_asgi` awaits ``run()`` (see the module doc)."""
        self._then = run

    async def run_asgi(self) -> None:
        """uvicorn's ``run_asgi`` (the app called in the connection's task; an error
        logged and answered 500 before the handshake; the socket closed at the end),
        with the serving the app handed over (:meth:`hand_off`) awaited in this
        frame once the app's call returned: the app's frames are not held meanwhile."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
            then = self._then
            if then is not None:
                # nothing reads the scope once the app's call returned (uvicorn reads
                # it for the handshake's log lines; the connection took what it needs):
                # it goes with its dicts (~1.2 KB a connection, issue 21)
                self._then = self.scope = None  # type: ignore[assignment]
                await then()
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None:
            self.transport.close()

    def receive_nowait(self) -> Any:
        """The next ASGI receive event if one is queued, else ``None``: what
        ``receive`` returns, without its coroutine. A connection waiting for a message
        holds no coroutine frame of this layer (two a connection, ~0.4 KB: issue 21),
        only the future of ``self.queue.waiter()``."""
        inbox: _Inbox = self.queue  # type: ignore[assignment]
        items = inbox._items
        if not items:
            return None
        message = items.pop(0)
        if self.read_paused and not items:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def send_text_now(self, data: bytes) -> bool:
        """Write one text message (``data``: its UTF-8 bytes) to the transport now,
        as a ``websocket.send`` would, when nothing needs waiting for or checking:
        the handshake done, no close sent or received, writing not paused, no
        extension (compression) negotiated. ``False``: nothing was written; send it
        through ASGI (which waits for the transport, or raises when disconnected)."""
        # every frame of a text connection: the checks of _can_send_now; those that
        # cannot change once they held (the handshake done and answered, no
        # extension) are made until they hold, then only the others
        # (websockets' ``state`` is a property over ``_state``: read the attribute,
        # a property call per frame costs more than the rest of these checks; a
        # websockets without it sends through ASGI)
        conn: Any = self.conn
        if not self._open_plain:
            if (
                not self.handshake_complete
                or self.initial_response is not None
                or conn.extensions
                or not hasattr(conn, "_state")
            ):
                return False
            self._open_plain = True
        if (
            self.close_sent
            or self.disconnected
            or self._write_paused
            or conn._state is not _OPEN
            or conn.expect_continuation_frame
        ):
            return False
        n = len(data)
        if n < 126:
            self.transport.write(_SHORT(_FIN_TEXT, n) + data)
        elif n < 65536:
            self.transport.write(_MID(_FIN_TEXT, 126, n) + data)
        else:
            self.transport.write(_LONG(_FIN_TEXT, 127, n) + data)
        return True

    def send_binary_now(self, data: bytes) -> bool:
        """:meth:`send_text_now` for one binary message (protocol v2)."""
        if not self._can_send_now():
            return False
        n = len(data)
        if n < 126:
            head = _SHORT(_FIN_BINARY, n)
        elif n < 65536:
            head = _MID(_FIN_BINARY, 126, n)
        else:
            head = _LONG(_FIN_BINARY, 127, n)
        self.transport.write(head + data)
        return True

    def _can_send_now(self) -> bool:
        conn: Any = self.conn
        return not (
            self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or self.disconnected
            or self._write_paused
            or conn.state is not _OPEN
            or conn.extensions
            or conn.expect_continuation_frame
        )

    def pause_writing(self) -> None:
        # a flag beside uvicorn's writable event: the direct sends check it per frame
        self._write_paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        super().resume_writing()

    # ------------------------------------------------------------ keepalive
    # uvicorn keeps a timer of its own per connection for its pings (and another for
    # each pong awaited): ~0.5 KB a connection, held for its life. Here the pings are
    # due times checked by one shared timer per loop (a Ticker, every KEEPALIVE_TICK
    # seconds): a ping goes, and a missing pong is given up on, within a tick of due.

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        self._ping_due = self.loop.time() + max(0.0, self.ping_interval - self.last_ping_rtt)
        ticker(KEEPALIVE_TICK, self.loop).add(self)

    def stop_keepalive(self) -> None:
        self._ping_due = self._pong_due = 0.0
        self.pending_ping_payload = None
        ticker(KEEPALIVE_TICK, self.loop).discard(self)

    def handle_pong(self, event: Any) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            return  # not the answer to the ping in flight (unsolicited, or stale)
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self._pong_due:  # awaited: the next ping is due an interval from now
            self._pong_due = 0.0
            self.schedule_ping()

    def tick(self, now: float) -> bool:
        """The shared timer's check: send a ping that is due, or give up on a peer
        whose pong is late (1011, as uvicorn does). ``False``: nothing left to watch."""
        if self._pong_due and now >= self._pong_due:
            self._pong_due = 0.0
            self.keepalive_timeout()
        elif self._ping_due and now >= self._ping_due:
            self._ping_due = 0.0
            self._send_ping(now)
        return bool(self._ping_due or self._pong_due)

    def _send_ping(self, now: float) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.pending_ping_payload = secrets.token_bytes(4)  # names this ping's pong
        self.ping_sent_at = now
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            self._pong_due = now + self.ping_timeout
        else:
            self.schedule_ping()

    def eof_received(self) -> None:
        """The peer sent FIN. With nothing unsent the socket closes as usual; with
        bytes still queued a graceful close would wait for a reader that is gone:
        reset instead (see the module doc)."""
        # after our close frame (a closing handshake, or lingering after a failure) the
        # usual close stands: the close timer bounds it
        if self.handshake_complete and not self.close_sent and unsent_bytes(self.transport) > 0:
            self._abort("eof")

    async def send(self, message: MutableMapping[str, Any]) -> None:  # type: ignore[override]
        if self._lingering and message.get("type") in ("websocket.send", "websocket.close"):
            # this layer closed the connection itself (1009, 1007, a protocol error):
            # to the app, whose frames were on their way, the peer is gone (uvicorn
            # would raise "Unexpected ASGI message", read as a server fault)
            raise ClientDisconnected
        await super().send(message)  # type: ignore[arg-type]
        kind = message.get("type")
        if kind == "websocket.accept" and self.handshake_complete:
            # the handshake's request and response (their headers) are not used again;
            # the request's headers are emptied too: websockets' parser keeps the
            # request in its generator's frame for the connection's life (~2 KB)
            request: Any = self.request
            if request is not None:
                request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        if kind == "websocket.close" and self.close_timer is not None:
            # uvicorn closes gracefully when the peer does not answer in time; a peer
            # that does not answer and does not read would hold the socket
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_unanswered)

    def _close_unanswered(self) -> None:
        self.close_timer = None
        if unsent_bytes(self.transport) > 0:
            self._abort("close unanswered")
        else:
            self.transport.close()

    def _abort(self, why: str) -> None:
        template = "peer not reading client=%s why=%s unsent=%d; connection reset"
        ok, note = self.flood.admit(log.name, logging.INFO, template)
        if ok:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            log.info(template + note, client, why, unsent_bytes(self.transport))
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends a reset and drops the send queue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self._invalid_utf8(exc)
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_parser_exception(self) -> None:
        """The connection failed (message too big, invalid UTF-8, a protocol error):
        send the close frame, then read and drop what the peer still sends until
        it closes, for at most :data:`LINGER` seconds. uvicorn closes the socket at
        once: with the peer's data still unread the kernel sends a reset, which
        often destroys the close frame before the peer reads it (the peer sees
        1006, not 1009 or 1007)."""
        if self._lingering:
            return
        self._lingering = True
        close = self.conn.close_sent
        code = close.code if close is not None else CloseCode.INTERNAL
        reason = close.reason if close is not None else ""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # websockets' parser now discards input; the peer's EOF closes us sooner
        self.close_timer = self.loop.call_later(LINGER, self.transport.close)

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        template = "invalid UTF-8 in a text message client=%s at=%d code=%d; closed"
        ok, note = self.flood.admit(log.name, logging.WARNING, template)
        if ok:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            log.warning(template + note, client, exc.start, CloseCode.INVALID_DATA)
        try:
            self.conn.send_close(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
        except InvalidState:  # pragma: no cover - the peer's close came first
            self.transport.close()
            return
        self.handle_parser_exception()


def _takes_hand_off(app: Any) -> bool:
    """``app`` is unbroken's ASGI app, alone or under uvicorn's proxy-headers
    middleware (which rewrites the scope, then only awaits the app): it may hand its
    connection's serving over (:data:`RUN_EXTENSION`)."""
    if type(app) is ProxyHeadersMiddleware:
        app = app.app
    return getattr(type(app), "unbroken_hand_off", False) is True


def websocket_protocol(initial_max_size: int | None) -> type[UnbrokenWebSocketProtocol]:
    """:class:`UnbrokenWebSocketProtocol` starting each connection at ``initial_max_size``
    (with a log flood limiter of its own: one per server)."""
    return type(
        "UnbrokenWebSocket",
        (UnbrokenWebSocketProtocol,),
        {"initial_max_size": initial_max_size, "flood": FloodFilter(burst=10, interval=10.0)},
    )
