"""A realistic agent app: a long answer streamed token by token, then a JSON part
checked against a schema, a Vega-Lite chart and a table.

Run it::

    unbroken serve examples.agent_app:app --port 8000

then start the ``report`` agent over ``ws://127.0.0.1:8000/ws`` with input such as
``{"topic": "ocean shipping", "words": 400, "tokens_per_s": 40}``. The pace
(tokens per second, like a model's) defaults to ``UNBROKEN_EXAMPLE_TOKENS_PER_S``
or 40; 0 streams as fast as the server can. Drop the connection whenever you
like: the run goes on, and a resume picks up at the next event.

This app lets anyone connect (``allow_anonymous=True``), which is right for a
demo on localhost only; ``examples/fastapi_app.py`` shows authentication.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

from unbroken.server import Output, Request, Unbroken

#: The JSON part's schema: validated by the server when the part ends.
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "words": {"type": "integer", "minimum": 0},
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "key_points": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["topic", "words", "sentiment", "key_points"],
    "additionalProperties": False,
}

_PROSE = (
    "the network drops while the agent keeps writing its answer to a log and every "
    "reader is only a cursor so a client that comes back resumes from the last event "
    "it verified with a digest chain that proves nothing was lost duplicated or "
    "reordered across the cut latency jitter bandwidth outage recovery throughput "
    "buffer stream token resilience answer model report data chart table summary"
)
_VOCABULARY = _PROSE.split()


def default_pace() -> float:
    return float(os.environ.get("UNBROKEN_EXAMPLE_TOKENS_PER_S", "40"))


async def fake_model(topic: str, words: int, tokens_per_s: float, seed: int) -> AsyncIterator[str]:
    """Stand-in for an LLM stream: seeded, so a run is reproducible."""
    rng = random.Random(seed)
    delay = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
    yield f"# {topic.title()}\n\n"
    for i in range(words):
        word = rng.choice(_VOCABULARY)
        sep = "" if i == 0 else (".\n\n" if i % 60 == 0 else (". " if i % 12 == 0 else " "))
        if sep.startswith("."):
            word = word.capitalize()
        yield sep + word
        if delay:
            await asyncio.sleep(delay)
        elif i % 256 == 0:
            await asyncio.sleep(0)  # as fast as possible, but let others run
    yield ".\n"


def chart_spec(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    values = [
        {"hour": h, "latency_ms": round(20 + 15 * rng.random() + (h % 6) * 4, 1)} for h in range(24)
    ]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "description": "p50 latency by hour",
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "hour", "type": "ordinal", "title": "hour (UTC)"},
            "y": {"field": "latency_ms", "type": "quantitative", "title": "p50 latency (ms)"},
        },
    }


def table(seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    regions = ["eu-west", "us-east", "ap-south", "sa-east"]
    return {
        "columns": [
            {"name": "region", "type": "string"},
            {"name": "requests", "type": "integer"},
            {"name": "error_rate", "type": "number"},
        ],
        "rows": [[r, rng.randint(10_000, 90_000), round(rng.random() / 50, 4)] for r in regions],
    }


def create_app(**options: Any) -> Unbroken:
    """Build the app; keyword options go to :class:`~unbroken.server.Unbroken`."""
    options.setdefault("allow_anonymous", True)
    app = Unbroken(**options)

    @app.agent("report")
    async def report(req: Request, out: Output) -> None:
        inp: dict[str, Any] = req.input if isinstance(req.input, dict) else {}
        topic = str(inp.get("topic", "network resilience"))
        words = int(inp.get("words", 400))
        pace = float(inp.get("tokens_per_s", default_pace()))
        seed = int(inp.get("seed", 7))

        # 1. the long answer, token by token, as the model produces it
        async for token in fake_model(topic, words, pace, seed):
            await out.text(token)

        # 2. a structured summary, streamed in fragments and validated at the end
        summary = {
            "topic": topic,
            "words": words,
            "sentiment": "positive",
            "key_points": ["the log is the buffer", "resume from the last seq", "verified"],
        }
        text = json.dumps(summary)
        async with out.json("summary", schema=SUMMARY_SCHEMA) as part:
            for i in range(0, len(text), 16):
                await part.write(text[i : i + 16])

        # 3. a chart (a whole component: one data part)
        await out.data("chart", chart_spec(seed), mime="application/vnd.vegalite.v5+json")

        # 4. a table
        await out.data("table", table(seed), mime="application/vnd.unbroken.table+json")

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        await out.text(json.dumps(req.input))

    return app


app = create_app()
