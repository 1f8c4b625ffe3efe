"""What a client user sees: typed events, and the assembled, verified answer."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import jiter
import jsonschema

from ..protocol.events import Event, Kind


# ------------------------------------------------------------------ typed events
@dataclass(frozen=True, slots=True)
class PartStarted:
    """A part opened: ``kind`` is text, json or data."""

    seq: int
    part: str
    kind: str
    mime: str
    schema: dict[str, Any] | None


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
    """The final event: status, error, event count and the verified digest (hex)."""

    seq: int
    status: str
    error: str
    digest: str


StreamEvent = PartStarted | TextDelta | JsonFragment | DataChunk | PartEnded | StreamEnded


# ------------------------------------------------------------------ the answer
@dataclass(slots=True)
class PartResult:
    """One part of an answer."""

    part: str
    kind: str
    mime: str = ""
    schema: dict[str, Any] | None = None
    chunks: list[str] = field(default_factory=list)
    ended: bool = False
    error: str = ""

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
        """All text parts, concatenated in the order they started."""
        return "".join(self.parts[p].text for p in self.order if self.parts[p].kind == "text")

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
            pr = PartResult(ev.part, ev.part_kind, ev.mime, schema)
            pr.error = bad  # a bad schema fails this part, never the client
            self.parts[ev.part] = pr
            self.order.append(ev.part)
            return PartStarted(ev.seq, ev.part, ev.part_kind, ev.mime, schema)
        if k is Kind.PART_END:
            pr = self._part(ev.part, "")
            pr.ended = True
            pr.error = ev.error or pr.error or _client_check(pr)
            return PartEnded(ev.seq, ev.part, pr.error, pr)
        self.status, self.error, self.digest = ev.status, ev.error, digest_hex
        return StreamEnded(ev.seq, ev.status, ev.error, digest_hex)

    def _part(self, part: str, kind: str) -> PartResult:
        pr = self.parts.get(part)
        if pr is None:  # picked up mid-part from a cursor
            pr = self.parts[part] = PartResult(part, kind)
            self.order.append(part)
        return pr


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
