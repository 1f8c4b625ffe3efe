"""Toxics: one fault per file, each a :class:`Toxic` (see :mod:`.base`).

``TOXIC_TYPES`` maps Toxiproxy type names to classes; :func:`toxic_from_json` builds one from
Toxiproxy's JSON ``type`` and ``attributes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .bandwidth import Bandwidth
from .base import (
    CUT_MODES,
    DIRECTIONS,
    Attribute,
    Chunk,
    CutMode,
    Direction,
    Emit,
    Toxic,
    ToxicContext,
)
from .latency import Latency
from .limit_data import LimitData
from .noop import Noop
from .reset_peer import ResetPeer
from .slicer import Slicer
from .slow_close import SlowClose
from .timeout import Timeout

TOXIC_TYPES: Final[dict[str, type[Toxic]]] = {
    cls.type_name: cls
    for cls in (Noop, Latency, Bandwidth, Slicer, Timeout, ResetPeer, LimitData, SlowClose)
}


def toxic_from_json(type_name: str, attributes: Mapping[str, object]) -> Toxic:
    """A toxic of Toxiproxy type ``type_name``; ``KeyError`` if unknown, ``ValueError`` if bad."""
    cls = TOXIC_TYPES[type_name]
    return cls.from_attributes(attributes)


__all__ = [
    "CUT_MODES",
    "DIRECTIONS",
    "TOXIC_TYPES",
    "Attribute",
    "Bandwidth",
    "Chunk",
    "CutMode",
    "Direction",
    "Emit",
    "Latency",
    "LimitData",
    "Noop",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "ToxicContext",
    "toxic_from_json",
]
