"""Read an agent answer over plain HTTP (SSE or long-poll), resumed and verified.

The WebSocket :class:`~unbroken.client.Client` is the main client; this reader is
for where WebSockets do not pass (some proxies, serverless front doors) or where
an answer is only read, never started. It reads ``{base}/v1/agent/{stream}`` (see
docs/reference/http-streams.md), reconnects from its last verified offset after any
cut (the offset carries the seq and the chain digest, so the server checks the
resume point as a WebSocket resume does), and verifies every answer: it chains the
events it got from its own digest and compares with the digest in the server's
next offset. The end's offset carries the final digest. A dropped, duplicated or
altered event is :class:`~unbroken.errors.IntegrityError`, never a wrong answer.

>>> reader = HttpReader("http://127.0.0.1:8000", token="…")   # doctest: +SKIP
>>> async for event in reader.events(stream_id):               # doctest: +SKIP
...     print(event)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final, Literal

import httpx
import msgspec

from ..errors import (
    AuthError,
    ChainMismatch,
    IntegrityError,
    ProtocolError,
    ReconnectExhausted,
    StreamGone,
)
from ..protocol.backoff import BackoffPolicy
from ..protocol.digest import Chain
from ..protocol.events import Event, Kind
from ..protocol.items import Item, decode

log = logging.getLogger(__name__)

_OFFSET: Final = re.compile(r"^([0-9]{16})_([0-9a-f]{32})$")
_items: Final = msgspec.json.Decoder(list[Item])
_control: Final = msgspec.json.Decoder(dict[str, Any])
#: HTTP failures that end one attempt, not the read: the reader reconnects.
_RETRIABLE: Final = (httpx.TransportError, httpx.RemoteProtocolError, ConnectionError)


def parse_offset(value: str) -> tuple[int, bytes]:
    """``(seq, digest)`` of an agent-stream offset ``{seq:016d}_{hex digest}``."""
    m = _OFFSET.match(value)
    if m is None:
        raise ProtocolError(f"not an agent-stream offset: {value[:80]!r}")
    return int(m.group(1)), bytes.fromhex(m.group(2))


def format_offset(seq: int, digest: bytes) -> str:
    """The offset of the position after event ``seq`` whose chain digest is ``digest``."""
    return f"{seq:016d}_{digest.hex()}"


class HttpReader:
    """Reads agent streams from one server over HTTP.

    ``base`` is the URL the app is served at (``http://host:port``, or where it is
    mounted), ``token`` a bearer token for the app's ``authenticate`` hook.
    ``live="sse"`` (default) holds one SSE response open; ``"long-poll"`` asks again
    after each answer. ``silence`` seconds without a byte (the server sends an SSE
    comment every second) counts as a dead connection. ``backoff`` governs
    reconnects; its attempt count restarts after every verified batch.
    """

    def __init__(
        self,
        base: str,
        *,
        token: str | None = None,
        live: Literal["sse", "long-poll"] = "sse",
        silence: float = 3.0,
        backoff: BackoffPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.live = live
        self.backoff = backoff or BackoffPolicy(base=0.05, cap=2.0, max_attempts=20, deadline=60.0)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(10.0, read=silence)
        self._own = client is None
        self.http = client or httpx.AsyncClient(headers=headers, timeout=timeout)
        #: reconnects made by the last :meth:`events` call
        self.reconnects = 0
        #: the last verified offset (``None`` before anything was verified)
        self.offset: str | None = None
        #: the stream's final status once its end was read
        self.status: str | None = None
        self._first = "-1"
        self._part_kinds: dict[str, str] = {}

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> HttpReader:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    @property
    def digest(self) -> str | None:
        """The chain digest after the last verified event (the final one after the
        end), in hex like :attr:`Answer.digest <unbroken.client.Answer.digest>`."""
        return parse_offset(self.offset)[1].hex() if self.offset else None

    async def events(self, stream: str, offset: str = "-1") -> AsyncIterator[Event]:
        """Every event after ``offset`` to the end, each once, verified before it is
        yielded, across any number of reconnects.

        Raises :class:`StreamGone` (404: unknown or not yours; 410: expired,
        diverged), :class:`AuthError` (401/403), :class:`IntegrityError`, or
        :class:`ReconnectExhausted`.
        """
        chain: Chain | None = None
        self.offset = None
        if offset != "-1":
            seq, digest = parse_offset(offset)
            chain = Chain(digest, seq)
            self.offset = offset
        self.reconnects = 0
        self.status = None
        self._first = offset
        self._part_kinds = {}
        attempt = 0
        loop = asyncio.get_running_loop()
        lost_at: float | None = None
        last_error: BaseException | None = None
        while True:
            if attempt:
                self.reconnects += 1
                elapsed = loop.time() - (lost_at or loop.time())
                limit = self.backoff.max_attempts
                if (limit is not None and attempt >= limit) or (
                    self.backoff.deadline is not None and elapsed > self.backoff.deadline
                ):
                    raise ReconnectExhausted(attempt, elapsed, last_error)
                await asyncio.sleep(random.uniform(0, self.backoff.ceiling(attempt)))
            progressed = False
            try:
                attempt_iter = (
                    self._sse(stream, chain) if self.live == "sse" else self._poll(stream, chain)
                )
                # closed here, not by the garbage collector: its response goes back now
                async with contextlib.aclosing(attempt_iter):
                    async for verified, batch in attempt_iter:
                        chain = verified  # a reconnect goes on from here
                        progressed = True
                        attempt, lost_at = 0, None
                        for ev in batch:
                            yield ev
                        if self.status is not None:
                            return
                if self.status is not None:
                    return
                # a response that ended without the stream's end: reconnect at once
                attempt = 0 if progressed else attempt + 1
                continue
            except _RETRIABLE as exc:
                last_error = exc
                log.info("http reader lost stream=%s at offset=%s: %s", stream, self.offset, exc)
            except _Retry as exc:
                last_error = exc
                await asyncio.sleep(exc.after)
            if lost_at is None:
                lost_at = loop.time()
            attempt = 1 if progressed else attempt + 1

    def _url(self, stream: str) -> str:
        return f"{self.base}/v1/agent/{stream}"

    def _check(self, stream: str, response: httpx.Response) -> None:
        code = response.status_code
        if code in (200, 204):
            return
        if code == 404:
            raise StreamGone(stream, "unknown", "no such stream for this principal")
        if code == 410:
            reason = response.headers.get("unbroken-gone", "expired")
            if reason not in ("expired", "diverged", "epoch"):
                reason = "expired"
            raise StreamGone(stream, reason)
        if code in (401, 403):
            raise AuthError(f"HTTP {code}: {response.text.strip()[:200]}")
        if code in (429, 503) or code >= 500:
            after = response.headers.get("retry-after", "1")
            raise _Retry(float(after) if after.replace(".", "", 1).isdigit() else 1.0)
        raise ProtocolError(f"HTTP {code} from {response.url}: {response.text.strip()[:200]}")

    def _start(self, stream: str, chain: Chain | None, response: httpx.Response) -> Chain:
        if chain is not None:
            return chain
        epoch = response.headers.get("unbroken-epoch")
        if epoch is None:
            raise ProtocolError("the server sent no Unbroken-Epoch: not an unbroken agent stream")
        return Chain.of(stream, epoch)

    def _verify(
        self, stream: str, chain: Chain, data: bytes | str, next_offset: str
    ) -> list[Event]:
        """Chain the events of one answer's items; check the digest of ``next_offset``."""
        seq, digest = parse_offset(next_offset)
        try:
            events = decode(chain.seq + 1, _items.decode(data), self._part_kinds)
        except (msgspec.DecodeError, ProtocolError) as exc:
            raise IntegrityError(stream, chain.seq + 1, f"undecodable items: {exc}") from None
        if chain.seq + len(events) != seq:
            raise IntegrityError(
                stream, chain.seq, f"{len(events)} events do not reach the offset's seq {seq}"
            )
        try:
            chain.extend(events, digest)
        except ChainMismatch as exc:
            raise IntegrityError(stream, exc.seq, exc.detail) from None
        self.offset = next_offset
        if events and events[-1].kind == Kind.END:
            self.status = events[-1].status
        return events

    async def _sse(
        self, stream: str, chain: Chain | None
    ) -> AsyncGenerator[tuple[Chain, list[Event]], None]:
        # as an EventSource does: the same URL, and the last control event's id
        # (the last verified offset) in Last-Event-ID, which the server resumes from
        params = {"live": "sse", "offset": self._first}
        headers = {"last-event-id": self.offset} if self.offset else {}
        url = self._url(stream)
        async with self.http.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
            self._check(stream, response)
            chain = self._start(stream, chain, response)
            kind, data = "", []
            pending: str | None = None  # a data event's items, verified at its control
            async for line in response.aiter_lines():
                if line:
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
                    continue
                text = "\n".join(data)
                if kind == "data":
                    pending = text
                elif kind == "control":
                    control = _control.decode(text)
                    nxt = str(control["streamNextOffset"])
                    if pending is not None:
                        events = self._verify(stream, chain, pending, nxt)
                        pending = None
                        yield chain, events
                    elif parse_offset(nxt) != (chain.seq, chain.digest):
                        raise IntegrityError(stream, chain.seq, "control offset moved without data")
                    if control.get("streamClosed") and self.status is None:
                        self.status = "ended"
                kind, data = "", []

    async def _poll(
        self, stream: str, chain: Chain | None
    ) -> AsyncGenerator[tuple[Chain, list[Event]], None]:
        cursor: str | None = None
        while True:
            params = {"offset": self.offset or "-1", "live": "long-poll"}
            if cursor:
                params["cursor"] = cursor
            response = await self.http.get(self._url(stream), params=params)
            self._check(stream, response)
            chain = self._start(stream, chain, response)
            cursor = response.headers.get("stream-cursor", cursor)
            nxt = response.headers.get("stream-next-offset")
            if response.status_code == 200 and nxt is not None:
                events = self._verify(stream, chain, response.content, nxt)
                yield chain, events
            if response.headers.get("stream-closed") == "true" and self.status is None:
                self.status = "ended"
            if self.status is not None:
                return


class _Retry(Exception):
    """The server asked to come back later (429/503 with Retry-After)."""

    def __init__(self, after: float) -> None:
        super().__init__(f"retry after {after}s")
        self.after = min(max(after, 0.0), 30.0)


__all__ = ["HttpReader", "format_offset", "parse_offset"]
