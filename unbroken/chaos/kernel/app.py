"""An app to serve inside a namespace: ``unbroken serve unbroken.chaos.kernel.app:app``.

Its one agent, ``answer``, replays a seeded answer from
:class:`~unbroken.chaos.StreamingResponseSimulator` at a pace. The client builds the
same :class:`AnswerSpec`, so it knows the answer it must end with without trusting the
server: :func:`exactness` compares the client's verified answer with the digest and
the part bodies computed without streaming. The app is the library's defaults
(heartbeat, window, limits) with anonymous access, so what a run measures is what a
user gets.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ...client.response import Answer
from ...server import Output, Request, Unbroken
from ..generators import GeneratedAnswer, StreamingResponseSimulator

if TYPE_CHECKING:
    from .namespace import NamespacedProcess
    from .topology import Topology

AnswerKind = Literal["text", "multipart"]

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "value": {"type": "number"}},
                "required": ["id", "value"],
            },
        },
    },
    "required": ["title", "rows"],
}


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    """Which answer the ``answer`` agent writes, and over how many seconds.

    ``text``: one text part of ``size`` bytes in ``chunk``-byte deltas. ``multipart``:
    a text part of ``size`` bytes, then a JSON part from a schema, a chart and a table.
    ``seconds=0`` writes as fast as the server takes it.
    """

    size: int = 200_000
    seconds: float = 2.0
    seed: int = 1
    kind: AnswerKind = "text"
    chunk: int = 1024

    def to_input(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_input(cls, data: Any) -> AnswerSpec:
        if not isinstance(data, dict):
            return cls()
        kind = str(data.get("kind", "text"))
        return cls(
            size=int(data.get("size", 200_000)),
            seconds=float(data.get("seconds", 2.0)),
            seed=int(data.get("seed", 1)),
            kind="multipart" if kind == "multipart" else "text",
            chunk=int(data.get("chunk", 1024)),
        )

    def generate(self) -> GeneratedAnswer:
        return _generate(self.size, self.seed, self.kind, self.chunk)


@functools.lru_cache(maxsize=16)
def _generate(size: int, seed: int, kind: AnswerKind, chunk: int) -> GeneratedAnswer:
    sim = StreamingResponseSimulator(seed)
    if kind == "text":
        return sim.text_answer(size, chunk)
    return sim.multipart_answer(
        [
            {"type": "text", "size": size, "chunk_size": chunk},
            {"type": "json", "id": "summary", "schema": _SCHEMA, "target_size": 20_000},
            {"type": "chart", "points": 100},
            {"type": "table", "rows": 200, "columns": 5},
        ]
    )


def exactness(spec: AnswerSpec, answer: Answer, epoch: str) -> list[str]:
    """What differs between the client's ``answer`` and the answer ``spec`` describes
    (empty: exact). Checks the status, the end digest against the one computed without
    streaming (from the stream id and ``epoch``), and every part's body."""
    problems: list[str] = []
    expected = spec.generate()
    if not answer.complete:
        problems.append(f"not complete: status {answer.status} {answer.error}".strip())
    want = expected.expected_digest(answer.stream, epoch)
    if answer.digest != want:
        problems.append(f"digest {answer.digest or '(none)'} != expected {want}")
    for part, body in expected.bodies.items():
        got = answer.parts.get(part)
        if got is None:
            problems.append(f"part {part} missing")
        elif got.text != body:
            problems.append(f"part {part}: {len(got.text)} chars, expected {len(body)}")
    return problems


def create_app(**options: Any) -> Unbroken:
    """The app; keyword options go to :class:`~unbroken.server.Unbroken`."""
    options.setdefault("allow_anonymous", True)
    app = Unbroken(**options)

    @app.agent("answer")
    async def answer(req: Request, out: Output) -> None:
        spec = AnswerSpec.from_input(req.input)
        # generating a large answer takes a while (~0.4 s per 10 MB): not on the loop,
        # which must keep sending heartbeats on the other connections
        events = (await asyncio.to_thread(spec.generate)).events
        loop = asyncio.get_running_loop()
        t0, n, tick = loop.time(), len(events), 0.01
        burst = max(1, math.ceil(n * tick / spec.seconds)) if spec.seconds > 0 else 64
        for i, ev in enumerate(events):
            await out.emit(ev)
            if i % burst == burst - 1:
                # paced against the clock, so a slow tick does not stretch the answer
                await asyncio.sleep(max(0.0, t0 + (i + 1) / n * spec.seconds - loop.time()))

    return app


app = create_app()

__all__ = ["AnswerKind", "AnswerSpec", "app", "create_app", "exactness"]


def serve_app(topo: Topology, port: int, *, timeout: float = 30.0) -> NamespacedProcess:
    """``unbroken serve`` of this module's app in the topology's server namespace,
    listening on ``port``; returns once it serves (stop it with ``.stop()``)."""
    unbroken = str(Path(sys.executable).with_name("unbroken"))
    proc = topo.server.start(
        unbroken, "serve", f"{__name__}:app", "--host", topo.addresses.server, "--port", str(port)
    )
    proc.wait_line(r"serving \S+ on ws://", timeout)
    return proc
