"""Agent answers in the UI protocols front ends speak: the Vercel AI SDK UI message
stream and AG-UI events, both over SSE, both read from the stream's log.

``GET {base}/v1/ui/ai-sdk/{stream}`` is the answer as an AI SDK UI message stream
(``x-vercel-ai-ui-message-stream: v1``; ``data: {chunk}`` events, then ``data:
[DONE]``). ``GET {base}/v1/ui/ai-sdk/{stream}/stream`` is the same at the path
``useChat``'s ``reconnectToStream`` calls (``{api}/{chatId}/stream``): ``204`` once
the answer has ended (the SDK's "no active stream"), else the stream.
``GET {base}/v1/ui/ag-ui/{stream}`` is the answer as AG-UI events (``RUN_STARTED`` …
``RUN_FINISHED`` / ``RUN_ERROR``).

Every response begins with a **prelude**: the events already in the log, mapped and
then compacted (the deltas of each text, reasoning or tool-input part joined into
one), so a reconnecting front end rebuilds the message so far in a few chunks; the
live chunks follow as the agent appends. The mapping is one pure class per protocol
(:class:`AiSdkMapper`, :class:`AgUiMapper`), fed the log's events in order; the
log stays the only source of truth (nothing is stored here).

Auth, the owner check and the origin policy are those of the Durable Streams read
path (:mod:`unbroken.server.http_agent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ..protocol import items as wire
from ..protocol.events import Event, Kind
from ..protocol.items import Item
from ..protocol.roles import mime_params as mime_params
from ..protocol.roles import part_info
from ..store.base import StreamLog
from .agent import Principal
from .http_common import SECURITY, Changes, Header, Request, _HttpRefusal

log = logging.getLogger(__name__)

Chunk = dict[str, Any]

_items: Final = msgspec.json.Decoder(list[Item])
_encode: Final = msgspec.json.Encoder().encode
#: How much of the log one read takes (prelude and live).
READ_BYTES: Final = 256 * 1024
#: The AI SDK's response header for a UI message stream.
AI_SDK_HEADER: Final[Header] = (b"x-vercel-ai-ui-message-stream", b"v1")
_SSE: Final[list[Header]] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class _Part:
    """What a mapper remembers of one part."""

    id: str
    kind: str
    mime: str
    role: str = ""
    tool: str = ""  # a tool call's tool (only a call's: its input streams)
    call: str = ""
    name: str = ""  # what a data part is: ``data-<name>``
    body: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.body)

    def value(self) -> Any:
        """The part's value: parsed JSON for JSON parts and JSON data, else its text.
        Raises ``ValueError`` for a JSON part that does not parse."""
        if self.kind == "json" or "json" in self.mime.split(";")[0]:
            return json.loads(self.text)
        return self.text


def _new_part(ev: Event) -> _Part:
    info = part_info(ev.part, ev.part_kind, ev.mime)
    role = info.role
    if role == "tool-call" and ev.part_kind != "json":
        role = ""  # a call's input is JSON
    tool = (info.tool or "tool") if role == "tool-call" else ""
    return _Part(ev.part, ev.part_kind, ev.mime, role, tool, info.call, info.name or ev.part)


_FINISH: Final = {
    "stop": "stop",
    "end_turn": "stop",
    "completed": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool-calls",
    "tool_use": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
    "refusal": "content-filter",
}


class AiSdkMapper:
    """Log events → AI SDK UI message chunks (pure; one per response).

    Text parts → ``text-*`` (role ``reasoning``: ``reasoning-*``); tool calls (role
    ``tool-call``) → ``tool-input-start/-delta/-available`` (or ``-error``), their
    results (``tool-result``) → ``tool-output-available`` (or ``-error``);
    ``metadata`` → ``message-metadata``; other JSON and data parts → ``data-<name>``
    with the value at the part's end (base64 data: ``file``); the end →
    ``finish`` / ``abort`` / ``error``. Roles: :mod:`unbroken.protocol.roles`; the
    table: docs/reference/ui-protocols.md.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.parts: dict[str, _Part] = {}
        self.tool_calls: set[str] = set()
        self.finish_reason = ""
        self.ended = False

    def begin(self) -> list[Chunk]:
        return [{"type": "start", "messageId": self.stream}]

    def event(self, ev: Event) -> list[Chunk]:
        k = ev.kind
        if k == Kind.TEXT:
            p = self.parts.get(ev.part)
            if p is None or not ev.body:
                return []
            kind = "reasoning-delta" if p.role == "reasoning" else "text-delta"
            return [{"type": kind, "id": p.id, "delta": ev.body}]
        if k in (Kind.JSON, Kind.DATA):
            p = self.parts.get(ev.part)
            if p is None:
                return []
            p.body.append(ev.body)
            if p.tool and ev.body:
                return [
                    {"type": "tool-input-delta", "toolCallId": p.call, "inputTextDelta": ev.body}
                ]
            return []
        if k == Kind.PART_START:
            p = _new_part(ev)
            self.parts[p.id] = p
            if p.kind == "text":
                kind = "reasoning-start" if p.role == "reasoning" else "text-start"
                return [{"type": kind, "id": p.id}]
            if p.tool:
                self.tool_calls.add(p.call)
                return [{"type": "tool-input-start", "toolCallId": p.call, "toolName": p.tool}]
            return []
        if k == Kind.PART_END:
            p = self.parts.get(ev.part)
            return [] if p is None else self._end_part(p, ev.error)
        if k == Kind.END:
            self.ended = True
            if ev.status == "completed":
                out: Chunk = {"type": "finish"}
                if self.finish_reason:
                    out["finishReason"] = _FINISH.get(self.finish_reason, "other")
                return [out]
            if ev.status == "cancelled":
                return [{"type": "abort", "reason": ev.error or "cancelled"}]
            return [{"type": "error", "errorText": ev.error or f"the answer {ev.status}"}]
        return []

    def _end_part(self, p: _Part, error: str) -> list[Chunk]:
        if p.kind == "text":
            kind = "reasoning-end" if p.role == "reasoning" else "text-end"
            out: list[Chunk] = [{"type": kind, "id": p.id}]
            if error:
                out.append({"type": "data-part-error", "id": p.id, "data": {"error": error}})
            return out
        if p.tool:
            tid = p.call
            if not error:
                try:
                    return [
                        {
                            "type": "tool-input-available",
                            "toolCallId": tid,
                            "toolName": p.tool,
                            "input": p.value(),
                        }
                    ]
                except ValueError as exc:
                    error = f"invalid JSON: {exc}"
            return [
                {
                    "type": "tool-input-error",
                    "toolCallId": tid,
                    "toolName": p.tool,
                    "input": p.text,
                    "errorText": error,
                }
            ]
        if p.role == "tool-result" and p.call in self.tool_calls:
            tid = p.call
            if not error:
                try:
                    return [
                        {"type": "tool-output-available", "toolCallId": tid, "output": p.value()}
                    ]
                except ValueError:
                    return [{"type": "tool-output-available", "toolCallId": tid, "output": p.text}]
            return [{"type": "tool-output-error", "toolCallId": tid, "errorText": error}]
        if error:
            return [
                {"type": f"data-{p.name}", "id": p.id, "data": {"error": error, "partial": p.text}}
            ]
        if p.kind == "data" and p.mime.endswith(";base64"):
            media = p.mime[: -len(";base64")]
            return [{"type": "file", "url": f"data:{media};base64,{p.text}", "mediaType": media}]
        try:
            value = p.value()
        except ValueError:
            value = p.text
        if p.role == "metadata" and isinstance(value, dict):
            reason = value.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
            return [{"type": "message-metadata", "messageMetadata": value}]
        return [{"type": f"data-{p.name}", "id": p.id, "data": value}]


class AgUiMapper:
    """Log events → AG-UI events (pure; one per response).

    Text parts → ``TEXT_MESSAGE_*`` (role ``reasoning``: ``REASONING_*``); tool calls
    → ``TOOL_CALL_START/ARGS/END``; ``tool-result`` → ``TOOL_CALL_RESULT``;
    ``metadata`` → ``CUSTOM`` ``metadata`` (and merged into ``RUN_FINISHED.result``);
    other JSON and data parts → ``CUSTOM`` (``name``: the data's name, else the part
    id); the end → ``RUN_FINISHED`` / ``RUN_ERROR``. The table:
    docs/reference/ui-protocols.md.
    """

    def __init__(self, stream: str, thread: str) -> None:
        self.stream = stream
        self.thread = thread
        self.parts: dict[str, _Part] = {}
        self.metadata: dict[str, Any] = {}
        self.ended = False

    def _mid(self, part: str) -> str:
        return f"{self.stream}.{part}"

    def begin(self) -> list[Chunk]:
        return [{"type": "RUN_STARTED", "threadId": self.thread, "runId": self.stream}]

    def event(self, ev: Event) -> list[Chunk]:
        k = ev.kind
        if k == Kind.TEXT:
            p = self.parts.get(ev.part)
            if p is None or not ev.body:
                return []
            kind = "REASONING_MESSAGE_CONTENT" if p.role == "reasoning" else "TEXT_MESSAGE_CONTENT"
            return [{"type": kind, "messageId": self._mid(p.id), "delta": ev.body}]
        if k in (Kind.JSON, Kind.DATA):
            p = self.parts.get(ev.part)
            if p is None:
                return []
            p.body.append(ev.body)
            if p.tool and ev.body:
                return [{"type": "TOOL_CALL_ARGS", "toolCallId": p.call, "delta": ev.body}]
            return []
        if k == Kind.PART_START:
            p = _new_part(ev)
            self.parts[p.id] = p
            mid = self._mid(p.id)
            if p.kind == "text" and p.role == "reasoning":
                return [
                    {"type": "REASONING_START", "messageId": mid},
                    {"type": "REASONING_MESSAGE_START", "messageId": mid, "role": "reasoning"},
                ]
            if p.kind == "text":
                return [{"type": "TEXT_MESSAGE_START", "messageId": mid, "role": "assistant"}]
            if p.tool:
                return [{"type": "TOOL_CALL_START", "toolCallId": p.call, "toolCallName": p.tool}]
            return []
        if k == Kind.PART_END:
            p = self.parts.get(ev.part)
            return [] if p is None else self._end_part(p, ev.error)
        if k == Kind.END:
            self.ended = True
            if ev.status == "completed":
                done: Chunk = {
                    "type": "RUN_FINISHED",
                    "threadId": self.thread,
                    "runId": self.stream,
                }
                if self.metadata:
                    done["result"] = {"metadata": self.metadata}
                return [done]
            return [
                {
                    "type": "RUN_ERROR",
                    "message": ev.error or f"the answer {ev.status}",
                    "code": ev.status,
                }
            ]
        return []

    def _end_part(self, p: _Part, error: str) -> list[Chunk]:
        mid = self._mid(p.id)
        out: list[Chunk]
        if p.kind == "text" and p.role == "reasoning":
            out = [
                {"type": "REASONING_MESSAGE_END", "messageId": mid},
                {"type": "REASONING_END", "messageId": mid},
            ]
        elif p.kind == "text":
            out = [{"type": "TEXT_MESSAGE_END", "messageId": mid}]
        elif p.tool:
            out = [{"type": "TOOL_CALL_END", "toolCallId": p.call}]
        elif p.role == "tool-result":
            out = [
                {
                    "type": "TOOL_CALL_RESULT",
                    "messageId": mid,
                    "toolCallId": p.call,
                    "content": p.text,
                    "role": "tool",
                }
            ]
        elif error:
            return [
                {"type": "CUSTOM", "name": p.name, "value": {"error": error, "partial": p.text}}
            ]
        elif p.kind == "data" and p.mime.endswith(";base64"):
            media = p.mime[: -len(";base64")]
            out = [
                {"type": "CUSTOM", "name": p.name, "value": {"mediaType": media, "data": p.text}}
            ]
        else:
            try:
                value = p.value()
            except ValueError:
                value = p.text
            if p.role == "metadata" and isinstance(value, dict):
                self.metadata.update(value)
                out = [{"type": "CUSTOM", "name": "metadata", "value": value}]
            else:
                out = [{"type": "CUSTOM", "name": p.name, "value": value}]
        if error:
            out.append(
                {"type": "CUSTOM", "name": "part-error", "value": {"part": p.id, "error": error}}
            )
        return out


#: Chunks whose deltas a prelude joins: type → (the id field, the delta field).
AI_SDK_DELTAS: Final = {
    "text-delta": ("id", "delta"),
    "reasoning-delta": ("id", "delta"),
    "tool-input-delta": ("toolCallId", "inputTextDelta"),
}
AG_UI_DELTAS: Final = {
    "TEXT_MESSAGE_CONTENT": ("messageId", "delta"),
    "REASONING_MESSAGE_CONTENT": ("messageId", "delta"),
    "TOOL_CALL_ARGS": ("toolCallId", "delta"),
}


def compact(chunks: Iterable[Chunk], deltas: dict[str, tuple[str, str]]) -> list[Chunk]:
    """A prelude: ``chunks`` with every delta of a part joined into its first delta
    chunk (where it stands: a part's place in the message is set by its start,
    and a delta only appends to it, so the rebuilt message is the same)."""
    out: list[Chunk] = []
    joined: dict[tuple[str, str], tuple[Chunk, list[str]]] = {}
    for c in chunks:
        spec = deltas.get(c["type"])
        if spec is None:
            out.append(c)
            continue
        key = (c["type"], c[spec[0]])
        held = joined.get(key)
        if held is None:
            first = dict(c)
            joined[key] = (first, [c[spec[1]]])
            out.append(first)
        else:
            held[1].append(c[spec[1]])
    for (kind, _), (first, pieces) in joined.items():
        if len(pieces) > 1:
            first[deltas[kind][1]] = "".join(pieces)
    return out


def sse_data(chunks: Iterable[Chunk]) -> bytes:
    """``data: {json}`` SSE events (JSON has no raw line breaks: one line each)."""
    return b"".join(b"data: " + _encode(c) + b"\n\n" for c in chunks)


Mapper = AiSdkMapper | AgUiMapper


class UIStreams:
    """The UI-protocol face of a :class:`StreamLog`'s agent streams (read only)."""

    def __init__(
        self,
        store: StreamLog,
        *,
        heartbeat: float = 5.0,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.heartbeat = heartbeat
        self.accepting = accepting

    async def handle(self, request: Request, path: str, principal: Principal) -> None:
        """Answer ``path`` (below ``/v1/ui/``): ``ai-sdk/{stream}``,
        ``ai-sdk/{stream}/stream`` or ``ag-ui/{stream}``."""
        proto, _, rest = path.partition("/")
        stream, _, tail = rest.partition("/")
        if proto not in ("ai-sdk", "ag-ui") or not stream or tail not in ("", "stream"):
            raise _HttpRefusal(404, "no such stream")
        if tail and proto != "ai-sdk":
            raise _HttpRefusal(404, "no such stream")
        if request.method != "GET":
            raise _HttpRefusal(405, "UI streams are read with GET", [(b"allow", b"GET")])
        meta = await self.store.meta(stream)
        if meta is None or meta.owner != principal.id:
            if meta is None and await self.store.tombstone(stream) == principal.id:
                raise _HttpRefusal(
                    410, "the stream's retention ended", [(b"unbroken-gone", b"expired")]
                )
            raise _HttpRefusal(404, "no such stream")
        if tail and meta.status != "running":
            # useChat's reconnect: no active stream (the message is the app's to keep)
            await request.respond(204, b"", [(b"unbroken-status", meta.status.encode())], None)
            return
        mapper: Mapper
        headers: list[Header] = [
            *_SSE,
            (b"unbroken-epoch", self.store.epoch.encode()),
            (b"unbroken-status", meta.status.encode()),
        ]
        if proto == "ai-sdk":
            mapper, deltas, done = AiSdkMapper(stream), AI_SDK_DELTAS, b"data: [DONE]\n\n"
            headers.append(AI_SDK_HEADER)
        else:
            thread = request.param("threadId") or stream
            if len(thread) > 200:
                raise _HttpRefusal(400, "threadId is longer than 200 characters")
            mapper, deltas, done = AgUiMapper(stream, thread), AG_UI_DELTAS, b""
        await self._serve(request, stream, meta.head, mapper, deltas, done, headers)

    async def _read(self, stream: str, after: int, kinds: dict[str, str]) -> list[Event] | None:
        """The events after ``after`` (``None``: none, or no longer held)."""
        batch = await self.store.read(stream, after, READ_BYTES)
        if batch is None:
            return None
        if batch.count == 0:
            return []
        return wire.decode(batch.first, _items.decode(batch.items), kinds)

    async def _serve(
        self,
        request: Request,
        stream: str,
        head: int,
        mapper: Mapper,
        deltas: dict[str, tuple[str, str]],
        done: bytes,
        headers: list[Header],
    ) -> None:
        changes = Changes()
        unsubscribe = self.store.subscribe(stream, changes.fire)
        disconnect: asyncio.Future[None] | None = None
        send = request.send
        after = 0
        kinds: dict[str, str] = {}
        started = False
        try:
            # the prelude: everything up to the head seen at the request, compacted
            chunks = mapper.begin()
            while after < head and not mapper.ended:
                events = await self._read(stream, after, kinds)
                if events is None:
                    raise _HttpRefusal(
                        410,
                        "the stream's events are no longer held",
                        [(b"unbroken-gone", b"expired")],
                    )
                if not events:
                    break
                for ev in events:
                    chunks += mapper.event(ev)
                after = events[-1].seq
            body = sse_data(compact(chunks, deltas))
            if mapper.ended:
                body += done
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*headers, *SECURITY, *request.cors],
                }
            )
            started = True
            await send({"type": "http.response.body", "body": body, "more_body": True})
            disconnect = asyncio.ensure_future(request.wait_disconnect())
            loop = asyncio.get_running_loop()
            quiet = loop.time()  # when the response last sent or heard of a change
            while not mapper.ended and not disconnect.done():
                events = await self._read(stream, after, kinds)
                if changes.dropped or (not events and await self.store.meta(stream) is None):
                    log.info("ui stream=%s dropped by retention at seq=%d", stream, after)
                    break
                if events:
                    out: list[Chunk] = []
                    for ev in events:
                        out += mapper.event(ev)
                    after = events[-1].seq
                    data = sse_data(out)
                    if mapper.ended:
                        data += done
                    if data:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                    continue
                if not self.accepting():
                    break  # draining: the front end resumes (the prelude rebuilds it)
                # wake at least every second: a drain must not wait for a heartbeat
                if await changes.wait(disconnect, min(1.0, self.heartbeat)):
                    quiet = loop.time()
                elif not disconnect.done() and loop.time() - quiet >= self.heartbeat:
                    quiet = loop.time()
                    await send(
                        {"type": "http.response.body", "body": b": hb\n\n", "more_body": True}
                    )
        finally:
            unsubscribe()
            if disconnect is not None:
                disconnect.cancel()
            if started:
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                log.info(
                    "ui stream done client=%s stream=%s seq=%d ended=%s",
                    request.client,
                    stream,
                    after,
                    mapper.ended,
                )
