"""``latency``: delay every chunk by ``latency`` ± ``jitter`` seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext


@dataclass
class Latency(Toxic):
    """Delay each chunk by ``latency`` seconds plus a uniform jitter in ``[-jitter, +jitter)``.

    The delay counts from when the proxy read the chunk, so chunks are pipelined (a burst is
    delayed once, not once per chunk) and their order is kept. Toxiproxy units: ms.
    """

    type_name: ClassVar[str] = "latency"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (
        Attribute("latency", "latency", 0.001),
        Attribute("jitter", "jitter", 0.001),
    )

    latency: float = 0.0
    jitter: float = 0.0

    def delay(self, ctx: ToxicContext) -> float:
        """The delay for the next chunk."""
        jitter = self.jitter
        if jitter > 0:
            return max(0.0, self.latency + ctx.rng.uniform(-jitter, jitter))
        return self.latency

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        due = chunk.at + self.delay(ctx)
        wait = due - ctx.now()
        if wait > 0:
            await ctx.sleep(wait)
        await emit(Chunk(chunk.data, max(due, chunk.at)))
