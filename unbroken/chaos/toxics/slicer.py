"""``slicer``: split writes into small pieces with a delay between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext


@dataclass
class Slicer(Toxic):
    """Cut every chunk into pieces of about ``average_size`` ± ``size_variation`` bytes,
    waiting ``delay`` seconds after each one. Bytes are unchanged, only re-framed.

    Same halving algorithm as Toxiproxy's ``slicer.go``. Toxiproxy units: bytes, bytes, µs.
    """

    type_name: ClassVar[str] = "slicer"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (
        Attribute("average_size", "average_size", 1.0, integer=True),
        Attribute("size_variation", "size_variation", 1.0, integer=True),
        Attribute("delay", "delay", 0.000001),
    )

    average_size: int = 0
    size_variation: int = 0
    delay: float = 0.0

    def boundaries(self, length: int, ctx: ToxicContext) -> list[int]:
        """Cut points ``[0, ..., length]`` for a chunk of ``length`` bytes."""
        cuts = [0]
        stack = [(0, length)]
        while stack:
            start, end = stack.pop()
            if (end - start) - self.average_size <= self.size_variation or end - start < 2:
                cuts.append(end)
                continue
            mid = start + (end - start) // 2
            if self.size_variation > 0:
                mid += ctx.rng.randrange(self.size_variation * 2) - self.size_variation
                mid = min(max(mid, start + 1), end - 1)
            stack.append((mid, end))
            stack.append((start, mid))
        return cuts

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        if self.average_size <= 0:
            await emit(chunk)
            return
        cuts = self.boundaries(len(chunk.data), ctx)
        for i in range(1, len(cuts)):
            await emit(Chunk(chunk.data[cuts[i - 1] : cuts[i]], chunk.at))
            if self.delay > 0 and i < len(cuts) - 1 and not await ctx.sleep(self.delay):
                await emit(Chunk(chunk.data[cuts[i] :], chunk.at))  # removed: pass the rest
                return
