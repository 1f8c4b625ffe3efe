"""Which JSON Schema keywords each instance generator handles: unbroken's own
(``StreamingResponseSimulator.json_instance``, seeded and reproducible, the chaos
toolkit's) and hypothesis-jsonschema's ``from_schema``.

For each keyword, a small schema that uses it (inside an object property too, since
an agent's JSON part is nearly always an object) is given to each generator for 20
instances; the keyword is *handled* when every instance is produced without an error and
validates against the schema (jsonschema; draft 7 unless the schema's ``$schema`` names
another). An error is reported with its first line.

Run: ``.venv/bin/python -m benchmarks.schema_coverage`` (hypothesis-jsonschema comes with
the dev extra; writes benchmarks/results/schema_coverage.json).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from unbroken.chaos.generators import StreamingResponseSimulator

RESULTS = Path(__file__).resolve().parent / "results" / "schema_coverage.json"
N = 20

#: keyword → a schema that needs it to be honoured (a generator that ignores the keyword
#: produces invalid instances)
KEYWORDS: dict[str, dict[str, Any]] = {
    "type": {"type": "integer"},
    "type (list)": {"type": ["integer", "string"]},
    "enum": {"enum": ["a", 1, None]},
    "const": {"const": {"x": 1}},
    "properties+required": {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
    },
    "items": {"type": "array", "items": {"type": "boolean"}},
    "minItems/maxItems": {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 2,
        "maxItems": 3,
    },
    "minLength/maxLength": {"type": "string", "minLength": 5, "maxLength": 6},
    "minimum/maximum": {"type": "number", "minimum": 2.5, "maximum": 3},
    "exclusiveMinimum/Maximum": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
    "format: date-time": {"type": "string", "format": "date-time"},
    "format: email": {"type": "string", "format": "email"},
    "format: ipv4": {"type": "string", "format": "ipv4"},
    "pattern": {"type": "string", "pattern": "^[a-z]{3}-[0-9]{2,4}$"},
    "multipleOf": {"type": "integer", "multipleOf": 7, "minimum": 1},
    "uniqueItems": {
        "type": "array",
        "items": {"enum": [1, 2, 3]},
        "minItems": 3,
        "uniqueItems": True,
    },
    "contains": {"type": "array", "items": {"type": "integer"}, "contains": {"const": 42}},
    "items (tuple)": {
        "type": "array",
        "items": [{"type": "string"}, {"type": "integer"}],
        "minItems": 2,
    },
    "prefixItems": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "minItems": 2,
        "items": False,
    },
    "additionalProperties: false": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    },
    "additionalProperties: schema": {
        "type": "object",
        "minProperties": 2,
        "additionalProperties": {"type": "integer"},
    },
    "patternProperties": {
        "type": "object",
        "minProperties": 1,
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    },
    "propertyNames": {
        "type": "object",
        "minProperties": 1,
        "propertyNames": {"pattern": "^[A-Z]+$"},
    },
    "minProperties/maxProperties": {"type": "object", "minProperties": 2, "maxProperties": 2},
    "dependencies": {
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"const": 2}},
        "required": ["a"],
        "dependencies": {"a": ["b"]},
    },
    "allOf": {"allOf": [{"type": "integer"}, {"minimum": 10}]},
    "anyOf": {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "boolean"}]},
    "oneOf": {"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "string"}]},
    "not": {"type": "integer", "not": {"enum": [0, 1, 2]}, "minimum": 0, "maximum": 4},
    "if/then/else": {
        "type": "integer",
        "if": {"minimum": 10},
        "then": {"multipleOf": 5},
        "else": {"maximum": 3},
    },
    "$ref/definitions": {
        "definitions": {"n": {"type": "integer", "minimum": 100}},
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/n"}},
        "required": ["a"],
    },
}


def in_object(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as the required property of an object (definitions kept at the root)."""
    inner = {k: v for k, v in schema.items() if k not in ("definitions", "$schema")}
    outer: dict[str, Any] = {"type": "object", "properties": {"v": inner}, "required": ["v"]}
    for k in ("definitions", "$schema"):
        if k in schema:
            outer[k] = schema[k]
    return outer


def ours(schema: dict[str, Any]) -> list[Any]:
    return [StreamingResponseSimulator(seed=i).json_instance(schema) for i in range(N)]


def hypothesis_jsonschema(schema: dict[str, Any]) -> list[Any]:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis_jsonschema import from_schema

    drawn: list[Any] = []

    @seed(1)
    @settings(
        max_examples=N,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(from_schema(schema))
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn


def verdict(generate: Callable[[dict[str, Any]], list[Any]], schema: dict[str, Any]) -> str:
    try:
        instances = generate(schema)
    except Exception as exc:  # a generator's failure is the finding
        return f"error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:100]}"
    if not instances:
        return "error: no instance"
    # draft 7 (what hypothesis-jsonschema reads) unless the schema names its draft
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = cls(schema)
    bad = [v for v in instances if not validator.is_valid(v)]
    if bad:
        return f"invalid: {len(bad)}/{len(instances)}, e.g. {json.dumps(bad[0])[:60]}"
    return "ok"


def run() -> dict[str, Any]:
    import hypothesis
    import hypothesis_jsonschema as hj

    rows = []
    for keyword, schema in KEYWORDS.items():
        for where, s in (("top", schema), ("in object", in_object(schema))):
            row = {
                "keyword": keyword,
                "where": where,
                "ours": verdict(ours, s),
                "hypothesis_jsonschema": verdict(hypothesis_jsonschema, s),
            }
            rows.append(row)
            print(
                f"{keyword:32} {where:9}  ours: {row['ours'][:50]:50}  "
                f"h-js: {row['hypothesis_jsonschema'][:60]}",
                flush=True,
            )
    return {
        "benchmark": "schema_coverage",
        "python": platform.python_version(),
        "hypothesis": hypothesis.__version__,
        "hypothesis_jsonschema": getattr(hj, "__version__", "?"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "instances_per_schema": N,
        "handled": {
            name: sum(r[name] == "ok" for r in rows) for name in ("ours", "hypothesis_jsonschema")
        },
        "cases": len(rows),
        "results": rows,
    }


if __name__ == "__main__":
    import importlib.util

    if importlib.util.find_spec("hypothesis_jsonschema") is None:
        raise SystemExit("pip install hypothesis-jsonschema (a measurement-only dependency)")
    result = run()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(result["handled"], "of", result["cases"])
