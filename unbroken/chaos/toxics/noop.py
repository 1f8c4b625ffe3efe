"""``noop``: passes every byte unchanged (Toxiproxy registers it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Toxic


@dataclass
class Noop(Toxic):
    """Does nothing; useful to check that the chain itself alters nothing."""

    type_name: ClassVar[str] = "noop"
