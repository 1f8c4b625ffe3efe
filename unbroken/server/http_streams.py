"""Plain Durable Streams byte and JSON streams: ``{base}/v1/stream/{path}``.

The write side of the Durable Streams protocol (create, append, close, head,
delete; idempotent producers; ``Stream-Seq``; TTL and absolute expiry; JSON mode)
for streams that are not agent answers. They live in their own namespace, held in
this process's memory (:class:`ByteStreams`), apart from the agent log: an agent
stream has one writer, its agent, and a chained digest no HTTP writer could
produce; a byte stream has any number of writers and no digest. Keeping them
apart means neither can forge or break the other. They are lost on restart
(documented in docs/reference/http-streams.md).

A stream belongs to the principal that created it; another principal's stream
answers 404, as an unknown one does. Offsets are ``{n:016d}``: the byte count
(the message count in JSON mode) before the position, zero-padded so they sort.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from urllib.parse import quote

import msgspec

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

_OFFSET: Final = re.compile(r"^0{16}_([0-9]{16})$")
_TTL: Final = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_INT: Final = re.compile(r"^(0|[1-9][0-9]{0,15})$")
_MAX_INT: Final = 2**53 - 1
#: The largest request body accepted (a bigger one is 413).
MAX_BODY: Final = 16 * 1024 * 1024
#: All byte streams of a namespace hold at most this much (then 429).
MAX_TOTAL: Final = 256 * 1024 * 1024
#: The most a catch-up answer carries (more follows in the next request).
CATCHUP_BYTES: Final = 1024 * 1024
SSE_BYTES: Final = 64 * 1024
_DEFAULT_TYPE: Final = "application/octet-stream"


def _offset(n: int) -> str:
    return f"{0:016d}_{n:016d}"


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


@dataclass(slots=True)
class _Producer:
    epoch: int
    seq: int


@dataclass(slots=True)
class ByteStream:
    """One stream of the namespace."""

    owner: str
    uid: str
    content_type: str
    media: str
    ttl: int | None
    expires_raw: str | None
    expires_at: float | None
    touched: float
    closed: bool = False
    data: bytearray = field(default_factory=bytearray)
    msgs: list[bytes] = field(default_factory=list)
    seq: str | None = None
    producers: dict[str, _Producer] = field(default_factory=dict)
    closed_by: tuple[str, int, int] | None = None
    waiters: set[Changes] = field(default_factory=set)
    #: the position after each append (a fork's sub-offset may not cross one)
    bounds: list[int] = field(default_factory=list)
    #: a fork's source (path and stream), and the request that made it
    source: tuple[str, ByteStream] | None = None
    fork_request: tuple[str, int | None, int] | None = None
    #: forks reading this stream's data; deleted with forks left: soft-deleted (410)
    forks: int = 0
    deleted: bool = False
    #: bytes held (data, or the messages' encodings)
    size: int = 0

    @property
    def json(self) -> bool:
        return self.media == "application/json"

    @property
    def text(self) -> bool:
        return self.json or self.media.startswith("text/")

    @property
    def tail(self) -> int:
        return len(self.msgs) if self.json else len(self.data)

    def expired(self, now: float) -> bool:
        if self.expires_at is not None and now >= self.expires_at:
            return True
        return self.ttl is not None and now >= self.touched + self.ttl

    def notify(self) -> None:
        for w in self.waiters:
            w.fire()

    def slice(self, start: int, limit: int) -> tuple[bytes, int]:
        """The body from position ``start`` (JSON: an array) and the position after it."""
        if self.json:
            end, size = start, 0
            while end < len(self.msgs) and (size == 0 or size + len(self.msgs[end]) <= limit):
                size += len(self.msgs[end]) + 1
                end += 1
            return b"[" + b",".join(self.msgs[start:end]) + b"]", end
        end = min(len(self.data), start + limit)
        return bytes(self.data[start:end]), end


def _messages(body: bytes, *, creating: bool) -> list[bytes]:
    """The messages of a JSON-mode body: an array is flattened one level."""
    try:
        value = msgspec.json.decode(body)
        if isinstance(value, list):
            if not value and not creating:
                raise _HttpRefusal(400, "an empty JSON array appends nothing")
            return [msgspec.json.encode(v) for v in value]
        return [msgspec.json.encode(value)]
    except msgspec.DecodeError:
        raise _HttpRefusal(400, "the body is not valid JSON") from None
    except RecursionError:  # nested deeper than the decoder (or encoder) goes
        raise _HttpRefusal(400, "the body's JSON is nested too deeply") from None


class ByteStreams:
    """An in-memory namespace of Durable Streams byte and JSON streams."""

    def __init__(
        self,
        *,
        long_poll_timeout: float = 15.0,
        sse_max_duration: float = 60.0,
        max_body: int = MAX_BODY,
        max_total: int = MAX_TOTAL,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.max_total = max_total
        #: bytes held by all streams (soft-deleted ones included)
        self.total = 0
        #: False once the server drains: open SSE responses end (clients reconnect)
        self.accepting = accepting
        self.streams: dict[str, ByteStream] = {}
        self.long_poll_timeout = long_poll_timeout
        self.sse_max_duration = sse_max_duration
        self.max_body = max_body

    # ------------------------------------------------------------ lookup
    def _lookup(self, path: str) -> ByteStream | None:
        """The stream at ``path`` (soft-deleted ones too); an expired one is removed."""
        s = self.streams.get(path)
        if s is not None and not s.deleted and s.expired(time.time()):
            self._remove(path, s)
            s = self.streams.get(path)
            if s is not None and s.deleted:
                return None  # expired with forks left: gone for direct access
        return s

    def _get(self, path: str, principal: Principal) -> ByteStream:
        s = self._lookup(path)
        if s is None or s.owner != principal.id:
            raise _HttpRefusal(404, "no such stream")
        if s.deleted:
            raise _HttpRefusal(410, "the stream was deleted")
        return s

    def _room(self, size: int) -> None:
        """Refuse (429) ``size`` more bytes when the namespace is full, after
        dropping every expired stream."""
        if self.total + size <= self.max_total:
            return
        now = time.time()
        for path, s in list(self.streams.items()):
            if not s.deleted and s.expired(now):
                self._remove(path, s)
        if self.total + size > self.max_total:
            log.warning(
                "byte streams full total=%d max_total=%d refused=%d",
                self.total,
                self.max_total,
                size,
            )
            raise _HttpRefusal(429, "the server's byte streams are full", [(b"retry-after", b"1")])

    def _remove(self, path: str, s: ByteStream) -> None:
        """Delete ``s``: soft while forks read it, else for good, releasing its
        source (which goes too when it was soft-deleted and this was its last fork)."""
        s.notify()
        if s.forks > 0:
            s.deleted = True
            return
        if self.streams.get(path) is s:
            del self.streams[path]
            self.total -= s.size
        if s.source is not None:
            src_path, src = s.source
            s.source = None
            src.forks -= 1
            if src.deleted and src.forks == 0:
                self._remove(src_path, src)

    async def handle(self, request: Request, path: str, principal: Principal) -> None:
        """Answer one request for stream ``path``."""
        if not path or len(path) > 1024:
            raise _HttpRefusal(404, "no such stream")
        method = request.method
        if method == "PUT":
            await self._create(request, path, principal)
        elif method == "POST":
            await self._append(request, path, principal)
        elif method == "DELETE":
            s = self._get(path, principal)
            self._remove(path, s)
            await request.respond(204, b"", None, None)
        elif method == "HEAD":
            s = self._get(path, principal)
            headers = [(b"cache-control", b"no-store"), *self._meta(s)]
            await request.respond(200, b"", headers, s.content_type.encode(), head=True)
        elif method == "GET":
            await self._read(request, path, principal)
        else:
            raise _HttpRefusal(
                405, "method not allowed", [(b"allow", b"GET, HEAD, POST, PUT, DELETE")]
            )

    @staticmethod
    def _meta(s: ByteStream) -> list[Header]:
        out: list[Header] = [(b"stream-next-offset", _offset(s.tail).encode())]
        if s.ttl is not None:
            out.append((b"stream-ttl", str(s.ttl).encode()))
        if s.expires_raw is not None:
            out.append((b"stream-expires-at", s.expires_raw.encode()))
        if s.closed:
            out.append((b"stream-closed", b"true"))
        return out

    # ------------------------------------------------------------ create
    async def _create(self, request: Request, path: str, principal: Principal) -> None:
        h = request.headers
        ttl_raw, exp_raw = h.get("stream-ttl"), h.get("stream-expires-at")
        if ttl_raw is not None and exp_raw is not None:
            raise _HttpRefusal(400, "give Stream-TTL or Stream-Expires-At, not both")
        ttl: int | None = None
        if ttl_raw is not None:
            if not _TTL.match(ttl_raw.strip()):
                raise _HttpRefusal(400, "Stream-TTL must be a non-negative integer of seconds")
            ttl = int(ttl_raw)
        expires_at: float | None = None
        if exp_raw is not None:
            exp_raw = exp_raw.strip()
            try:
                parsed = datetime.fromisoformat(
                    exp_raw.replace("Z", "+00:00").replace("z", "+00:00")
                )
            except ValueError:
                raise _HttpRefusal(400, "Stream-Expires-At must be an RFC 3339 timestamp") from None
            if parsed.tzinfo is None or "T" not in exp_raw.upper():
                raise _HttpRefusal(400, "Stream-Expires-At must be an RFC 3339 timestamp")
            expires_at = parsed.timestamp()
        content_type = (h.get("content-type") or "").strip() or _DEFAULT_TYPE
        closed = _true(h.get("stream-closed"))
        fork = self._fork_request(h)
        source: ByteStream | None = None
        point = 0
        if fork is not None:
            source, point = self._fork_source(fork, principal)
            given = h.get("content-type")
            if given is not None and given.strip() and _media(given) != source.media:
                raise _HttpRefusal(409, f"the source's content type is {source.content_type}")
            content_type = source.content_type
            if ttl is None and expires_at is None:  # inherit the source's expiry
                ttl, exp_raw, expires_at = source.ttl, source.expires_raw, source.expires_at
        body = await request.body(self.max_body)
        now = time.time()
        existing = self._lookup(path)
        if existing is not None and existing.deleted:
            raise _HttpRefusal(409, "a deleted stream still read by forks holds this URL")
        if existing is not None:
            if existing.owner != principal.id:
                raise _HttpRefusal(409, "a stream exists at this URL")
            same = (
                existing.media == _media(content_type)
                and existing.ttl == ttl
                and existing.expires_at == expires_at
                and existing.closed == closed
                and existing.fork_request == fork
            )
            if not same:
                raise _HttpRefusal(409, "the stream exists with another configuration")
            await request.respond(200, b"", self._meta(existing), existing.content_type.encode())
            return
        s = ByteStream(
            owner=principal.id,
            uid=secrets.token_hex(8),
            content_type=content_type,
            media=_media(content_type),
            ttl=ttl,
            expires_raw=exp_raw,
            expires_at=expires_at,
            touched=now,
        )
        msgs = _messages(body, creating=True) if body and s.json else []
        inherited = 0
        if source is not None:
            inherited = sum(map(len, source.msgs[:point])) if source.json else point
        self._room(inherited + len(body))
        if source is not None and fork is not None:
            if source.json:
                s.msgs.extend(source.msgs[:point])
            else:
                s.data += source.data[:point]
            s.bounds = [b for b in source.bounds if b < point] + ([point] if point else [])
            s.source, s.fork_request = (fork[0], source), fork
            source.forks += 1
        if body:
            if s.json:
                s.msgs.extend(msgs)
            else:
                s.data += body
            s.bounds.append(s.tail)
        s.closed = closed
        s.size = sum(map(len, s.msgs)) if s.json else len(s.data)
        self.total += s.size
        self.streams[path] = s
        log.info("byte stream created path=%s type=%s bytes=%d", path[:200], s.media, len(body))
        scheme = request.scope.get("scheme", "http")
        host = request.headers.get("host", "localhost")
        root = request.scope.get("root_path", "")
        # the path percent-encoded as a URI's (RFC 3986 pchar and "/" left as they are):
        # a raw control character is not a valid header value (h11 refuses the answer)
        # and a non-Latin-1 one would not survive the header's encoding
        where = quote(path, safe="/:@!$&'()*+,;=-._~")
        location = f"{scheme}://{host}{root}/v1/stream/{where}".encode("latin-1", "replace")
        await request.respond(
            201, b"", [(b"location", location), *self._meta(s)], content_type.encode()
        )

    @staticmethod
    def _fork_request(h: dict[str, str]) -> tuple[str, int | None, int] | None:
        """``(source path, offset or None, sub-offset)`` of a fork's ``PUT``, or None."""
        src = h.get("stream-forked-from")
        sub_raw = h.get("stream-fork-sub-offset")
        off_raw = h.get("stream-fork-offset")
        if src is None:
            if sub_raw is not None or off_raw is not None:
                raise _HttpRefusal(400, "Stream-Fork-Offset/Sub-Offset need Stream-Forked-From")
            return None
        marker = src.find("/v1/stream/")
        name = src[marker + len("/v1/stream/") :] if marker >= 0 else src.lstrip("/")
        sub = 0
        if sub_raw is not None:
            if not _INT.match(sub_raw.strip()):
                raise _HttpRefusal(400, "Stream-Fork-Sub-Offset must be a non-negative integer")
            sub = int(sub_raw)
        offset: int | None = None
        if off_raw is not None:
            m = _OFFSET.match(off_raw.strip())
            if m is None:
                raise _HttpRefusal(400, "malformed Stream-Fork-Offset")
            offset = int(m.group(1))
        elif sub:
            raise _HttpRefusal(400, "a sub-offset needs Stream-Fork-Offset")
        return name, offset, sub

    def _fork_source(
        self, fork: tuple[str, int | None, int], principal: Principal
    ) -> tuple[ByteStream, int]:
        """The source stream of a fork and the position the fork ends its inherited data."""
        name, offset, sub = fork
        source = self._lookup(name)
        if source is None or source.owner != principal.id:
            raise _HttpRefusal(404, "no such source stream")
        if source.deleted:
            raise _HttpRefusal(409, "the source stream was deleted")
        anchor = source.tail if offset is None else offset
        if anchor > source.tail:
            raise _HttpRefusal(400, "Stream-Fork-Offset is past the source's tail")
        if sub:
            following = [b for b in source.bounds if b > anchor]
            if not following or anchor + sub > following[0]:
                raise _HttpRefusal(400, "Stream-Fork-Sub-Offset crosses the next append's end")
        return source, anchor + sub

    # ------------------------------------------------------------ append
    async def _append(self, request: Request, path: str, principal: Principal) -> None:
        h = request.headers
        s = self._get(path, principal)
        close = _true(h.get("stream-closed"))
        names = ("producer-id", "producer-epoch", "producer-seq")
        given = [h.get(n) for n in names]
        producer: tuple[str, int, int] | None = None
        if any(v is not None for v in given):
            pid, epoch_raw, seq_raw = given
            if pid is None or epoch_raw is None or seq_raw is None:
                raise _HttpRefusal(400, "Producer-Id, Producer-Epoch and Producer-Seq go together")
            if not pid.strip():
                raise _HttpRefusal(400, "Producer-Id must not be empty")
            for raw in (epoch_raw, seq_raw):
                if not _INT.match(raw.strip()) or int(raw) > _MAX_INT:
                    raise _HttpRefusal(
                        400, "Producer-Epoch and Producer-Seq are integers 0..2^53-1"
                    )
            producer = (pid, int(epoch_raw), int(seq_raw))
        body = await request.body(self.max_body)
        s = self._get(path, principal)  # it may have gone while the body came
        if s.closed:
            if producer is not None and s.closed_by == producer:
                await self._producer_ok(request, s, 204, producer[1], producer[2])
                return
            if close and not body:
                await request.respond(204, b"", self._meta(s), None)
                return
            raise _HttpRefusal(409, "the stream is closed", self._meta(s))
        if not body and not close:
            raise _HttpRefusal(400, "an append needs a body (or Stream-Closed: true)")
        if body:
            ctype = h.get("content-type")
            if ctype is None or not ctype.strip():
                raise _HttpRefusal(400, "an append needs a Content-Type")
            if _media(ctype) != s.media:
                raise _HttpRefusal(409, f"the stream's content type is {s.content_type}")
        msgs = _messages(body, creating=False) if body and s.json else []
        stream_seq = h.get("stream-seq")
        state: _Producer | None = None
        if producer is not None:
            pid, epoch, seq = producer
            state = s.producers.get(pid)
            if state is not None and epoch < state.epoch:
                raise _HttpRefusal(
                    403, "stale producer epoch", [(b"producer-epoch", str(state.epoch).encode())]
                )
            if state is None or epoch > state.epoch:
                if seq != 0:
                    raise _HttpRefusal(400, "a new producer epoch starts at Producer-Seq 0")
            elif seq <= state.seq:
                await self._producer_ok(request, s, 204, epoch, state.seq)
                return
            elif seq > state.seq + 1:
                raise _HttpRefusal(
                    409,
                    "producer sequence gap",
                    [
                        (b"producer-expected-seq", str(state.seq + 1).encode()),
                        (b"producer-received-seq", str(seq).encode()),
                    ],
                )
        added = sum(map(len, msgs)) if s.json else len(body)
        self._room(added)
        if stream_seq is not None:
            if s.seq is not None and stream_seq.encode() <= s.seq.encode():
                raise _HttpRefusal(409, "Stream-Seq must increase")
            s.seq = stream_seq
        if producer is not None:
            s.producers[producer[0]] = _Producer(producer[1], producer[2])
        if s.json:
            s.msgs.extend(msgs)
        else:
            s.data += body
        s.size += added
        self.total += added
        if body:
            s.bounds.append(s.tail)
        if close:
            s.closed = True
            s.closed_by = producer
        s.touched = time.time()
        s.notify()
        if producer is not None:
            status = 200 if body else 204  # a close-only request appends nothing
            await self._producer_ok(request, s, status, producer[1], producer[2])
        else:
            await request.respond(204, b"", self._meta(s), None)

    async def _producer_ok(
        self, request: Request, s: ByteStream, status: int, epoch: int, seq: int
    ) -> None:
        headers = [
            *self._meta(s),
            (b"producer-epoch", str(epoch).encode()),
            (b"producer-seq", str(seq).encode()),
        ]
        await request.respond(status, b"", headers, None)

    # ------------------------------------------------------------ read
    def _start(self, s: ByteStream, raw: str | None) -> int:
        if raw is None or raw == "-1":
            return 0
        if raw == "now":
            return s.tail
        m = _OFFSET.match(raw)
        if m is None:
            raise _HttpRefusal(
                400, "malformed offset: expected -1, now or an offset the server gave"
            )
        n = int(m.group(1))
        if n > s.tail:
            raise _HttpRefusal(400, "the offset is past the stream's tail")
        return n

    async def _read(self, request: Request, path: str, principal: Principal) -> None:
        s = self._get(path, principal)
        live = request.param("live")
        if live not in (None, "long-poll", "sse"):
            raise _HttpRefusal(400, "live must be long-poll or sse")
        raw = request.param("offset")
        if live == "sse" and request.headers.get("last-event-id"):
            raw = request.headers["last-event-id"]
        if raw is None and live is not None:
            raise _HttpRefusal(400, f"live={live} needs an offset")
        start = self._start(s, raw)
        s.touched = time.time()
        if live == "sse":
            await self._sse(request, path, s, start)
            return
        if raw == "now" and live is None:
            headers = [
                (b"stream-next-offset", _offset(start).encode()),
                (b"stream-up-to-date", b"true"),
                (b"cache-control", b"no-store"),
            ]
            if s.closed:
                headers.append((b"stream-closed", b"true"))
            await request.respond(200, b"[]" if s.json else b"", headers, s.content_type.encode())
            return
        if start >= s.tail and live == "long-poll" and not s.closed:
            s = await self._wait(request, path, s, start)
        if start >= s.tail and live == "long-poll":
            headers = [
                (b"stream-next-offset", _offset(s.tail).encode()),
                (b"stream-up-to-date", b"true"),
                (b"cache-control", b"no-store"),
            ]
            if s.closed:
                headers.append((b"stream-closed", b"true"))
            else:
                headers.append(
                    (b"stream-cursor", cursor(time.time(), request.param("cursor")).encode())
                )
            await request.respond(204, b"", headers, None)
            return
        body, end = s.slice(start, CATCHUP_BYTES)
        closed = s.closed and end >= s.tail
        headers = [
            (b"stream-next-offset", _offset(end).encode()),
            (b"cache-control", b"private, max-age=60, stale-while-revalidate=300"),
        ]
        if end >= s.tail:
            headers.append((b"stream-up-to-date", b"true"))
        if closed:
            headers.append((b"stream-closed", b"true"))
        if live == "long-poll" and not closed:
            headers.append(
                (b"stream-cursor", cursor(time.time(), request.param("cursor")).encode())
            )
        etag = f'"{s.uid}:{start}:{end}{":c" if closed else ""}"'
        headers.append((b"etag", etag.encode()))
        if request.headers.get("if-none-match") == etag:
            await request.respond(304, b"", headers, None)
            return
        await request.respond(200, body, headers, s.content_type.encode())

    async def _wait(self, request: Request, path: str, s: ByteStream, start: int) -> ByteStream:
        changes = Changes()
        s.waiters.add(changes)
        disconnect = asyncio.ensure_future(request.wait_disconnect())
        try:
            await changes.wait(disconnect, self.long_poll_timeout)
        finally:
            s.waiters.discard(changes)
            disconnect.cancel()
        if self.streams.get(path) is not s or s.deleted:
            raise _HttpRefusal(404, "no such stream")
        return s

    async def _sse(self, request: Request, path: str, s: ByteStream, pos: int) -> None:
        changes = Changes()
        s.waiters.add(changes)
        disconnect = asyncio.ensure_future(request.wait_disconnect())
        loop = asyncio.get_running_loop()
        send = request.send
        headers = [*SSE_HEADERS, *SECURITY, *request.cors]
        if not s.text:
            headers.append((b"stream-sse-data-encoding", b"base64"))
        client_cursor = request.param("cursor")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            started = loop.time()
            first = True
            while not disconnect.done():
                if self.streams.get(path) is not s or s.deleted:
                    break
                sent = False
                out = b""  # a data event goes out with its control event, in one write
                if pos < s.tail:
                    body, end = s.slice(pos, SSE_BYTES)
                    if s.text:
                        text = body.decode("utf-8", "replace")
                    else:
                        text = base64.b64encode(body).decode()
                    pos = end
                    sent = True
                    out = sse_event("data", text)
                closed = s.closed and pos >= s.tail
                if sent or first or closed:
                    first = False
                    control: dict[str, object] = {"streamNextOffset": _offset(pos)}
                    if closed:
                        control["streamClosed"] = True
                        control["upToDate"] = True
                    else:
                        control["streamCursor"] = client_cursor = cursor(time.time(), client_cursor)
                        if pos >= s.tail:
                            control["upToDate"] = True
                    encoded = msgspec.json.encode(control).decode()
                    out += sse_event("control", encoded, _offset(pos))
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if closed:
                    break
                if sent:
                    continue
                left = self.sse_max_duration - (loop.time() - started)
                if left <= 0 or not self.accepting():
                    break
                if not await changes.wait(disconnect, min(left, 1.0)) and not disconnect.done():
                    await send(
                        {"type": "http.response.body", "body": b": hb\n\n", "more_body": True}
                    )
        finally:
            s.waiters.discard(changes)
            disconnect.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
