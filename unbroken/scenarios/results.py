"""A matrix's results as ``results.json``: its runs (:mod:`.run_result`, re-exported
here), the targets evaluated on them, the memory timeline and where it ran."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import SCENARIOS, SEED_TARGETS
from .run_result import Check, Metrics, RunResult, pooled_samples
from .targets import evaluate

#: Bumped when results.json changes shape.
SCHEMA_VERSION = 1


@dataclass(slots=True)
class Results:
    """A matrix run: its runs, the memory timeline and where it ran."""

    runs: list[RunResult] = field(default_factory=list)
    tier: str = "quick"
    command: str = ""
    started: str = ""
    duration_s: float = 0.0
    memory: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since start, process RSS MB, stream-log MB) samples."""
    machine: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    service: str = ""
    """What was tested when not the built-in test app: your app or a URL, with the
    agents and inputs (``chaos run --app/--url``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "tier": self.tier,
            "command": self.command,
            "started": self.started,
            "duration_s": round(self.duration_s, 3),
            "interrupted": self.interrupted,
            "service": self.service,
            "machine": self.machine or machine_info(),
            "catalog": [s.to_dict() for s in SCENARIOS],
            "targets": [t.to_dict() for t in SEED_TARGETS],
            "evaluation": [e.to_dict() for e in evaluate(self.runs)],
            "runs": [r.to_dict() for r in self.runs],
            "memory": [[round(a, 3), round(b, 2), round(c, 3)] for a, b, c in self.memory],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), "utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> Results:
        data = json.loads(Path(path).read_text("utf-8"))
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: results schema {data.get('schema')}, expected {SCHEMA_VERSION}"
            )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        """The inverse of :meth:`to_dict`."""
        return cls(
            runs=[RunResult.from_dict(r) for r in data.get("runs", [])],
            tier=data.get("tier", ""),
            command=data.get("command", ""),
            started=data.get("started", ""),
            duration_s=float(data.get("duration_s", 0.0)),
            memory=[(float(a), float(b), float(c)) for a, b, c in data.get("memory", [])],
            machine=dict(data.get("machine", {})),
            interrupted=bool(data.get("interrupted", False)),
            service=str(data.get("service", "")),
        )


def machine_info() -> dict[str, Any]:
    """Where the matrix ran."""
    import psutil

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


__all__ = [
    "SCHEMA_VERSION",
    "Check",
    "Metrics",
    "Results",
    "RunResult",
    "machine_info",
    "pooled_samples",
]
