"""``reset_peer``: on data, wait ``timeout`` seconds then reset both peers (TCP RST)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext


@dataclass
class ResetPeer(Toxic):
    """When the first chunk arrives, drop it (and what follows), wait ``timeout`` seconds,
    then close both sockets with ``SO_LINGER`` 0 so each peer gets ``ECONNRESET``.
    Toxiproxy unit: ms.
    """

    type_name: ClassVar[str] = "reset_peer"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (Attribute("timeout", "timeout", 0.001),)

    timeout: float = 0.0

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        ctx.drop(chunk)
        if ctx.state.get("armed"):
            return
        ctx.state["armed"] = 1.0
        if self.timeout > 0 and not await ctx.sleep(self.timeout):
            return
        ctx.cut("rst", "reset_peer", timeout=self.timeout)
