"""What a client user sees: typed events, and the assembled, verified answer."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import jiter
import jsonschema

from ..protocol.events import Event, Kind
from ..protocol.roles import PLAIN, PartInfo, part_info


# ------------------------------------------------------------------ typed events
@dataclass(frozen=True, slots=True)
class PartStarted:
    """A part opened: ``kind`` is text, json or data; ``role`` what it is in the
    answer (``reasoning``, ``tool-call``, ``tool-result``, ``metadata``, or ``""``:
    answer text, a JSON part, a data component); ``tool`` and ``call``: a tool call's
    (or result's) tool name and call id."""

    seq: int
    part: str
    kind: str
    mime: str
    schema: dict[str, Any] | None
    role: str = ""
    tool: str = ""
    call: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of a text part."""

    seq: int
    part: str
    text: str


@dataclass(frozen=True, slots=True)
class JsonFragment:
    """A piece of a JSON part; :meth:`partial` parses the part's text so far."""

    seq: int
    part: str
    fragment: str
    _result: PartResult = field(repr=False, compare=False)
    _count: int = field(repr=False, compare=False, default=0)

    @property
    def text_so_far(self) -> str:
        """The part's JSON text up to and including this fragment (built on demand,
        so receiving a large JSON part stays linear)."""
        return "".join(self._result.chunks[: self._count])

    def partial(self) -> Any:
        """Best-effort value of the JSON received so far (open strings, arrays and
        objects are closed; an incomplete trailing token is dropped)."""
        return parse_partial_json(self.text_so_far)


@dataclass(frozen=True, slots=True)
class DataChunk:
    """A piece of a data component (components arrive whole in :class:`PartEnded`)."""

    seq: int
    part: str
    body: str


@dataclass(frozen=True, slots=True)
class PartEnded:
    """A part closed; ``error`` is non-empty if it is invalid (e.g. schema)."""

    seq: int
    part: str
    error: str
    result: PartResult


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The final event: status, error, event count and the verified digest (hex);
    with the answer's ``finish_reason``, ``usage`` and ``metadata`` as its metadata
    parts gave them (see :attr:`Answer.metadata`)."""

    seq: int
    status: str
    error: str
    digest: str
    finish_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


StreamEvent = PartStarted | TextDelta | JsonFragment | DataChunk | PartEnded | StreamEnded


# ------------------------------------------------------------------ the answer
@dataclass(slots=True)
class PartResult:
    """One part of an answer. ``role``, ``tool``, ``call``, ``name``: what its mime
    says it is (:class:`PartStarted`)."""

    part: str
    kind: str
    mime: str = ""
    schema: dict[str, Any] | None = None
    chunks: list[str] = field(default_factory=list)
    ended: bool = False
    error: str = ""
    info: PartInfo = PLAIN

    @property
    def role(self) -> str:
        """``reasoning``, ``tool-call``, ``tool-result``, ``metadata`` or ``""``."""
        return self.info.role

    @property
    def text(self) -> str:
        """The part's text (for JSON and data parts: their raw text)."""
        return "".join(self.chunks)

    @property
    def value(self) -> Any:
        """Parsed value: JSON for json parts (and JSON data), bytes for base64 data,
        else the text."""
        raw = self.text
        if self.kind == "json" or (self.kind == "data" and "json" in self.mime.split(";")[0]):
            return json.loads(raw)
        if self.kind == "data" and self.mime.endswith(";base64"):
            return base64.b64decode(raw)
        return raw


@dataclass(slots=True)
class ToolCall:
    """A tool call in an answer, with its result when the agent wrote one.

    ``arguments``: the arguments' JSON text as received; ``args``: parsed (``None``
    until the call's part ended, or when it is not JSON: then ``error`` says why).
    ``result``: the result's value (``None`` until it arrived: see ``has_result``);
    ``result_error``: the tool failed (the result part's error). ``part`` and
    ``result_part``: the part ids."""

    id: str
    name: str
    part: str
    arguments: str = ""
    args: Any = None
    ended: bool = False
    error: str = ""
    has_result: bool = False
    result: Any = None
    result_error: str = ""
    result_part: str = ""


@dataclass(slots=True)
class Answer:
    """Everything received for a stream, assembled part by part."""

    stream: str
    parts: dict[str, PartResult] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    status: str = "running"
    error: str = ""
    digest: str = ""
    events: int = 0
    from_seq: int = 0  # > 0 when picked up from a saved cursor (earlier events absent)
    #: the chain digest (hex) after event ``events``: with it, the answer is a resume
    #: point (``client.resume(cursor, prefix=answer)`` continues it)
    head_digest: str = ""

    @property
    def text(self) -> str:
        """The answer's text: its text parts (reasoning left out), concatenated in the
        order they started."""
        return "".join(
            pr.text
            for pr in map(self.parts.__getitem__, self.order)
            if pr.kind == "text" and pr.info.role == ""
        )

    @property
    def reasoning(self) -> str:
        """The model's reasoning: the text parts with role ``reasoning``, in order
        (``""`` when there is none)."""
        return "".join(
            pr.text for pr in map(self.parts.__getitem__, self.order) if pr.info.role == "reasoning"
        )

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The answer's tool calls in the order they started, each with its result
        when one arrived (matched by call id)."""
        found: list[ToolCall] = []
        calls: dict[str, ToolCall] = {}  # by call id: the latest call of that id
        for pr in map(self.parts.__getitem__, self.order):
            info = pr.info
            if info.role == "tool-call":
                call = calls.get(info.call)
                if call is None or call.part:  # a call id used again: a call of its own
                    call = calls[info.call] = ToolCall(info.call, info.tool, pr.part)
                    found.append(call)
                call.part, call.name = pr.part, info.tool or call.name
                call.arguments, call.ended, call.error = pr.text, pr.ended, pr.error
                if pr.ended and not pr.error:
                    try:
                        call.args = json.loads(call.arguments) if call.arguments.strip() else {}
                    except (ValueError, RecursionError):
                        call.args = None
            elif info.role == "tool-result" and pr.ended:
                call = calls.get(info.call)
                if call is None:  # a result without its call (picked up mid-answer)
                    call = calls[info.call] = ToolCall(info.call, info.tool, "")
                    found.append(call)
                call.has_result, call.result_part, call.result_error = True, pr.part, pr.error
                try:
                    call.result = pr.value
                except (ValueError, RecursionError):
                    call.result = pr.text
        return found

    @property
    def metadata(self) -> dict[str, Any]:
        """Every ended metadata part's fields, merged in order (a later part's field
        replaces an earlier one's); ``{}`` when there is none."""
        merged: dict[str, Any] = {}
        for value in self._metadata():
            merged.update(value)
        return merged

    @property
    def finish_reason(self) -> str:
        """Why the model stopped, as the last metadata part says (the provider's own
        word: ``stop``, ``tool_calls``, ``end_turn``…); ``""`` when unsaid."""
        reason = self.metadata.get("finish_reason")
        return reason if isinstance(reason, str) else ""

    @property
    def usage(self) -> dict[str, Any]:
        """Tokens used, summed over every metadata part's ``usage`` (an agent loop's
        model calls add up; nested counts such as ``output_tokens_details`` too)."""
        total: dict[str, Any] = {}
        for value in self._metadata():
            usage = value.get("usage")
            if isinstance(usage, dict):
                _add_usage(total, usage)
        return total

    def _metadata(self) -> list[dict[str, Any]]:
        found = []
        for pr in map(self.parts.__getitem__, self.order):
            if pr.info.role == "metadata" and pr.ended and not pr.error:
                try:
                    value = pr.value
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, dict):
                    found.append(value)
        return found

    @property
    def complete(self) -> bool:
        """True once the stream ended ``completed`` and was verified end to end."""
        return self.status == "completed" and self.from_seq == 0

    def json(self, part: str) -> Any:
        """Parsed value of a JSON part."""
        return self.parts[part].value

    def apply(self, ev: Event, digest_hex: str) -> StreamEvent:
        """Fold one protocol event into the answer; returns the typed event.
        ``digest_hex``: the chain digest after the last event of its frame (so
        :attr:`head_digest` is right once the frame's last event is applied)."""
        self.events = ev.seq
        self.head_digest = digest_hex
        k = ev.kind
        if k is Kind.TEXT:
            self._part(ev.part, "text").chunks.append(ev.body)
            return TextDelta(ev.seq, ev.part, ev.body)
        if k is Kind.JSON:
            pr = self._part(ev.part, "json")
            pr.chunks.append(ev.body)
            return JsonFragment(ev.seq, ev.part, ev.body, pr, len(pr.chunks))
        if k is Kind.DATA:
            self._part(ev.part, "data").chunks.append(ev.body)
            return DataChunk(ev.seq, ev.part, ev.body)
        if k is Kind.PART_START:
            schema, bad = _schema_of(ev.schema)
            info = part_info(ev.part, ev.part_kind, ev.mime)
            pr = PartResult(ev.part, ev.part_kind, ev.mime, schema, info=info)
            pr.error = bad  # a bad schema fails this part, never the client
            self.parts[ev.part] = pr
            self.order.append(ev.part)
            return PartStarted(
                ev.seq, ev.part, ev.part_kind, ev.mime, schema, info.role, info.tool, info.call
            )
        if k is Kind.PART_END:
            pr = self._part(ev.part, "")
            pr.ended = True
            pr.error = ev.error or pr.error or _client_check(pr)
            return PartEnded(ev.seq, ev.part, pr.error, pr)
        self.status, self.error, self.digest = ev.status, ev.error, digest_hex
        meta = self.metadata
        return StreamEnded(
            ev.seq, ev.status, ev.error, digest_hex, self.finish_reason, self.usage, meta
        )

    def _part(self, part: str, kind: str) -> PartResult:
        pr = self.parts.get(part)
        if pr is None:  # picked up mid-part from a cursor
            pr = self.parts[part] = PartResult(part, kind)
            self.order.append(part)
        return pr


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    """Add ``usage``'s counts into ``total`` (numbers add, dicts recurse, anything else
    is replaced)."""
    for key, value in usage.items():
        have = total.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            total[key] = value
        elif isinstance(value, dict):
            sub = have if isinstance(have, dict) else {}
            _add_usage(sub, value)
            total[key] = sub
        elif isinstance(have, int | float) and not isinstance(have, bool):
            total[key] = have + value
        else:
            total[key] = value


def _schema_of(text: str) -> tuple[Any, str]:
    """A part's JSON Schema and, when it cannot be used, why (the part fails)."""
    if not text:
        return None, ""
    try:
        schema = json.loads(text)
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except (ValueError, RecursionError) as exc:
        return None, f"schema is not JSON: {_first_line(exc)}"
    except jsonschema.SchemaError as exc:
        return None, f"invalid schema: {exc.message}"
    return schema, ""


def _client_check(pr: PartResult) -> str:
    """Why a JSON part's text is not what it must be ("" when it is): the error fails
    this part, never the stream or the client (bad JSON, 100k-deep nesting)."""
    if pr.kind != "json":
        return ""
    try:
        value = json.loads(pr.text)
    except (ValueError, RecursionError) as exc:
        return f"invalid JSON: {_first_line(exc)}"
    if pr.schema:
        try:
            jsonschema.validate(value, pr.schema)
        except jsonschema.ValidationError as exc:
            return f"schema validation failed: {exc.message}"
        except (jsonschema.SchemaError, RecursionError) as exc:
            return f"schema validation failed: {_first_line(exc)}"
    return ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# ------------------------------------------------------------------ partial JSON
def parse_partial_json(text: str) -> Any:
    """Parse a JSON prefix as far as it goes; ``None`` if nothing usable yet.

    Open strings, arrays and objects are closed; a key without a value, a trailing
    comma, an unfinished number or literal and a half-typed escape are dropped. jiter's
    partial mode (the parser of pydantic-core): for every prefix of valid JSON it gives
    the value the hand-written parser it replaced gave (a property test checks both),
    tens of times faster (benchmarks/partial_json.py). Text that is no JSON prefix gives
    ``None`` or the value before the first bad character; it never raises.
    """
    try:
        return jiter.from_json(
            text.encode("utf-8", "surrogatepass"), partial_mode="trailing-strings"
        )
    except ValueError:  # nothing usable yet, or not JSON
        return None
