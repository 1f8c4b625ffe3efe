"""Agent streams over HTTP: the Durable Streams read path on unbroken's log.

``GET {base}/v1/agent/{stream}`` reads an agent answer (started over WebSocket or
any other way) from the same store the WebSocket path reads (memory or Redis), in
the Durable Streams modes: catch-up, ``live=long-poll`` and ``live=sse``. The stream
is a JSON-mode stream (``application/json``) whose messages are the log's event
*items*, exactly as in a WebSocket ``events`` frame (:mod:`unbroken.protocol.items`):
every answer's array decodes on its own, its first event being the one after the
requested offset.

Offsets are opaque to Durable Streams clients and documented for unbroken's:
``{seq:016d}_{digest}``, the event count read so far (zero-padded, so offsets sort
lexicographically) and the hex BLAKE2b-128 chain digest after it. ``-1`` (or no
offset) is the start and ``now`` the current head. A request's offset is checked
against the log as a WebSocket ``resume`` is: a digest that differs is ``410``
(``Unbroken-Gone: diverged``), a seq past the head too, one no longer held ``410
expired``. The last offset of a finished stream carries the final digest; its
``end`` item the status and event count; ``Unbroken-Epoch`` gives the storage
generation from which ``h_0`` is derived. A reader chains the items from its own
offset's digest and compares with each answer's ``Stream-Next-Offset``: exact
end to end.

Only the stream's owner reads it (the rule of a WebSocket resume); an unknown or
another principal's stream is the same ``404``. The stream is written only by its
agent: ``PUT``, ``POST`` and ``DELETE`` are ``405``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Final

import msgspec

from ..protocol.digest import seed
from ..protocol.events import Kind
from ..store.base import StreamLog
from .agent import Principal
from .http_common import (
    SECURITY,
    SSE_HEADERS,
    Changes,
    Header,
    Request,
    _HttpRefusal,
    cursor,
    sse_event,
)

log = logging.getLogger(__name__)

_OFFSET: Final = re.compile(r"^([0-9]{16})_([0-9a-f]{32})$")
_JSON: Final = b"application/json"
#: The longest a catch-up answer grows (more follows in the next request).
CATCHUP_BYTES: Final = 4 * 1024 * 1024
#: An SSE data event's largest batch.
SSE_BYTES: Final = 64 * 1024


def format_offset(seq: int, digest: bytes) -> str:
    """The Durable Streams offset of the position after event ``seq``."""
    return f"{seq:016d}_{digest.hex()}"


def parse_offset(value: str) -> tuple[int, bytes]:
    """``(seq, digest)`` of an offset made by :func:`format_offset`; else a 400."""
    m = _OFFSET.match(value)
    if m is None:
        raise _HttpRefusal(400, "malformed offset: expected -1, now or an offset the server gave")
    return int(m.group(1)), bytes.fromhex(m.group(2))


def _gone(reason: str, message: str) -> _HttpRefusal:
    return _HttpRefusal(410, message, [(b"unbroken-gone", reason.encode())])


class AgentStreams:
    """The read-only HTTP face of a :class:`StreamLog`'s agent streams."""

    def __init__(
        self,
        store: StreamLog,
        *,
        long_poll_timeout: float = 15.0,
        sse_heartbeat: float = 1.0,
        sse_max_duration: float = 60.0,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        #: False once the server drains: open SSE responses end (clients reconnect)
        self.accepting = accepting
        self.long_poll_timeout = long_poll_timeout
        self.sse_heartbeat = sse_heartbeat
        self.sse_max_duration = sse_max_duration

    async def handle(self, request: Request, stream: str, principal: Principal) -> None:
        """Answer one request for agent stream ``stream``."""
        if request.method not in ("GET", "HEAD"):
            raise _HttpRefusal(
                405, "agent streams are written by their agent only", [(b"allow", b"GET, HEAD")]
            )
        meta = await self.store.meta(stream)
        if meta is None or meta.owner != principal.id:
            if meta is None and await self.store.tombstone(stream) == principal.id:
                raise _gone("expired", "the stream's retention ended")
            raise _HttpRefusal(404, "no such stream")
        epoch = self.store.epoch
        base: list[Header] = [
            (b"unbroken-epoch", epoch.encode()),
            (b"cache-control", b"no-store"),
        ]
        if request.method == "HEAD":
            headers = [*base, *self._tail(meta.head, meta.digest, meta.status)]
            await request.respond(200, b"", headers, _JSON, head=True)
            return
        live = request.param("live")
        if live not in (None, "long-poll", "sse"):
            raise _HttpRefusal(400, "live must be long-poll or sse")
        raw = request.param("offset")
        if live == "sse":
            resume = request.headers.get("last-event-id")
            if resume:
                raw = resume  # an EventSource reconnecting: its last control event's id
        if raw is None and live is not None:
            raise _HttpRefusal(400, f"live={live} needs an offset")
        if raw is None or raw == "-1":
            after, digest = 0, seed(stream, epoch)
        elif raw == "now":
            after, digest = meta.head, meta.digest
        else:
            after, digest = parse_offset(raw)
            if after > meta.head:
                raise _gone("diverged", f"offset at seq {after}, the log's head is {meta.head}")
            held = await self.store.digest_at(stream, after)
            if held is None:
                raise _gone("expired", f"the digest at seq {after} is no longer held")
            if held != digest:
                raise _gone("diverged", f"the digest at seq {after} differs from the log")
        base.append((b"unbroken-status", meta.status.encode()))
        if live == "sse":
            await self._sse(request, stream, after, digest, raw == "now", base)
        else:
            await self._poll(
                request, stream, after, digest, live == "long-poll", raw == "now", base
            )

    @staticmethod
    def _tail(head: int, digest: bytes, status: str) -> list[Header]:
        out = [(b"stream-next-offset", format_offset(head, digest).encode())]
        if status != "running":
            out.append((b"stream-closed", b"true"))
        return out

    async def _read(self, stream: str, after: int, limit: int) -> tuple[bytes, int, bytes, bool]:
        """``(items, last seq, digest, ended)`` after ``after`` (items ``b""``: none)."""
        batch = await self.store.read(stream, after, limit)
        if batch is None or batch.count == 0:
            return b"", after, b"", False
        return batch.items, batch.first + batch.count - 1, batch.digest, batch.last_kind == Kind.END

    async def _poll(
        self,
        request: Request,
        stream: str,
        after: int,
        digest: bytes,
        long_poll: bool,
        now_: bool,
        base: list[Header],
    ) -> None:
        items, last, new_digest, ended = (b"", after, b"", False)
        if not now_:
            items, last, new_digest, ended = await self._read(stream, after, CATCHUP_BYTES)
        if not items:
            meta = await self.store.meta(stream)
            closed = meta is None or meta.status != "running"
            if long_poll and not closed:
                items, last, new_digest, ended, closed = await self._wait(request, stream, after)
            if not items:
                headers = [
                    *base,
                    (b"stream-next-offset", format_offset(after, digest).encode()),
                    (b"stream-up-to-date", b"true"),
                ]
                if closed:
                    headers.append((b"stream-closed", b"true"))
                if long_poll:
                    if not closed:
                        headers.append(
                            (
                                b"stream-cursor",
                                cursor(time.time(), request.param("cursor")).encode(),
                            )
                        )
                    await request.respond(204, b"", headers, None)
                else:
                    await self._answer(request, b"[]", after, after, closed, headers)
                return
        meta = await self.store.meta(stream)
        head = meta.head if meta is not None else last
        headers = [*base, (b"stream-next-offset", format_offset(last, new_digest).encode())]
        if last >= head:
            headers.append((b"stream-up-to-date", b"true"))
        if ended:
            headers.append((b"stream-closed", b"true"))
        elif long_poll:
            headers.append(
                (b"stream-cursor", cursor(time.time(), request.param("cursor")).encode())
            )
        await self._answer(request, items, after, last, ended, headers)

    async def _answer(
        self,
        request: Request,
        body: bytes,
        after: int,
        last: int,
        closed: bool,
        headers: list[Header],
    ) -> None:
        etag = f'"{request.path.rsplit("/", 1)[-1]}:{after}:{last}{":c" if closed else ""}"'
        headers.append((b"etag", etag.encode()))
        if request.headers.get("if-none-match") == etag:
            await request.respond(304, b"", headers, None)
            return
        await request.respond(200, body, headers, _JSON)

    async def _wait(
        self, request: Request, stream: str, after: int
    ) -> tuple[bytes, int, bytes, bool, bool]:
        """Long-poll: wait for events after ``after`` until the timeout."""
        changes = Changes()
        unsubscribe = self.store.subscribe(stream, changes.fire)
        disconnect = asyncio.ensure_future(request.wait_disconnect())
        try:
            deadline = asyncio.get_running_loop().time() + self.long_poll_timeout
            while True:
                items, last, digest, ended = await self._read(stream, after, CATCHUP_BYTES)
                if items:
                    return items, last, digest, ended, ended
                meta = await self.store.meta(stream)
                if meta is None or changes.dropped:
                    raise _gone("expired", "the stream's retention ended")
                if meta.status != "running":
                    return b"", after, b"", False, True
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 or disconnect.done():
                    return b"", after, b"", False, False
                await changes.wait(disconnect, left)
        finally:
            unsubscribe()
            disconnect.cancel()

    async def _sse(
        self,
        request: Request,
        stream: str,
        after: int,
        digest: bytes,
        now_: bool,
        base: list[Header],
    ) -> None:
        changes = Changes()
        unsubscribe = self.store.subscribe(stream, changes.fire)
        disconnect = asyncio.ensure_future(request.wait_disconnect())
        loop = asyncio.get_running_loop()
        send = request.send
        sent = 0
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*SSE_HEADERS, *base[:1], *SECURITY, *request.cors],
                }
            )
            started = loop.time()
            first = True
            client_cursor = request.param("cursor")
            while not disconnect.done():
                items, last, new_digest, _ = await self._read(stream, after, SSE_BYTES)
                out = b""  # a data event goes out with its control event, in one write
                if items:
                    after, digest = last, new_digest
                    sent += 1
                    out = sse_event("data", items.decode())
                meta = await self.store.meta(stream)
                if meta is None or changes.dropped:
                    log.info("sse stream=%s dropped by retention at seq=%d", stream, after)
                    break
                closed = meta.status != "running" and after >= meta.head
                if items or first or closed:
                    first = False
                    control: dict[str, object] = {"streamNextOffset": format_offset(after, digest)}
                    if closed:
                        control["streamClosed"] = True
                        control["upToDate"] = True
                    else:
                        control["streamCursor"] = client_cursor = cursor(time.time(), client_cursor)
                        if after >= meta.head:
                            control["upToDate"] = True
                    out += _control(control, format_offset(after, digest))
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if closed:
                    break
                if items and after < meta.head:
                    continue  # more is waiting: read it before sleeping
                # caught up: an append after this point has set the change signal
                if loop.time() - started >= self.sse_max_duration or not self.accepting():
                    break  # the client reconnects from its offset (§5.8)
                if not await changes.wait(disconnect, self.sse_heartbeat) and not disconnect.done():
                    await send(
                        {"type": "http.response.body", "body": b": hb\n\n", "more_body": True}
                    )
        finally:
            unsubscribe()
            disconnect.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            log.info(
                "sse done client=%s stream=%s seq=%d batches=%d",
                request.client,
                stream,
                after,
                sent,
            )


def _control(control: dict[str, object], event_id: str) -> bytes:
    return sse_event("control", msgspec.json.encode(control).decode(), event_id)
