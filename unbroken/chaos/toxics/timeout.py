"""``timeout``: nothing moves for ``timeout`` seconds, then the connection closes (0: hold)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext


@dataclass
class Timeout(Toxic):
    """Drop every byte of the direction (a black hole); after ``timeout`` seconds close the
    connection with a FIN. ``timeout=0`` holds the connection open forever, which is what a
    silently dead network looks like. Toxiproxy unit: ms.
    """

    type_name: ClassVar[str] = "timeout"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (Attribute("timeout", "timeout", 0.001),)

    timeout: float = 0.0

    def activate(self, ctx: ToxicContext) -> None:
        if self.timeout > 0:
            ctx.spawn(self._close_later(ctx, self.timeout))

    async def _close_later(self, ctx: ToxicContext, seconds: float) -> None:
        if await ctx.sleep(seconds):
            ctx.cut("fin", "timeout", timeout=seconds)

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        ctx.drop(chunk)
