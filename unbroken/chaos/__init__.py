"""The chaos toolkit: a fault-injecting TCP proxy, response generators and a state verifier.

* :class:`FaultProxy` (:mod:`.proxy`) with Toxiproxy's toxics (:mod:`.toxics`), exact byte
  offset cuts and schedules (:mod:`.schedules`); controlled from Python, the CLI
  (``unbroken proxy``) or a Toxiproxy-compatible HTTP API (:mod:`.control`).
* :class:`NetworkSimulator` (:mod:`.network`): the seed's network faults over the proxy.
* :class:`StreamingResponseSimulator` (:mod:`.generators`): seeded, reproducible answers.
* :class:`StateVerifier` (:mod:`.verifier`): checks logs and received answers, with a
  structured :class:`Verdict`.
"""

from .proxy import (
    Connection,
    FaultProxy,
    InstalledToxic,
    Link,
    NameNotFound,
    NameTaken,
    format_address,
    parse_address,
)
from .records import FaultLog, FaultRecord
from .schedules import ByteCut, ScheduledFault
from .toxics import (
    TOXIC_TYPES,
    Bandwidth,
    Latency,
    LimitData,
    Noop,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Toxic,
)

__all__ = [
    "TOXIC_TYPES",
    "Bandwidth",
    "ByteCut",
    "Connection",
    "FaultLog",
    "FaultProxy",
    "FaultRecord",
    "InstalledToxic",
    "Latency",
    "LimitData",
    "Link",
    "NameNotFound",
    "NameTaken",
    "Noop",
    "ResetPeer",
    "ScheduledFault",
    "Slicer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "format_address",
    "parse_address",
]
