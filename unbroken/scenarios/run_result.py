"""What one run measured: its checks, metrics and per-stream samples
(:class:`RunResult`), as the targets and the report read them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .spec import RunSpec


@dataclass(slots=True)
class Check:
    """One thing that must hold, and whether it did."""

    name: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(slots=True)
class Metrics:
    """Times in seconds (from the first fault unless said), bytes, CPU seconds.

    ``None`` means "not applicable" (e.g. no reconnect in a TC5 'long' run).
    """

    detection_s: float | None = None
    reconnect_s: float | None = None
    resume_s: float | None = None
    recovery_s: float | None = None
    total_s: float | None = None
    baseline_s: float | None = None
    delay_s: float | None = None
    partial_bytes: int | None = None
    bytes_resent: int | None = None
    bytes_inflight: int | None = None
    resent_events: int | None = None
    resend_limit_bytes: int | None = None
    wire_bytes: int | None = None
    baseline_wire_bytes: int | None = None
    server_cpu_s: float | None = None
    baseline_cpu_s: float | None = None
    rss_peak_mb: float | None = None
    log_peak_mb: float | None = None
    drops: int = 0
    reconnects: int = 0
    detection_p50_s: float | None = None
    resume_p50_s: float | None = None
    recovery_p50_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    return v


@dataclass(slots=True)
class RunResult:
    """The outcome of one :class:`~unbroken.scenarios.catalog.RunSpec`."""

    spec: RunSpec
    status: str = "pass"  # pass | fail | error | skip (``error`` says why: e.g. not root)
    streams: int = 0
    streams_complete: int = 0
    streams_exact: int = 0
    recovered: bool | None = None
    timeout_ok: bool | None = None
    checks: list[Check] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    samples: dict[str, list[float]] = field(default_factory=dict)
    """Per stream (resume, recovery) or per connection (detection, reconnect) values."""
    started_s: float = 0.0
    wall_s: float = 0.0
    artefacts: str | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def skipped(self) -> bool:
        """Not run here (a kernel-level condition without root or its tools): neither
        passed nor failed."""
        return self.status == "skip"

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    @property
    def exact(self) -> bool:
        """Every stream ended with exactly the answer of a fault-free run."""
        return self.streams > 0 and self.streams_exact == self.streams

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec.to_dict(),
            "status": self.status,
            "exact": self.exact,
            "streams": self.streams,
            "streams_complete": self.streams_complete,
            "streams_exact": self.streams_exact,
            "recovered": self.recovered,
            "timeout_ok": self.timeout_ok,
            "checks": [c.to_dict() for c in self.checks],
            "verdicts": self.verdicts,
            "metrics": self.metrics.to_dict(),
            "samples": self.samples,
            "started_s": round(self.started_s, 3),
            "wall_s": round(self.wall_s, 3),
            "artefacts": self.artefacts,
            "error": self.error,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        m = Metrics(**{k: v for k, v in data.get("metrics", {}).items() if hasattr(Metrics, k)})
        return cls(
            spec=RunSpec.from_dict(data["spec"]),
            status=data.get("status", "pass"),
            streams=int(data.get("streams", 0)),
            streams_complete=int(data.get("streams_complete", 0)),
            streams_exact=int(data.get("streams_exact", 0)),
            recovered=data.get("recovered"),
            timeout_ok=data.get("timeout_ok"),
            checks=[Check(**c) for c in data.get("checks", [])],
            verdicts=list(data.get("verdicts", [])),
            metrics=m,
            samples={k: [float(x) for x in v] for k, v in data.get("samples", {}).items()},
            started_s=float(data.get("started_s", 0.0)),
            wall_s=float(data.get("wall_s", 0.0)),
            artefacts=data.get("artefacts"),
            error=data.get("error", ""),
            notes=list(data.get("notes", [])),
        )


def pooled_samples(runs: Iterable[RunResult], key: str) -> list[float]:
    """Every stream's (or connection's) ``key`` sample when a run kept them, else the
    run's own ``metrics.<key>_s`` (e.g. ``"recovery"``)."""
    out: list[float] = []
    for r in runs:
        if key in r.samples:
            out.extend(r.samples[key])
        else:
            v = getattr(r.metrics, f"{key}_s", None)
            if v is not None:
                out.append(v)
    return out
