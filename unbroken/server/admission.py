"""Admission control: how much new work the server takes on (issue 16).

New work is refused first (a new ``start`` gets ``error overloaded`` with
``retry_after_ms``); in-flight streams are never shed to make room.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Limits on new work; ``None`` means no limit."""

    #: agent runs alive at once, over all principals
    max_runs: int | None = None
    #: agent runs alive at once for one principal
    max_runs_per_principal: int | None = None
