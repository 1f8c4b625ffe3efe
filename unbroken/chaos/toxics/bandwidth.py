"""``bandwidth``: limit a direction to ``rate`` bytes per second."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext

#: Largest piece sent at once, in seconds of the rate (Toxiproxy uses 100 ms too).
SLICE_SECONDS = 0.1


@dataclass
class Bandwidth(Toxic):
    """Pace the bytes of a direction at ``rate`` bytes/s (0 = unlimited).

    Each piece is released when the link would have finished sending it, in slices of at
    most 100 ms of data, so the average rate is exact. Toxiproxy unit: KB/s (1 KB = 1000 B).
    """

    type_name: ClassVar[str] = "bandwidth"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (Attribute("rate", "rate", 1000.0),)

    rate: float = 0.0

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        data = chunk.data
        while data:
            rate = self.rate
            if rate <= 0:
                await emit(Chunk(data, chunk.at))
                return
            piece_size = max(1, int(rate * SLICE_SECONDS))
            piece, data = data[:piece_size], data[piece_size:]
            now = ctx.now()
            free_at = max(now, ctx.state.get("free_at", 0.0)) + len(piece) / rate
            ctx.state["free_at"] = free_at
            if free_at > now and not await ctx.sleep(free_at - now):
                await emit(Chunk(piece + data, chunk.at))  # toxic removed: pass the rest
                return
            await emit(Chunk(piece, chunk.at))
