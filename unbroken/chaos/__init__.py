"""The chaos toolkit: a fault-injecting TCP proxy, response generators and a state verifier.

* :class:`FaultProxy` (:mod:`.proxy`) with Toxiproxy's toxics (:mod:`.toxics`), exact byte
  offset cuts and schedules (:mod:`.schedules`); controlled from Python, the CLI
  (``unbroken proxy``) or a Toxiproxy-compatible HTTP API (:mod:`.control`).
* :class:`NetworkSimulator` (:mod:`.network`): the seed's network faults over the proxy.
* :class:`StreamingResponseSimulator` (:mod:`.generators`): seeded, reproducible answers.
* :class:`StateVerifier` (:mod:`.verifier`): checks logs and received answers, with a
  structured :class:`Verdict`.
"""

from ..errors import NameNotFound, NameTaken
from .faultlog import FaultLog, FaultRecord
from .generators import GeneratedAnswer, PartSpec, StreamingResponseSimulator, content_hash
from .network import NetworkSimulator
from .proxy import (
    Connection,
    FaultProxy,
    InstalledToxic,
    Link,
    ProxiedConnection,
    format_address,
    parse_address,
)
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
from .verifier import (
    DigestLogReader,
    EventLogReader,
    Finding,
    LogLimits,
    Problem,
    StateVerifier,
    Verdict,
)

__all__ = [
    "TOXIC_TYPES",
    "Bandwidth",
    "ByteCut",
    "Connection",
    "DigestLogReader",
    "EventLogReader",
    "FaultLog",
    "FaultProxy",
    "FaultRecord",
    "Finding",
    "GeneratedAnswer",
    "InstalledToxic",
    "Latency",
    "LimitData",
    "Link",
    "LogLimits",
    "NameNotFound",
    "NameTaken",
    "NetworkSimulator",
    "Noop",
    "PartSpec",
    "Problem",
    "ProxiedConnection",
    "ResetPeer",
    "ScheduledFault",
    "Slicer",
    "SlowClose",
    "StateVerifier",
    "StreamingResponseSimulator",
    "Timeout",
    "Toxic",
    "Verdict",
    "content_hash",
    "format_address",
    "parse_address",
]
