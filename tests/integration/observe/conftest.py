"""Fixtures for the observability tests: an app whose agent waits on gates, and a
scraper that reads ``/metrics`` over real HTTP and parses it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from unbroken.errors import AuthError
from unbroken.protocol.frames import Hello
from unbroken.server import ConnectInfo, Output, Principal, Request, Unbroken

TIMEOUT = 10.0
GOOD_TOKEN = "good-token"


async def authenticate(hello: Hello, info: ConnectInfo) -> Principal:
    if hello.token != GOOD_TOKEN:
        raise AuthError("unknown token")
    return Principal("alice")


@dataclass
class Gated:
    """An app whose ``staged`` agent writes ``per_stage`` tokens, then waits on
    ``gates[stage]`` (``reached[stage]`` is set there), ``stages`` times."""

    app: Unbroken
    gates: defaultdict[int, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    reached: defaultdict[int, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )


def gated_app(**kw: Any) -> Gated:
    kw.setdefault("authenticate", authenticate)
    kw.setdefault("shutdown_grace", 1.0)
    kw.setdefault("metrics_path", "/metrics")
    app = Unbroken(**kw)
    g = Gated(app)

    @app.agent("staged")
    async def staged(req: Request, out: Output) -> None:
        for stage in range(req.input["stages"]):
            for i in range(req.input["per_stage"]):
                await out.text(f"s{stage}t{i} ")
            await out.flush()
            g.reached[stage].set()
            await g.gates[stage].wait()

    return g


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    r = await http.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
