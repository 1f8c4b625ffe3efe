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

Use it through :func:`unbroken.server.serving.uvicorn_config`, which builds the
class with the limits of an app (:func:`websocket_protocol`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ..protocol.codes import CloseCode
from .logfilter import FloodFilter

log = logging.getLogger(__name__)

#: The ASGI scope extension holding the size setter (``Callable[[int], None]``).
MAX_SIZE_EXTENSION = "unbroken.max_size"


class UnbrokenWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module doc. ``initial_max_size`` is the limit before the app moves
    it (``None``: uvicorn's ``ws_max_size``)."""

    initial_max_size: ClassVar[int | None] = None
    flood: ClassVar[FloodFilter] = FloodFilter(burst=10, interval=10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        template = "invalid UTF-8 in a text message client=%s at=%d code=%d; closed"
        ok, note = self.flood.admit(log.name, logging.WARNING, template)
        if ok:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            log.warning(template + note, client, exc.start, CloseCode.INVALID_DATA)
        self.conn.send_close(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
        self.handle_parser_exception()


def websocket_protocol(initial_max_size: int | None) -> type[UnbrokenWebSocketProtocol]:
    """:class:`UnbrokenWebSocketProtocol` starting each connection at ``initial_max_size``."""
    return type(
        "UnbrokenWebSocket",
        (UnbrokenWebSocketProtocol,),
        {"initial_max_size": initial_max_size},
    )
