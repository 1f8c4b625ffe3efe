"""The toxic interface: one small class per fault, as in Toxiproxy's ``toxics/*.go``.

A toxic sits on one direction of every connection of a :class:`~unbroken.chaos.FaultProxy`
(``upstream``: client to server, ``downstream``: server to client). The proxy passes each
chunk of bytes read from the source through the direction's toxics in the order they were
added; a toxic forwards (``await emit(chunk)``), delays, splits or drops it, or cuts the
connection through its :class:`ToxicContext`. To add a fault, add a file with a subclass of
:class:`Toxic` and register it in :mod:`unbroken.chaos.toxics`.

Python attributes use seconds and bytes; :meth:`Toxic.from_attributes` and
:meth:`Toxic.to_attributes` speak Toxiproxy's units (milliseconds, KB/s, microseconds).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Protocol, Self

Direction = Literal["upstream", "downstream"]
CutMode = Literal["fin", "rst", "blackhole"]
DetailValue = str | int | float | bool

DIRECTIONS: Final[tuple[Direction, Direction]] = ("upstream", "downstream")
CUT_MODES: Final[frozenset[str]] = frozenset({"fin", "rst", "blackhole"})


@dataclass(slots=True)
class Chunk:
    """Bytes moving through a direction; ``at`` is the loop time they were read (or are due)."""

    data: bytes
    at: float


Emit = Callable[[Chunk], Awaitable[None]]
"""Hands a chunk to the next toxic of the chain (the last one writes it to the peer)."""


class ToxicContext(Protocol):
    """What a toxic may see and do on one direction of one connection."""

    state: dict[str, float]
    """Scratch values private to this toxic on this direction (e.g. bytes passed so far)."""

    @property
    def connection_id(self) -> int:
        """Id of the connection (1, 2, ... in accept order)."""
        ...

    @property
    def direction(self) -> Direction:
        """The direction this toxic acts on."""
        ...

    @property
    def rng(self) -> random.Random:
        """Seeded randomness of the connection (jitter, slice sizes)."""
        ...

    def now(self) -> float:
        """The event loop's clock, in seconds."""
        ...

    async def sleep(self, seconds: float) -> bool:
        """Sleep; returns ``False`` early when the toxic is removed meanwhile."""
        ...

    def drop(self, chunk: Chunk) -> None:
        """Discard a chunk (counted in the direction's dropped bytes)."""
        ...

    def cut(self, mode: CutMode, reason: str, **detail: DetailValue) -> None:
        """Cut the whole connection now (``fin``, ``rst`` or ``blackhole``)."""
        ...

    def record(self, kind: str, **detail: DetailValue) -> None:
        """Append a record to the proxy's fault log (with time and byte offsets)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task, cancelled when the toxic or the connection goes away."""
        ...


@dataclass(frozen=True, slots=True)
class Attribute:
    """One Toxiproxy attribute: its JSON ``key``, the Python ``field`` and the unit ``scale``.

    ``python value = toxiproxy value * scale`` (e.g. ``latency`` in ms -> seconds: 0.001).
    """

    key: str
    field: str
    scale: float = 1.0
    integer: bool = False


class Toxic:
    """Base class of every toxic; subclasses are dataclasses with defaults for every field.

    Override :meth:`transmit` (each chunk), :meth:`activate` (when the toxic starts acting on
    a connection's direction) and :meth:`finish` (when the source closed, before the proxy
    forwards the close).
    """

    type_name: ClassVar[str] = ""
    attributes_spec: ClassVar[tuple[Attribute, ...]] = ()

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, object]) -> Self:
        """Build from Toxiproxy JSON attributes (missing ones take their zero default)."""
        toxic = cls()
        toxic.update_attributes(attributes)
        return toxic

    def update_attributes(self, attributes: Mapping[str, object]) -> None:
        """Set the attributes present in ``attributes`` (Toxiproxy units); keep the others.

        Raises ``ValueError`` for a value that is not a non-negative number.
        """
        values: dict[str, float | int] = {}
        for spec in self.attributes_spec:
            if spec.key not in attributes:
                continue
            raw = attributes[spec.key]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"attribute {spec.key!r} must be a number, got {raw!r}")
            if not math.isfinite(raw) or raw < 0:
                raise ValueError(f"attribute {spec.key!r} must be >= 0, got {raw!r}")
            value = raw * spec.scale
            values[spec.field] = int(value) if spec.integer else float(value)
        for name, value in values.items():
            setattr(self, name, value)

    def to_attributes(self) -> dict[str, int | float]:
        """The attributes in Toxiproxy's JSON units (integers where they are whole)."""
        out: dict[str, int | float] = {}
        for spec in self.attributes_spec:
            value = float(getattr(self, spec.field)) / spec.scale
            rounded = round(value)
            out[spec.key] = rounded if math.isclose(value, rounded, abs_tol=1e-6) else value
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` unless every attribute is a non-negative finite number."""
        for spec in self.attributes_spec:
            value = getattr(self, spec.field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{self.type_name}.{spec.field} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.type_name}.{spec.field} must be >= 0, got {value!r}")

    def describe(self) -> dict[str, DetailValue]:
        """Python-unit attributes, for fault records."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {}

    def activate(self, ctx: ToxicContext) -> None:
        """Called once when the toxic starts acting on a direction of a connection."""

    async def transmit(self, chunk: Chunk, ctx: ToxicContext, emit: Emit) -> None:
        """Handle one chunk; the default forwards it unchanged."""
        await emit(chunk)

    async def finish(self, ctx: ToxicContext) -> None:
        """The source closed its side; return when the close may be forwarded."""
