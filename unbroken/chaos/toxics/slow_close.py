"""``slow_close``: delay the close of a direction by ``delay`` seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Toxic, ToxicContext


@dataclass
class SlowClose(Toxic):
    """When the source closes, wait ``delay`` seconds before forwarding the FIN.
    Data passes unchanged. Toxiproxy unit: ms.
    """

    type_name: ClassVar[str] = "slow_close"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (Attribute("delay", "delay", 0.001),)

    delay: float = 0.0

    async def finish(self, ctx: ToxicContext) -> None:
        if self.delay > 0:
            ctx.record("slow_close", delay=self.delay)
            await ctx.sleep(self.delay)
