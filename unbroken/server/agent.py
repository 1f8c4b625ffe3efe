"""The agent API: what an agent receives (:class:`Request`) and writes to (:class:`Output`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Generator, KeysView, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self, overload

from ..errors import PartError
from ..protocol.events import PART_ID_RE, Event, Kind
from ..protocol.roles import Role, role_mime
from .producer import MAX_ERROR, Producer, safe_text

PartKind = Literal["text", "json", "data"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is connected: ``id`` owns the streams it starts.

    ``scope`` is the namespace of its request ids when ``id`` alone does not tell its
    clients apart: every anonymous client shares the id ``anonymous`` but has a scope
    of its own (:func:`anonymous_principal`), so one client's ``req`` never names
    another's stream, and only the scope that started a stream may cancel it. Empty
    (the default) for an authenticated principal: its id is its scope.

    ``expires``: when its credentials expire (unix seconds; ``None``: never). Any
    ``authenticate`` hook may set it (:class:`~unbroken.server.auth.JWTAuth` sets it
    from the token's ``exp``); a connection then warns a client that can refresh
    (``auth_expiring``) and closes with 4010 at that time unless the client sent a
    new token (docs/reference/protocol.md §18).
    """

    id: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    scope: str = ""
    expires: float | None = None


ANONYMOUS: Final = Principal("anonymous")

#: A well-formed anonymous client key: URL-safe base64, 22 to 64 characters (the
#: server issues 22: 128 random bits).
ANON_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,64}\Z")


def anonymous_principal(key: str | None = None) -> tuple[Principal, str]:
    """The principal of an anonymous connection, and the client key it goes by.

    ``key`` is the key the client presented (in ``hello``); when it has none, or a
    malformed one, a fresh key is drawn. Send the key back to the client (in
    ``welcome``): a client that presents it on its next connections keeps its request
    ids, so a start retried after a drop returns the same stream, while another
    anonymous client sending the same ``req`` gets a stream of its own. The key is a
    bearer secret: only its hash (the scope) is kept, never the key, and it is never
    logged. docs/reference/security.md has the threat model.
    """
    if key is None or not ANON_KEY_RE.match(key):
        key = secrets.token_urlsafe(16)
    scope = hashlib.blake2b(key.encode(), digest_size=16, person=b"unbroken-anon").hexdigest()
    return Principal(ANONYMOUS.id, scope=scope), key


@dataclass(frozen=True, slots=True)
class Request:
    """What an agent is asked: ``input`` as the client sent it, and who asked."""

    agent: str
    input: Any
    principal: Principal
    stream: str
    req: str


Agent = Callable[[Request, "Output"], Awaitable[None]]


#: ``_last_text`` when no text part was written last: no part id (ids hold no NUL)
_NO_PART: Final = "\x00"

_CHUNK_KIND: Final[dict[str, Kind]] = {"text": Kind.TEXT, "json": Kind.JSON, "data": Kind.DATA}


#: Characters a part id may not hold (docs/reference/protocol.md: ``[A-Za-z0-9_.:-]{1,64}``).
_BAD_ID: Final = re.compile(r"[^A-Za-z0-9_.:\-]")


def part_id(want: str) -> str:
    """A valid part id from any name: bad characters replaced by ``_``, long names
    shortened with a hash so that two long ids stay apart."""
    clean = _BAD_ID.sub("_", want) or "part"
    if len(clean) <= 56:
        return clean
    digest = hashlib.blake2b(want.encode(), digest_size=4).hexdigest()
    return f"{clean[:47]}-{digest}"


#: Never written to: what an Output's tables are until their first write (Output._own).
_SHARED_EMPTY: Final[dict[str, Any]] = {}


class Output:
    """Where an agent writes its answer.

    Text goes to the current text part (``"text"`` first) unless a part is named;
    reasoning, tool calls, tool results and metadata have calls of their own
    (:meth:`reasoning`, :meth:`tool_call`, :meth:`tool_result`, :meth:`metadata`);
    JSON and data parts are opened explicitly. A part whose id is not given gets one
    (``text``, ``text-2``…: :meth:`new_id`). Every write is appended to the stream
    log, so it survives any disconnection. Chunks larger than ``max_chunk`` bytes are
    split.
    """

    def __init__(
        self,
        producer: Producer,
        max_chunk: int = 1024 * 1024,
        redact: Callable[[BaseException], str] | None = None,
    ) -> None:
        self._p = producer
        self._redact = redact
        self._max_chars = max(1, max_chunk // 4)
        self._open: dict[str, str] = {}
        # dicts as sets (an empty set is 216 B, a dict 64); the tables most answers
        # never write start as one shared empty dict, never written to (_own makes
        # an Output its own at the first write): one Output per stream
        self._closed: dict[str, None] = _SHARED_EMPTY
        self._json: dict[str, tuple[list[str], Mapping[str, Any] | None]] = _SHARED_EMPTY
        self._last_text = _NO_PART
        # the implicit parts ``text()`` and ``reasoning()`` write to when given no
        # part: "" when the next write opens a new one
        self._cur_text = "text"
        self._cur_reasoning = ""
        self._implicit: dict[str, None] = {}  # implicit parts that are open
        self._next_n: dict[str, int] = _SHARED_EMPTY
        self._tool_names: dict[str, str] = _SHARED_EMPTY  # call id -> tool name
        self._calls = 0
        #: the ids of the parts started, in order
        self.parts: list[str] = []
        #: what text() returns when nothing is to wait for: a future already done
        #: (awaited in C: a third of the cost of an object whose __await__ is Python)
        self._done: Awaitable[None] = _done_future()

    def _own(self, name: str) -> dict[str, Any]:
        """The table ``name`` of this Output's own, to write to (made now if it is
        still the shared empty one)."""
        table: dict[str, Any] = getattr(self, name)
        if table is _SHARED_EMPTY:
            table = {}
            setattr(self, name, table)
        return table

    def redact(self, exc: BaseException) -> str:
        """What clients may be told about ``exc``: the app's ``redact`` hook (by
        default ``internal error in agent: <Type>``). Use it for the error of a part
        an agent ends itself after catching an exception, so what reaches clients
        follows the same rule as a run that fails."""
        if self._redact is None:
            return f"internal error in agent: {type(exc).__name__}"
        return self._redact(exc)

    # ------------------------------------------------------------ parts
    @property
    def open_parts(self) -> KeysView[str]:
        """The ids of the parts open now (a live view)."""
        return self._open.keys()

    def new_id(self, want: str) -> str:
        """A part id not used yet in this answer: ``want`` made valid (:func:`part_id`),
        then ``want-2``, ``want-3``… when taken."""
        base = part_id(want)
        n = self._next_n.get(base, 1)
        while True:
            pid = base if n == 1 else _suffixed(base, n)
            n += 1
            if pid not in self._open and pid not in self._closed:
                self._own("_next_n")[base] = n
                return pid

    async def start_part(
        self,
        part: str,
        kind: PartKind,
        *,
        mime: str = "",
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        """Open a part; its chunks follow, then :meth:`end_part`."""
        if not PART_ID_RE.match(part):
            raise PartError(f"part id {part!r} must match {PART_ID_RE.pattern}")
        if part in self._open or part in self._closed:
            raise PartError(f"part {part!r} was already started")
        if kind not in _CHUNK_KIND:
            raise PartError(f"part kind must be text, json or data, not {kind!r}")
        _check_mime(mime)
        schema_text = json.dumps(schema, sort_keys=True, separators=(",", ":")) if schema else ""
        if schema is not None:
            import jsonschema  # here: ~4 MB of RSS that a server without schemas never needs

            jsonschema.validators.validator_for(schema).check_schema(dict(schema))
        self._p.add(
            Event(0, Kind.PART_START, part=part, part_kind=kind, mime=mime, schema=schema_text)
        )
        self._open[part] = kind
        self.parts.append(part)
        if kind == "json":
            self._own("_json")[part] = ([], schema)
        await self._maybe_flush()

    async def chunk(self, part: str, body: str) -> None:
        """Append a chunk (text delta, JSON fragment, data piece) to an open part."""
        kind = self._open.get(part)
        if kind is None:
            raise PartError(f"part {part!r} is not open")
        ck = _CHUNK_KIND[kind]
        mc = self._max_chars
        if len(body) <= mc:
            self._p.add_chunk(ck, part, body)  # writes all or nothing
        else:
            body.encode()  # a body that cannot be written fails before its first piece
            for i in range(0, len(body), mc):
                self._p.add_chunk(ck, part, body[i : i + mc])
        if kind == "json":  # validated at the part's end: only what reached the log
            self._json[part][0].append(body)
        await self._maybe_flush()

    async def end_part(self, part: str, error: str = "") -> str:
        """Close a part. JSON parts are parsed and validated against their schema;
        the returned string (also sent as the part's ``error``) is empty when valid."""
        if part not in self._open:
            raise PartError(f"part {part!r} is not open")
        kind = self._open[part]
        if kind == "json" and not error:
            fragments, schema = self._json[part]
            error = _check_json("".join(fragments), schema)
        error = safe_text(error)  # a part's end can always be written
        self._p.add(Event(0, Kind.PART_END, part=part, error=error))
        del self._open[part]
        if part in self._json:
            del self._json[part]
        self._own("_closed")[part] = None
        if self._last_text == part:
            self._last_text = _NO_PART
        self._forget(part)
        await self._maybe_flush()
        return error

    def _forget(self, part: str) -> None:
        """``part`` ended: an implicit part's next write opens a new one."""
        if part in self._implicit:
            self._implicit.pop(part, None)
            if self._cur_text == part:
                self._cur_text = ""
            if self._cur_reasoning == part:
                self._cur_reasoning = ""

    # ------------------------------------------------------------ conveniences
    def text(self, delta: str, part: str | None = None) -> Awaitable[None]:
        """Write a text delta (opens the part on first use): ``await out.text(delta)``.

        With no ``part``: the current text part, ``"text"`` at first. It ends when a
        tool call, a tool result or reasoning is written, and the next text then opens
        a new part (``text-2``…), so the answer's parts keep the order they happened
        in. A named part is only ended by :meth:`end_part` (or the run's end). Writing
        text ends the current reasoning part. An empty delta opens no part.

        The hot path of every token is not a coroutine: the delta is written when
        ``text`` returns (an error raises at once), and the awaitable returned is a
        ready one unless a full batch must be appended first (then awaiting it does
        that, and yields to the loop once)."""
        p = self._cur_text if part is None else part
        pr = self._p
        if (  # the run being written: the delta joins it, nothing else to do
            p == pr._hot
            and p == self._last_text
            and type(delta) is str
            and delta.isascii()  # (UTF-8 without a check)
            and len(delta) <= self._max_chars
        ):
            texts = pr._texts
            texts.append(delta)
            n = len(texts)
            if n == 1 and not pr._npend:  # the first pending (a paced token): scheduled
                pr._pend()
            if n >= pr._limit:
                return self._flush_full()
            return self._done
        if p == self._last_text and len(delta) <= self._max_chars:
            pr.add_chunk(1, p, delta)  # (the run is then the hot one: pending vs _limit)
            if len(pr._texts) >= pr._limit:
                return self._flush_full()
            return self._done
        return self._text(delta, part, "")

    def reasoning(self, delta: str, part: str | None = None) -> Awaitable[None]:
        """Write a reasoning delta: a text part with role ``reasoning`` (the model's
        thinking, kept apart from the answer's text by clients and UI protocols).

        With no ``part``: the current reasoning part, opened on first use
        (``reasoning``, ``reasoning-2``…); it ends when text, a tool call or a tool
        result is written, or with :meth:`end_reasoning`. An empty delta opens no
        part. Same hot path as :meth:`text`."""
        p = self._cur_reasoning if part is None else part
        pr = self._p
        if (  # as text()
            p == pr._hot
            and p == self._last_text
            and type(delta) is str
            and delta.isascii()
            and len(delta) <= self._max_chars
        ):
            texts = pr._texts
            texts.append(delta)
            n = len(texts)
            if n == 1 and not pr._npend:  # the first pending (a paced token): scheduled
                pr._pend()
            if n >= pr._limit:
                return self._flush_full()
            return self._done
        if p == self._last_text and len(delta) <= self._max_chars:
            pr.add_chunk(1, p, delta)  # (the run is then the hot one: pending vs _limit)
            if len(pr._texts) >= pr._limit:
                return self._flush_full()
            return self._done
        return self._text(delta, part, "reasoning")

    async def end_text(self, error: str = "") -> None:
        """End the current text part (if one is open): the next :meth:`text` without
        a part opens a new one."""
        if self._cur_text in self._implicit:
            await self.end_part(self._cur_text, error)

    async def end_reasoning(self, error: str = "") -> None:
        """End the current reasoning part (if one is open)."""
        if self._cur_reasoning in self._implicit:
            await self.end_part(self._cur_reasoning, error)

    async def _end_implicit(self, *, text: bool = True, reasoning: bool = True) -> None:
        if reasoning and self._cur_reasoning in self._implicit:
            await self.end_part(self._cur_reasoning)
        if text and self._cur_text in self._implicit:
            await self.end_part(self._cur_text)

    async def _text(self, delta: str, part: str | None, role: Role) -> None:
        if part is None:
            reasoning = role == "reasoning"
            if not delta and (reasoning or self._cur_text not in self._open):
                return  # an empty delta opens no part (and ends none)
            await self._end_implicit(text=reasoning, reasoning=not reasoning)
            part = self._cur_reasoning if reasoning else self._cur_text
            if part not in self._open:
                delta.encode()  # a delta that cannot be written opens no part
                if not part:
                    part = self.new_id("reasoning" if reasoning else "text")
                mime = role_mime("text/plain", role)
                await self.start_part(part, "text", mime=mime)
                self._implicit[part] = None
                if reasoning:
                    self._cur_reasoning = part
                else:
                    self._cur_text = part
        elif part != self._last_text:
            await self._end_implicit(text=False, reasoning=self._cur_reasoning != part)
        if part != self._last_text:
            if part not in self._open:
                delta.encode()  # a delta that cannot be written opens no part
                await self.start_part(part, "text", mime=role_mime("text/plain", role))
            elif self._open[part] != "text":
                raise PartError(f"part {part!r} is not a text part")
            self._last_text = part
        p = self._p
        if len(delta) <= self._max_chars:
            p.add_chunk(1, part, delta)
            if p.pending >= p.max_batch:
                await self._flush_full()
        else:
            await self.chunk(part, delta)

    def json(
        self,
        part: str | None = None,
        schema: Mapping[str, Any] | None = None,
        *,
        name: str = "",
    ) -> JsonPart:
        """A JSON part, opened by awaiting it or by ``async with``::

            j = await out.json("plan")          # open; j.append(…) across loop turns
            await j.append('{"steps": [')
            await j.close()                     # parsed and validated here

            async with out.json("plan") as j:   # or closed by the block
                await j.append("{}")

        ``part``: its id (default: a new one, ``json``, ``json-2``…). ``name``: what
        the data is (``data-<name>`` in the AI SDK UI stream; default the part id)."""
        pid = self.new_id("json") if part is None else part
        mime = role_mime("application/json", name=name) if name else "application/json"
        return JsonPart(self, pid, schema, mime)

    def tool_call(
        self,
        id: str | None,
        name: str,
        *,
        arguments: str | Mapping[str, Any] | None = None,
        part: str | None = None,
    ) -> ToolCall:
        """A tool call the model makes: a JSON part (role ``tool-call``) whose text is
        the call's arguments, streamed as the model writes them::

            call = await out.tool_call(tc.id, tc.function.name)
            await call.append(tc.function.arguments)      # each fragment
            await call.close()                            # the arguments must be JSON

        ``id``: the provider's call id (``None``/``""``: ``call-1``, ``call-2``…);
        ``arguments`` (a JSON string or a mapping): the whole arguments at once, and
        the call is closed on open. ``part``: its part id (default ``tool-<id>``, made
        unique). Writing a tool call ends the current text and reasoning parts.
        Awaiting it opens it; ``async with`` works too."""
        if not id:
            self._calls += 1
            id = f"call-{self._calls}"
        pid = self.new_id(f"tool-{id}") if part is None else part
        mime = role_mime("application/json", "tool-call", tool=name, call=id)
        return ToolCall(self, pid, mime, id, name, arguments)

    async def tool_result(
        self,
        id: str,
        value: Any,
        *,
        error: str = "",
        name: str | None = None,
        part: str | None = None,
    ) -> str:
        """The result of tool call ``id``, whole: a JSON part (role ``tool-result``)
        holding ``value`` as JSON (objects JSON cannot hold are written as their
        ``str``). ``error``: the tool failed (the part ends with it; ``value`` may say
        more, or be ``None``). ``name``: the tool's name (default: the one its
        :meth:`tool_call` gave). Returns the part id."""
        tool = self._tool_names.get(id, "") if name is None else name
        pid = self.new_id(f"result-{id}") if part is None else part
        body = json.dumps(value, separators=(",", ":"), default=str)
        await self._end_implicit()
        await self.start_part(
            pid, "json", mime=role_mime("application/json", "tool-result", tool=tool, call=id)
        )
        await self.chunk(pid, body)
        await self.end_part(pid, error)
        return pid

    async def metadata(
        self,
        value: Mapping[str, Any] | None = None,
        *,
        finish_reason: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> str:
        """Message metadata: a small JSON part (role ``metadata``) with ``value``'s
        fields plus ``finish_reason`` and ``usage`` when given. Clients merge every
        metadata part of an answer (``answer.metadata``; ``answer.usage`` adds the
        usages up, ``answer.finish_reason`` is the last one); UI streams send it as
        message metadata (the AI SDK's ``finishReason`` comes from it). Write it once
        per model call, e.g. at its end. Returns the part id."""
        body: dict[str, Any] = dict(value or {})
        if finish_reason is not None:
            body["finish_reason"] = finish_reason
        if usage is not None:
            body["usage"] = dict(usage)
        pid = self.new_id("metadata")
        text = json.dumps(body, separators=(",", ":"), default=str)
        await self.start_part(pid, "json", mime=role_mime("application/json", "metadata"))
        await self.chunk(pid, text)
        await self.end_part(pid)
        return pid

    @overload
    async def data(
        self,
        part: str,
        body: Mapping[str, Any] | list[Any],
        *,
        mime: JsonMime | str = "application/json",
    ) -> None: ...
    @overload
    async def data(self, part: str, body: bytes, *, mime: BinaryMime | str) -> None: ...
    @overload
    async def data(self, part: str, body: str, *, mime: TextMime | JsonMime | str) -> None: ...
    async def data(
        self,
        part: str,
        body: str | bytes | Mapping[str, Any] | list[Any],
        *,
        mime: str | None = None,
    ) -> None:
        """A whole data component (chart spec, table, image) in one call.

        The rules (the overloads show them to a type checker): a mapping or list is sent
        as JSON text, its ``mime`` a JSON type (default ``application/json``; others
        like ``application/vnd.vegalite.v5+json``); ``bytes`` need their ``mime``
        (``image/png``) and are sent base64-encoded with ``;base64`` added; a ``str``
        needs its ``mime`` and is sent as is. A JSON body under a mime type that is not
        JSON, or bytes whose mime already ends in ``;base64``, raise
        :class:`~unbroken.errors.PartError`.
        """
        if mime is None:
            if isinstance(body, str | bytes):
                raise PartError(
                    f"a {type(body).__name__} body needs its mime (text/csv, image/png)"
                )
            mime = "application/json"
        if isinstance(body, bytes):
            if mime.endswith(";base64"):
                raise PartError(
                    f"mime {mime!r}: give the type of the bytes (image/png); ';base64' is added"
                )
            text, mime = base64.b64encode(body).decode("ascii"), mime + ";base64"
        elif isinstance(body, str):
            text = body
        else:
            if "json" not in mime.split(";")[0]:
                raise PartError(
                    f"a {type(body).__name__} body is sent as JSON: its mime must be a JSON "
                    f"type (application/json, application/…+json), not {mime!r}"
                )
            text = json.dumps(body, separators=(",", ":"))
        text.encode()  # a body that cannot be written opens no part
        await self.start_part(part, "data", mime=mime)
        await self.chunk(part, text)
        await self.end_part(part)

    async def emit(self, event: Event) -> None:
        """Write a prepared event as is (its ``seq`` is replaced). For replaying
        generated answers; ``end`` is written by the hub, not by agents."""
        part = event.part
        if event.kind is Kind.END:
            raise PartError("the end event is written by the hub when the agent returns")
        if event.kind is Kind.PART_START:
            if not PART_ID_RE.match(part):
                raise PartError(f"part id {part!r} must match {PART_ID_RE.pattern}")
            if part in self._open or part in self._closed:
                raise PartError(f"part {part!r} was already started")
            if event.part_kind not in _CHUNK_KIND:
                raise PartError(f"part kind must be text, json or data, not {event.part_kind!r}")
            _check_mime(event.mime)
            if event.schema:  # clients parse it: a bad one must not reach them
                _check_schema_text(event.schema)
        elif event.kind is Kind.PART_END:
            if part not in self._open:
                raise PartError(f"part {part!r} is not open")
        else:  # a chunk: its part must be open and of its kind (clients check this)
            kind = self._open.get(part)
            if kind is None or _CHUNK_KIND[kind] is not event.kind:
                raise PartError(f"a {event.kind.name.lower()} chunk for part {part!r} ({kind})")
        self._p.add(event)  # writes all or nothing: the part state changes only after it
        if event.kind is Kind.PART_START:
            self._open[part] = event.part_kind
            self.parts.append(part)
        elif event.kind is Kind.PART_END:
            del self._open[part]
            self._own("_closed")[part] = None
            if self._last_text == part:
                self._last_text = _NO_PART
            self._forget(part)
        await self._maybe_flush()

    async def flush(self) -> None:
        """Append everything written so far to the log now."""
        await self._p.flush()

    async def close_open_parts(self, error: str = "") -> None:
        """End every part still open (called by the hub when the run ends)."""
        for part in list(self._open):
            await self.end_part(part, error)

    async def _maybe_flush(self) -> None:
        if self._p.pending >= self._p.max_batch:
            await self._flush_full()

    async def _flush_full(self) -> None:
        # A full batch: append it, then yield once so that an agent writing in a
        # tight loop never starves connections (heartbeats, other streams).
        await self._p.flush()
        await asyncio.sleep(0)


def _suffixed(base: str, n: int) -> str:
    tail = f"-{n}"
    return base[: 64 - len(tail)] + tail


class _Ready:
    """An awaitable that is already done (``await`` returns ``None`` at once)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]  # any iterator: done when exhausted


_READY: Final = _Ready()


def _done_future() -> Awaitable[None]:
    """A future of the running loop, done (``_READY`` outside one)."""
    try:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    except RuntimeError:
        return _READY
    fut.set_result(None)
    return fut


class JsonPart:
    """A JSON part being written; see :meth:`Output.json`.

    Open it by awaiting it (``j = await out.json()``) or with ``async with``; then
    :meth:`append` fragments (in any loop iteration) and :meth:`close` it. ``error``:
    why the part is invalid once closed (``""``: it is fine)."""

    def __init__(
        self,
        out: Output,
        part: str,
        schema: Mapping[str, Any] | None,
        mime: str = "application/json",
    ) -> None:
        self._out, self.part, self._schema, self._mime = out, part, schema, mime
        self.error = ""
        self.opened = False
        self.closed = False

    async def open(self) -> Self:
        """Open the part (once; awaiting the part does this)."""
        if not self.opened:
            await self._out.start_part(self.part, "json", mime=self._mime, schema=self._schema)
            self.opened = True
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self.open().__await__()

    async def append(self, fragment: str) -> None:
        """Append a fragment of the JSON text (empty ones are skipped)."""
        if fragment:
            await self._out.chunk(self.part, fragment)

    write = append  # the first name of :meth:`append`

    async def close(self, error: str = "") -> str:
        """End the part (once; later calls return the same error). Its text is
        parsed, and validated against its schema, unless ``error`` is given;
        returns why it is invalid (``""``: it is fine)."""
        if not self.closed:
            self.closed = True
            self.error = await self._out.end_part(self.part, error)
        return self.error

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(f"part aborted: {exc_type.__name__}" if exc_type is not None else "")


class ToolCall(JsonPart):
    """A tool call being written (its arguments, as JSON); see :meth:`Output.tool_call`.

    ``id`` and ``name``: the call's id and tool; ``part``: its part id;
    :attr:`arguments` the text appended so far and :attr:`input` its value."""

    def __init__(
        self,
        out: Output,
        part: str,
        mime: str,
        id: str,
        name: str,
        arguments: str | Mapping[str, Any] | None,
    ) -> None:
        super().__init__(out, part, None, mime)
        self.id, self.name = id, name
        self._whole = arguments
        self._args: list[str] = []

    async def open(self) -> Self:
        if not self.opened:
            out = self._out
            await out._end_implicit()
            out._own("_tool_names")[self.id] = self.name
            await super().open()
            if self._whole is not None:
                whole = self._whole
                text = whole if isinstance(whole, str) else json.dumps(whole)
                await self.append(text)
                await self.close()
        return self

    async def append(self, fragment: str) -> None:
        if fragment:
            await self._out.chunk(self.part, fragment)
            self._args.append(fragment)

    write = append

    @property
    def arguments(self) -> str:
        """The arguments' JSON text written so far."""
        return "".join(self._args)

    @property
    def input(self) -> Any:
        """The arguments, parsed (``{}`` when none were written); raises
        ``ValueError`` when they are not JSON."""
        text = self.arguments
        return json.loads(text) if text.strip() else {}


#: Mime types of a data component that readers know (any other string works too:
#: these are what an editor offers). JSON ones for a mapping or list body:
JsonMime = Literal[
    "application/json",
    "application/vnd.vegalite.v5+json",
    "application/vnd.vegalite+json",
    "application/geo+json",
]
#: … text ones for a ``str`` body, binary ones for ``bytes`` (sent base64):
TextMime = Literal["text/plain", "text/markdown", "text/csv", "text/html", "image/svg+xml"]
BinaryMime = Literal[
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "audio/wav"
]


def _check_mime(mime: str) -> None:
    """Refuse a mime type no reader would accept (docs/reference/protocol.md: no NUL, ≤ 4096)."""
    if "\x00" in mime or len(mime) > MAX_ERROR:
        raise PartError("a mime type must hold no NUL and at most 4096 characters")


def _check_schema_text(text: str) -> None:
    """Raise :class:`PartError` unless ``text`` is a JSON Schema (as JSON)."""
    import jsonschema

    try:
        schema = json.loads(text)
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except (ValueError, RecursionError) as exc:
        raise PartError(f"the part's schema is not JSON: {exc}") from None
    except jsonschema.SchemaError as exc:
        raise PartError(f"the part's schema is not a valid JSON Schema: {exc.message}") from None


def _check_json(text: str, schema: Mapping[str, Any] | None) -> str:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    if schema:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            return f"schema validation failed at /{path}: {exc.message}"
    return ""
