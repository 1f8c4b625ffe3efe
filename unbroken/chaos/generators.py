"""Seeded, reproducible agent answers: text, JSON from a schema, multi-part (text + data + charts).

An answer is a :class:`GeneratedAnswer`: the ordered :class:`~unbroken.protocol.events.Event`
list an agent would append (``part_start``, chunks, ``part_end`` per part; seq from 1; no final
``end``), plus what a test needs to check delivery without streaming anything: the expected
digest, a content hash, the assembled body of each part. The same seed and arguments always
give the same answer, whatever was generated before.

::

    sim = StreamingResponseSimulator(seed=42)
    answer = sim.text_answer(size=1_000_000, chunk_size=1024)
    for event in answer.events:            # the server replays these, then appends end()
        ...
    answer.expected_digest(stream_id, epoch)   # what the client must end up with
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import struct
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigError
from ..protocol.digest import chain
from ..protocol.events import (
    CHUNK_KIND_OF_PART,
    PART_ID_RE,
    Event,
    Kind,
    PartKind,
    Status,
    chunk,
    end,
    part_end,
    part_start,
    payload,
)

JsonSchema = Mapping[str, Any]

VEGA_LITE_MIME: Final = "application/vnd.vegalite+json"
VEGA_LITE_SCHEMA: Final = "https://vega.github.io/schema/vega-lite/v5.json"

_PROSE: Final = (
    "the agent streams an answer over a network that drops packets and resets connections "
    "while the log keeps every event so a client resumes from its last sequence number and "
    "verifies the chain digest before trusting a single byte of the response report data "
    "model latency bandwidth throughput recovery backoff jitter buffer window heartbeat "
    "gradual outage asymmetric proxy toxic slice limit timeout reset peer upstream downstream "
    "revenue region quarter forecast growth margin churn customer segment pipeline metric "
    "table chart summary analysis finding recommendation risk estimate confidence sample "
    "naïve café Zürich São Paulo Kraków façade déjà vu résumé 東京 数据 🙂 ✓ — π ≈ 3.14"
)
_WORDS: Final = tuple(_PROSE.split())
#: 256 tokens (mostly words, some with punctuation), so one random byte picks one: 10 MB
#: of prose in a fraction of a second.
_TOKEN_TABLE: Final = (
    tuple(_WORDS[i % len(_WORDS)] for i in range(200))
    + tuple(w + "," for w in _WORDS[:24])
    + tuple(w + "." for w in _WORDS[24:50])
    + tuple(w + ".\n\n" for w in _WORDS[50:56])
)
_MEAN_TOKEN_BYTES: Final = sum(len(t.encode()) + 1 for t in _TOKEN_TABLE) / 256


def content_hash(events: Sequence[Event]) -> str:
    """SHA-256 hex of an answer's content, independent of stream id, epoch and seq numbers.

    Over every event except ``end``, in order: ``kind`` (1 byte), the length of
    :func:`~unbroken.protocol.events.payload` (8 bytes big-endian), then the payload.
    """
    h = hashlib.sha256()
    pack = struct.Struct(">BQ").pack
    for event in events:
        if event.kind == Kind.END:
            continue
        data = payload(event)
        h.update(pack(int(event.kind), len(data)))
        h.update(data)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class PartSpec:
    """One part of an answer: id, kind (``text``/``json``/``data``), mime, schema JSON text."""

    id: str
    kind: PartKind
    mime: str
    schema: str = ""


@dataclass(frozen=True)
class GeneratedAnswer:
    """An answer's events (seq 1..N, no ``end``) and what to expect once delivered."""

    events: tuple[Event, ...]
    parts: tuple[PartSpec, ...]
    description: str = ""
    _bodies: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.events)

    def expected_events(self, status: Status = "completed") -> list[Event]:
        """The events plus the final ``end`` event the server appends."""
        return [*self.events, end(len(self.events) + 1, status)]

    def expected_digest(self, stream_id: str, epoch: str, status: Status = "completed") -> str:
        """Hex of the chain digest after the ``end`` event, computed without streaming."""
        return chain(stream_id, epoch, self.expected_events(status))[-1].hex()

    def content_hash(self) -> str:
        """See :func:`content_hash`."""
        return content_hash(self.events)

    def body(self, part_id: str) -> str:
        """The assembled body of a part (its chunks concatenated)."""
        if part_id not in self._bodies:
            if part_id not in {p.id for p in self.parts}:
                raise KeyError(f"no part {part_id!r}; parts: {[p.id for p in self.parts]}")
            self._bodies[part_id] = "".join(
                e.body for e in self.events if e.part == part_id and e.kind <= Kind.DATA
            )
        return self._bodies[part_id]

    def part_text(self, part_id: str = "text") -> str:
        """Assembled text of a part (same as :meth:`body`)."""
        return self.body(part_id)

    def part_json(self, part_id: str) -> Any:
        """The parsed JSON of a ``json`` part (or a data part with a JSON mime)."""
        return json.loads(self.body(part_id))

    @property
    def bodies(self) -> dict[str, str]:
        """Assembled bodies by part id."""
        return {p.id: self.body(p.id) for p in self.parts}

    @property
    def payload_bytes(self) -> int:
        """Total canonical payload bytes of the events (what the digest chain hashes)."""
        return sum(len(payload(e)) for e in self.events)

    @property
    def body_bytes(self) -> int:
        """Total UTF-8 bytes of the chunk bodies (the answer's content)."""
        return sum(len(e.body.encode()) for e in self.events if e.kind <= Kind.DATA)

    async def stream(self, interval: float = 0.0) -> AsyncIterator[Event]:
        """Yield the events, ``interval`` seconds apart (0: as fast as possible, yielding to
        the loop every 256 events)."""
        for i, event in enumerate(self.events):
            if interval > 0:
                await asyncio.sleep(interval)
            elif i % 256 == 255:
                await asyncio.sleep(0)
            yield event


class _Builder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.parts: list[PartSpec] = []

    def add(self, spec: PartSpec, bodies: Iterator[str] | Sequence[str]) -> None:
        if not PART_ID_RE.match(spec.id):
            raise ConfigError(f"part id {spec.id!r} must match {PART_ID_RE.pattern}")
        if spec.id in {p.id for p in self.parts}:
            raise ConfigError(f"part id {spec.id!r} is used twice")
        events = self.events
        kind: Kind = CHUNK_KIND_OF_PART[spec.kind]
        seq = len(events) + 1
        events.append(part_start(seq, spec.id, spec.kind, spec.mime, spec.schema))
        for body in bodies:
            seq += 1
            events.append(chunk(seq, kind, spec.id, body))
        events.append(part_end(seq + 1, spec.id))
        self.parts.append(spec)

    def answer(self, description: str) -> GeneratedAnswer:
        return GeneratedAnswer(tuple(self.events), tuple(self.parts), description)


def _split_utf8(text: str, chunk_size: int) -> list[str]:
    """Split ``text`` into pieces of at most ``chunk_size`` UTF-8 bytes, never inside a
    character (a piece may be longer only when one character is wider than ``chunk_size``)."""
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0, got {chunk_size}")
    data = text.encode()
    if data.isascii():
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]
    pieces: list[str] = []
    start = 0
    n = len(data)
    while start < n:
        stop = min(start + chunk_size, n)
        while stop < n and (data[stop] & 0xC0) == 0x80:  # continuation byte: back off
            stop -= 1
        if stop == start:  # one character wider than chunk_size
            stop = start + 1
            while stop < n and (data[stop] & 0xC0) == 0x80:
                stop += 1
        pieces.append(data[start:stop].decode())
        start = stop
    return pieces or [""]


def _split_chars(text: str, chunk_size: int) -> list[str]:
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0, got {chunk_size}")
    return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]


def _text(rng: random.Random, size: int) -> str:
    """Prose of exactly ``size`` UTF-8 bytes."""
    if size < 0:
        raise ConfigError(f"size must be >= 0, got {size}")
    out: list[str] = []
    have = 0
    while have < size:
        count = max(16, int((size - have) / _MEAN_TOKEN_BYTES) + 16)
        piece = " ".join(map(_TOKEN_TABLE.__getitem__, rng.randbytes(count))) + " "
        out.append(piece)
        have += len(piece.encode())
    data = "".join(out).encode()[:size]
    text = data.decode(errors="ignore")  # drop a character cut in half at the end
    return text + " " * (size - len(text.encode()))


# ---------------------------------------------------------------------- JSON Schema
_FIRST_NAMES: Final = ("ada", "grace", "alan", "edsger", "barbara", "ken", "linus", "margaret")


def _resolve(schema: JsonSchema, root: JsonSchema) -> JsonSchema:
    """``schema`` with the keywords that only rearrange others applied (no randomness
    drawn): a local ``$ref`` (``#/definitions/x``, ``#/$defs/x``) replaced by its
    target, ``allOf`` merged in, the first branch of ``anyOf``/``oneOf`` merged in."""
    for _ in range(32):
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ConfigError(f"only local $refs (#/definitions/…) are supported: {ref!r}")
            target: Any = root
            for key in ref[2:].split("/"):
                key = key.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or key not in target:
                    raise ConfigError(f"$ref {ref!r} points at nothing in the schema")
                target = target[key]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
        elif "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = _resolve(sub, root)
                for k, v in sub.items():
                    if k == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required":
                        merged["required"] = [*merged.get("required", []), *v]
                    elif (
                        k in ("minimum", "exclusiveMinimum", "minLength", "minItems")
                        and k in merged
                    ):
                        merged[k] = max(merged[k], v)
                    elif (
                        k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
                        and k in merged
                    ):
                        merged[k] = min(merged[k], v)
                    else:
                        merged[k] = v
            schema = merged
        elif "anyOf" in schema or "oneOf" in schema:
            key = "anyOf" if "anyOf" in schema else "oneOf"
            rest = {k: v for k, v in schema.items() if k != key}
            schema = {**rest, **_resolve(schema[key][0], root)}
        else:
            return schema
    raise ConfigError("$ref, allOf, anyOf or oneOf nest deeper than 32 levels")


_REARRANGE: Final = ("$ref", "allOf", "anyOf", "oneOf")


def _json_instance(
    schema: JsonSchema, rng: random.Random, depth: int = 0, root: JsonSchema | None = None
) -> Any:
    if depth > 32:
        raise ConfigError("schema nests deeper than 32 levels")
    root = schema if root is None else root
    if any(k in schema for k in _REARRANGE):
        schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        options = [k for k in kind if k != "null"] or kind
        kind = rng.choice(options)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        required = set(schema.get("required", ()))
        out: dict[str, Any] = {}
        for name, sub in schema.get("properties", {}).items():
            if name in required or rng.random() < 0.7:
                out[name] = _json_instance(sub, rng, depth + 1, root)
        for name in required - out.keys():
            out[name] = _json_instance({}, rng, depth + 1, root)  # required but not described
        if "dependencies" in schema or "dependentRequired" in schema:
            deps = {**schema.get("dependencies", {}), **schema.get("dependentRequired", {})}
            for name, needs in deps.items():
                if name in out and isinstance(needs, list):
                    for need in needs:
                        if need not in out:
                            sub = schema.get("properties", {}).get(need, {})
                            out[need] = _json_instance(sub, rng, depth + 1, root)
        extra = schema.get("additionalProperties", True)
        n = 0
        while len(out) < int(schema.get("minProperties", 0)) and extra is not False:
            n += 1
            if f"extra{n}" not in out:
                sub = extra if isinstance(extra, Mapping) else {}
                out[f"extra{n}"] = _json_instance(sub, rng, depth + 1, root)
        return out
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = int(schema.get("maxItems", low + 4))
        items = schema.get("items", {})
        positional = schema.get("prefixItems", items if isinstance(items, list) else None)
        if positional is not None:  # a tuple: one instance per position
            return [_json_instance(sub, rng, depth + 1, root) for sub in positional]
        out_items = [
            _json_instance(items, rng, depth + 1, root) for _ in range(rng.randint(low, high))
        ]
        if schema.get("uniqueItems"):
            seen: dict[str, Any] = {}
            for value in out_items:
                seen.setdefault(json.dumps(value, sort_keys=True), value)
            for _ in range(64 * max(1, low)):  # draw more until minItems distinct ones
                if len(seen) >= low:
                    break
                value = _json_instance(items, rng, depth + 1, root)
                seen.setdefault(json.dumps(value, sort_keys=True), value)
            out_items = list(seen.values())
        if "contains" in schema:
            out_items.append(_json_instance(schema["contains"], rng, depth + 1, root))
            if "maxItems" in schema and len(out_items) > int(schema["maxItems"]):
                out_items = out_items[-int(schema["maxItems"]) :]
        return out_items
    if kind == "string":
        return _json_string(schema, rng)
    if kind == "integer":
        return _json_integer(schema, rng)
    if kind == "number":
        return _json_number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise ConfigError(f"unsupported JSON Schema type {kind!r}")


def _json_integer(schema: JsonSchema, rng: random.Random) -> int:
    low: int | None = None
    high: int | None = None
    if "minimum" in schema:
        low = math.ceil(schema["minimum"])
    if "exclusiveMinimum" in schema:
        bound = math.floor(schema["exclusiveMinimum"]) + 1
        low = bound if low is None else max(low, bound)
    if "maximum" in schema:
        high = math.floor(schema["maximum"])
    if "exclusiveMaximum" in schema:
        bound = math.ceil(schema["exclusiveMaximum"]) - 1
        high = bound if high is None else min(high, bound)
    if low is None:
        low = 0 if high is None else min(0, high)
    if high is None:
        high = low + 1000
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:  # a multiple of step in [low, high]
        first, last = -(-low // step), high // step
        return step * rng.randint(first, max(first, last))
    return rng.randint(low, max(low, high))


def _json_number(schema: JsonSchema, rng: random.Random) -> float:
    ex_low = "exclusiveMinimum" in schema
    ex_high = "exclusiveMaximum" in schema
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low_f = float(low) if low is not None else (0.0 if high is None else min(0.0, high - 1000.0))
    high_f = float(high) if high is not None else low_f + 1000.0

    def valid(v: float) -> bool:
        above = v > low_f if ex_low else v >= low_f
        below = v < high_f if ex_high else v <= high_f
        return above and below

    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        first, last = math.ceil(low_f / step), math.floor(high_f / step)
        value = float(step * rng.randint(first, max(first, last)))
        if valid(value) and (value / step).is_integer():
            return value
    value = round(rng.uniform(low_f, high_f), 3)
    if not valid(value):
        value = rng.uniform(low_f, high_f)
    if not valid(value):
        value = low_f + (high_f - low_f) / 2
    return value


def _json_string(schema: JsonSchema, rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return (
            f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        )
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "email":
        return f"{rng.choice(_FIRST_NAMES)}{rng.randint(1, 999)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(_WORDS[:40])}/{rng.randint(1, 9999)}"
    if fmt == "uuid":
        return str(_uuid(rng))
    low = int(schema.get("minLength", 3))
    high = int(schema.get("maxLength", max(low, 24)))
    length = rng.randint(low, max(low, high))
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length].ljust(length, "x")


def _uuid(rng: random.Random) -> str:
    n = rng.getrandbits(128)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


#: Distinct items generated when growing an array; beyond that, items are drawn from them.
_GROW_POOL: Final = 1024


def _grow_to(instance: Any, schema: JsonSchema, rng: random.Random, target: int) -> Any:
    """Append items to the shallowest array without ``maxItems`` until the document reaches
    ``target`` bytes of JSON (after ``_GROW_POOL`` fresh items, drawn from those: fast)."""
    queue: list[tuple[Any, JsonSchema]] = [(instance, schema)]
    while queue:
        value, sub = queue.pop(0)
        if isinstance(value, list) and "maxItems" not in sub:
            size = len(json.dumps(instance, ensure_ascii=False).encode())
            items = sub.get("items", {})
            pool: list[tuple[Any, int]] = []
            while size < target:
                if len(pool) < _GROW_POOL:
                    item = _json_instance(items, rng, 1, schema)
                    pool.append((item, len(json.dumps(item, ensure_ascii=False).encode()) + 2))
                    value.append(item)
                    size += pool[-1][1]
                    continue
                mean = sum(n for _, n in pool) / len(pool)
                batch = rng.choices(pool, k=max(1, int((target - size) / mean) + 1))
                value.extend(item for item, _ in batch)
                size += sum(n for _, n in batch)
            return instance
        if isinstance(value, dict):
            for name, prop in sub.get("properties", {}).items():
                if name in value:
                    queue.append((value[name], prop))
        elif isinstance(value, list):
            queue.extend((v, sub.get("items", {})) for v in value[:1])
    raise ConfigError("target_size needs an array without maxItems in the schema")


# ---------------------------------------------------------------------- data components
def _png(rng: random.Random, width: int, height: int) -> bytes:
    """A valid RGB PNG of noise (stored, uncompressed: fast for 10 MB+)."""

    def block(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = width * 3
    noise = rng.randbytes(row * height)
    raw = b"".join(b"\x00" + noise[y * row : (y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + block(b"IHDR", header)
        + block(b"IDAT", zlib.compress(raw, 0))
        + block(b"IEND", b"")
    )


def _vega_lite(rng: random.Random, points: int, series: int) -> str:
    values = []
    for s in range(series):
        y = rng.uniform(10, 100)
        for x in range(points):
            y = max(0.0, y + rng.uniform(-5, 5))
            values.append({"x": x, "y": round(y, 2), "series": f"s{s + 1}"})
    spec = {
        "$schema": VEGA_LITE_SCHEMA,
        "description": "generated by unbroken.chaos",
        "data": {"values": values},
        "mark": "line",
        "encoding": {
            "x": {"field": "x", "type": "quantitative"},
            "y": {"field": "y", "type": "quantitative"},
            "color": {"field": "series", "type": "nominal"},
        },
    }
    return json.dumps(spec, ensure_ascii=False)


_REGIONS: Final = ("north", "south", "east", "west", "São Paulo", "Zürich", "東京")


def _csv(rng: random.Random, rows: int, columns: int) -> str:
    names = ["id", "region", "units", "revenue", "margin", "date"]
    names += [f"c{i}" for i in range(len(names), columns)]
    names = names[: max(1, columns)]
    lines = [",".join(names)]
    for i in range(rows):
        cells = []
        for name in names:
            if name == "id":
                cells.append(str(i + 1))
            elif name == "region":
                cells.append(rng.choice(_REGIONS))
            elif name == "units":
                cells.append(str(rng.randint(0, 5000)))
            elif name in ("revenue", "margin"):
                cells.append(f"{rng.uniform(0, 1e6):.2f}")
            elif name == "date":
                cells.append(f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
            else:
                cells.append(str(rng.randint(0, 99)))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


class StreamingResponseSimulator:
    """Seeded generator of agent answers (the seed's ``StreamingResponseSimulator``).

    Sync "build" methods (``text_answer``, ``json_answer``, ``multipart_answer``) return a
    :class:`GeneratedAnswer`; the async ``generate_*_stream`` methods (the seed's face) yield
    the same events. Each call's randomness is derived from the seed and the call's
    arguments only, so a call is reproducible on its own.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _rng(self, *key: object) -> random.Random:
        text = json.dumps([self.seed, *key], sort_keys=True, default=repr)
        return random.Random(text)

    # -- sync builders
    def text_answer(
        self, size: int, chunk_size: int = 1024, *, part_id: str = "text", mime: str = "text/plain"
    ) -> GeneratedAnswer:
        """One text part of exactly ``size`` UTF-8 bytes in chunks of ``chunk_size`` bytes."""
        builder = _Builder()
        text = _text(self._rng("text", size, chunk_size, part_id), size)
        builder.add(PartSpec(part_id, "text", mime), _split_utf8(text, chunk_size))
        return builder.answer(f"text {size} B in {chunk_size} B chunks")

    def json_instance(self, schema: JsonSchema, *, target_size: int | None = None) -> Any:
        """A valid instance of ``schema`` (see :meth:`json_answer` for what is supported)."""
        rng = self._rng("json", schema, target_size)
        instance = _json_instance(schema, rng)
        if target_size is not None:
            instance = _grow_to(instance, schema, rng, target_size)
        return instance

    def json_answer(
        self,
        schema: JsonSchema,
        progressive: bool = True,
        *,
        chunk_size: int = 256,
        part_id: str = "json",
        target_size: int | None = None,
    ) -> GeneratedAnswer:
        """One JSON part holding a valid instance of ``schema``.

        Supported: ``type`` (object, array, string, integer, number, boolean, null, or a
        list), ``properties``, ``required``, ``items``, ``enum``, ``const``, ``minItems``,
        ``maxItems``, ``minLength``, ``maxLength``, ``minimum``, ``maximum``,
        ``exclusiveMinimum``, ``exclusiveMaximum``, ``format`` (date-time, date, email,
        uri, uuid), ``multipleOf``, ``uniqueItems``, ``contains``, tuple ``items`` and
        ``prefixItems``, ``minProperties``, ``additionalProperties``, ``dependencies``,
        ``allOf``, ``anyOf``/``oneOf`` (the first branch) and local ``$ref``; ``pattern``,
        ``patternProperties``, ``propertyNames``, ``not`` and ``if`` are not.
        ``progressive``: fragments of ``chunk_size`` characters cut anywhere, as a model
        streams them; otherwise one fragment.
        ``target_size``: grow the shallowest unbounded array to about that many bytes.
        """
        instance = self.json_instance(schema, target_size=target_size)
        text = json.dumps(instance, ensure_ascii=False)
        fragments = _split_chars(text, chunk_size) if progressive else [text]
        schema_text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        builder = _Builder()
        builder.add(PartSpec(part_id, "json", "application/json", schema_text), fragments)
        return builder.answer(f"json {len(text)} chars, progressive={progressive}")

    def multipart_answer(self, components: Sequence[Mapping[str, Any]]) -> GeneratedAnswer:
        """Several parts in order. Each component is a dict with a ``type``:

        * ``text``: ``size`` (bytes), ``chunk_size`` (1024), ``mime`` (text/plain)
        * ``json``: ``schema``, ``progressive`` (true), ``chunk_size`` (256), ``target_size``
        * ``chart``: a Vega-Lite line chart (``application/vnd.vegalite+json``):
          ``points`` (50), ``series`` (2)
        * ``table``: CSV (``text/csv``): ``rows`` (20), ``columns`` (5)
        * ``image``: a PNG as base64 (``image/png``): ``width``/``height`` (64), or
          ``size`` (approximate PNG bytes)

        Optional ``id`` (default: the type, then ``type2``, ...). Data parts are split into
        ``chunk_size`` (65536) characters.
        """
        builder = _Builder()
        seen: dict[str, int] = {}
        for index, component in enumerate(components):
            kind = component.get("type")
            seen[str(kind)] = seen.get(str(kind), 0) + 1
            default_id = str(kind) if seen[str(kind)] == 1 else f"{kind}{seen[str(kind)]}"
            part_id = str(component.get("id", default_id))
            rng = self._rng("part", index, dict(component))
            if kind == "text":
                size = int(component.get("size", 1024))
                chunk_size = int(component.get("chunk_size", 1024))
                mime = str(component.get("mime", "text/plain"))
                text = _text(rng, size)
                builder.add(PartSpec(part_id, "text", mime), _split_utf8(text, chunk_size))
            elif kind == "json":
                schema = component.get("schema", {"type": "object"})
                instance = _json_instance(schema, rng)
                if component.get("target_size") is not None:
                    instance = _grow_to(instance, schema, rng, int(component["target_size"]))
                text = json.dumps(instance, ensure_ascii=False)
                chunk_size = int(component.get("chunk_size", 256))
                progressive = bool(component.get("progressive", True))
                fragments = _split_chars(text, chunk_size) if progressive else [text]
                schema_text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
                builder.add(PartSpec(part_id, "json", "application/json", schema_text), fragments)
            elif kind in ("chart", "table", "image"):
                chunk_size = int(component.get("chunk_size", 65536))
                if kind == "chart":
                    points = int(component.get("points", 50))
                    body = _vega_lite(rng, points, int(component.get("series", 2)))
                    mime = VEGA_LITE_MIME
                elif kind == "table":
                    rows, columns = int(component.get("rows", 20)), int(component.get("columns", 5))
                    body = _csv(rng, rows, columns)
                    mime = "text/csv"
                else:
                    if "size" in component:
                        pixels = max(1, int(component["size"]) // 3)
                        width = int(component.get("width", min(1024, pixels)))
                        height = max(1, math.ceil(pixels / width))
                    else:
                        width = int(component.get("width", 64))
                        height = int(component.get("height", 64))
                    body = base64.b64encode(_png(rng, width, height)).decode("ascii")
                    mime = "image/png"
                builder.add(PartSpec(part_id, "data", mime), _split_chars(body, chunk_size))
            else:
                raise ConfigError(
                    f"component {index}: type {kind!r} is not text, json, chart, table or image"
                )
        names = ", ".join(p.id for p in builder.parts)
        return builder.answer(f"multipart: {names}")

    # -- the seed's async face
    async def generate_text_stream(self, size: int, chunk_size: int = 1024) -> AsyncIterator[Event]:
        """Yield the events of :meth:`text_answer`."""
        async for event in self.text_answer(size, chunk_size).stream():
            yield event

    async def generate_json_stream(
        self, schema: JsonSchema, progressive: bool = True
    ) -> AsyncIterator[Event]:
        """Yield the events of :meth:`json_answer`."""
        async for event in self.json_answer(schema, progressive).stream():
            yield event

    async def generate_multipart_stream(
        self, components: Sequence[Mapping[str, Any]]
    ) -> AsyncIterator[Event]:
        """Yield the events of :meth:`multipart_answer`."""
        async for event in self.multipart_answer(components).stream():
            yield event
