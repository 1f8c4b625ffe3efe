"""The chaos toolkit's JSON-Schema instance generator covers the keywords an agent's
schema uses beyond the basics (benchmarks/schema_coverage.py measures all of them
against hypothesis-jsonschema): every instance it makes validates."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from unbroken import ConfigError
from unbroken.chaos.generators import StreamingResponseSimulator

SCHEMAS: dict[str, dict[str, Any]] = {
    "multipleOf integer": {"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 100},
    "multipleOf number": {"type": "number", "multipleOf": 0.5, "minimum": 1, "maximum": 3},
    "uniqueItems": {
        "type": "array",
        "items": {"enum": [1, 2, 3]},
        "minItems": 3,
        "uniqueItems": True,
    },
    "contains": {"type": "array", "items": {"type": "integer"}, "contains": {"const": 42}},
    "tuple items": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "string"}, {"type": "integer"}],
    },
    "prefixItems": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "boolean"}],
        "items": False,
    },
    "minProperties": {
        "type": "object",
        "minProperties": 3,
        "additionalProperties": {"type": "integer"},
    },
    "dependencies": {
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"const": 2}},
        "required": ["a"],
        "dependentRequired": {"a": ["b"]},
    },
    "allOf": {"allOf": [{"type": "integer"}, {"minimum": 10}, {"maximum": 12}]},
    "anyOf": {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "boolean"}]},
    "oneOf": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]},
    "$ref": {
        "$defs": {"row": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "object",
        "properties": {"rows": {"type": "array", "items": {"$ref": "#/$defs/row"}}},
        "required": ["rows"],
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_instance_validates(name: str) -> None:
    schema = SCHEMAS[name]
    validator = jsonschema.validators.validator_for(schema)(schema)
    for seed in range(20):
        instance = StreamingResponseSimulator(seed=seed).json_instance(schema)
        assert validator.is_valid(instance), (seed, instance)


def test_the_same_seed_gives_the_same_instance_with_the_new_keywords() -> None:
    schema = SCHEMAS["$ref"]
    one = StreamingResponseSimulator(seed=5).json_instance(schema, target_size=5_000)
    two = StreamingResponseSimulator(seed=5).json_instance(schema, target_size=5_000)
    assert one == two and len(one["rows"]) > 10


def test_a_ref_that_points_nowhere_or_outside_is_a_config_error() -> None:
    sim = StreamingResponseSimulator(seed=1)
    with pytest.raises(ConfigError, match="points at nothing"):
        sim.json_instance({"$ref": "#/definitions/missing"})
    with pytest.raises(ConfigError, match="only local"):
        sim.json_instance({"$ref": "https://example.com/schema.json"})
