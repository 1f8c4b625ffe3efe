"""A fake model provider: replays SSE transcripts over real HTTP, for the real SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from unbroken.testing import serve

TRANSCRIPTS = Path(__file__).parent / "transcripts"


class CutConnection(Exception):
    """Raised inside a response body: the server aborts the connection mid-body."""


@dataclass
class FakeProvider:
    """Replays ``transcripts/<model>.sse`` for any POST whose body names that model
    (``<model>.<n>.sse`` for its n-th request when there is one: an agent loop).

    ``#GATE`` waits for :attr:`gate`; ``#STALL`` sends nothing more (until shutdown);
    ``#CUT`` aborts the connection mid-body (no final chunk: a network cut).
    """

    url: str = ""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    at_gate: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body))
        model = str(body.get("model"))
        self.calls[model] = n = self.calls.get(model, 0) + 1
        path = TRANSCRIPTS / f"{model}.{n}.sse"  # the model's n-th answer, if it has one
        if n == 1 or not path.is_file():
            path = TRANSCRIPTS / f"{model}.sse"
        if not path.is_file():
            return JSONResponse({"error": {"message": "no such transcript"}}, status_code=404)
        blocks = [b for b in path.read_text().split("\n\n") if b.strip()]

        async def body_iter() -> AsyncIterator[bytes]:
            for block in blocks:
                if block == "#GATE":
                    self.at_gate.set()
                    await self.gate.wait()
                elif block == "#STALL":
                    await self.stop.wait()
                    return
                elif block == "#CUT":
                    raise CutConnection("transcript says: cut")
                else:
                    yield (block + "\n\n").encode()
                    await asyncio.sleep(0)

        return StreamingResponse(body_iter(), media_type="text/event-stream")

    def app(self) -> Starlette:
        routes = [
            Route(p, self.handle, methods=["POST"])
            for p in ("/v1/responses", "/v1/chat/completions", "/v1/messages")
        ]
        return Starlette(routes=routes)


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    async with serve(fake.app()) as srv:
        fake.url = srv.http
        yield fake
        fake.gate.set()
        fake.stop.set()


def sse_data(name: str) -> list[dict[str, Any]]:
    """The JSON payloads of a transcript, in order (markers and ``[DONE]`` skipped)."""
    found = []
    for block in (TRANSCRIPTS / f"{name}.sse").read_text().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                found.append(json.loads(line[6:]))
    return found
