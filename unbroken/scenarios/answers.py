"""The answers a run streams, generated (seeded, reproducible): text, a JSON report, a
multi-part answer. A case picks which (see :meth:`.cases.Case.answers`); nothing here
knows a scenario."""

from __future__ import annotations

import functools
from typing import Any, Literal

from ..chaos import GeneratedAnswer, StreamingResponseSimulator

AnswerShape = Literal["text", "json", "multipart"]

#: The JSON answers' schema: a report with rows of typed objects.
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 5, "maxLength": 60},
        "generated": {"type": "string", "format": "date-time"},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "minLength": 3, "maxLength": 24},
                    "region": {"enum": ["emea", "amer", "apac"]},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "active": {"type": "boolean"},
                },
                "required": ["id", "name", "region", "score", "active"],
            },
        },
    },
    "required": ["title", "generated", "rows"],
}

TEXT_CHUNK = 48


def chunk_size(size: int) -> int:
    """Token-like chunks: 8 bytes for the smallest answers, up to 48 (so a small answer
    still has a couple of hundred events, and 'final' has some left to lose)."""
    return max(8, min(TEXT_CHUNK, size // 200))


#: At most this many fragments per JSON part. The Python client builds
#: ``JsonFragment.text_so_far`` (the whole document so far) for every fragment: quadratic
#: in the fragment count, and quadratic in memory while fragments queue behind a reader
#: (a 3 MB document in 48-character fragments ran a 23 GB machine out of memory).
MAX_JSON_FRAGMENTS = 300


def json_chunk(size: int) -> int:
    """Fragment size of a JSON part of about ``size`` bytes (see MAX_JSON_FRAGMENTS)."""
    return max(chunk_size(size), -(-size // MAX_JSON_FRAGMENTS))


@functools.lru_cache(maxsize=64)
def answer(kind: AnswerShape, size: int, seed: int) -> GeneratedAnswer:
    """An answer of about ``size`` bytes of shape ``kind``, from ``seed`` (cached)."""
    sim = StreamingResponseSimulator(seed)
    chunk = chunk_size(size)
    if kind == "text":
        return sim.text_answer(size, chunk)
    if kind == "json":
        return sim.json_answer(REPORT_SCHEMA, chunk_size=json_chunk(size), target_size=size)
    return sim.multipart_answer(
        [
            {"type": "text", "size": max(200, int(size * 0.45)), "chunk_size": chunk},
            {
                "type": "json",
                "schema": REPORT_SCHEMA,
                "target_size": max(200, int(size * 0.2)),
                "chunk_size": json_chunk(max(200, int(size * 0.2))),
            },
            {"type": "chart", "points": max(5, size // 2000), "series": 2},
            {"type": "table", "rows": max(5, size // 1500), "columns": 5, "chunk_size": 4096},
            {"type": "image", "size": max(300, int(size * 0.1)), "chunk_size": 4096},
        ]
    )
