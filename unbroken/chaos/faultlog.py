"""The fault log: one record per thing that happened on the wire, as JSON lines.

(Formerly ``unbroken.chaos.records``, which still re-exports these names.)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from .toxics.base import DetailValue

#: The logger keeps the name operators configure (docs: ``unbroken.chaos.records``).
logger = logging.getLogger("unbroken.chaos.records")

#: Record kinds that describe the proxy's normal life rather than a fault.
LIFECYCLE_KINDS: Final[frozenset[str]] = frozenset(
    {"listening", "stopped", "accepted", "closed", "toxic_added", "toxic_updated", "toxic_removed"}
)


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One applied fault (or lifecycle event) with its time and byte offsets.

    ``offsets`` are the bytes the proxy had delivered in each direction of the connection
    when it happened (``{"upstream": n, "downstream": m}``); ``dropped`` the bytes it had
    read and discarded.
    """

    time: float
    """Wall clock, Unix seconds."""
    elapsed: float
    """Seconds since the proxy started."""
    proxy: str
    kind: str
    connection: int | None = None
    direction: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    detail: dict[str, DetailValue] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        """False for lifecycle records (listening, accepted, closed, toxic configuration)."""
        return self.kind not in LIFECYCLE_KINDS

    def to_dict(self) -> dict[str, object]:
        """A flat JSON-ready dict."""
        out: dict[str, object] = {
            "time": round(self.time, 6),
            "elapsed": round(self.elapsed, 6),
            "proxy": self.proxy,
            "kind": self.kind,
        }
        if self.connection is not None:
            out["connection"] = self.connection
        if self.direction is not None:
            out["direction"] = self.direction
        if self.offsets:
            out["offsets"] = dict(self.offsets)
        if self.dropped:
            out["dropped"] = dict(self.dropped)
        out.update(self.detail)
        return out

    def to_json(self) -> str:
        """One JSON line (no newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)


class FaultLog:
    """Records kept in memory and, when ``path`` is given, appended to a JSON-lines file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.records: list[FaultRecord] = []
        self.path = Path(path) if path is not None else None
        self._file: IO[str] | None = None

    def append(self, record: FaultRecord) -> None:
        """Keep ``record`` and write it as one line."""
        self.records.append(record)
        if self.path is not None:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(record.to_json() + "\n")
            self._file.flush()
        log = logger.info if record.is_fault else logger.debug
        log("%s", record.to_json())

    def close(self) -> None:
        """Close the file (records stay in memory)."""
        if self._file is not None:
            self._file.close()
            self._file = None
