"""``limit_data``: pass ``bytes`` bytes of a direction, then close the connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Attribute, Chunk, Emit, Toxic, ToxicContext


@dataclass
class LimitData(Toxic):
    """Forward exactly ``bytes`` bytes of the direction, then close the connection with a
    FIN (the rest is dropped). Counted per connection. Toxiproxy unit: bytes.
    """

    type_name: ClassVar[str] = "limit_data"
    attributes_spec: ClassVar[tuple[Attribute, ...]] = (
        Attribute("bytes", "bytes", 1.0, integer=True),
    )

    bytes: int = 0

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        passed = int(ctx.state.get("passed", 0))
        room = max(0, self.bytes - passed)
        head = chunk.data[:room]
        if head:
            ctx.state["passed"] = passed + len(head)
            await emit(Chunk(head, chunk.at))
        if len(head) < len(chunk.data):
            ctx.drop(Chunk(chunk.data[len(head) :], chunk.at))
        if passed + len(head) >= self.bytes:
            ctx.cut("fin", "limit_data", limit=self.bytes)
