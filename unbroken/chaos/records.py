"""Old home of the fault log; the names live in :mod:`unbroken.chaos.faultlog` now."""

from .faultlog import LIFECYCLE_KINDS, FaultLog, FaultRecord

__all__ = ["LIFECYCLE_KINDS", "FaultLog", "FaultRecord"]
