"""Observability: Prometheus metrics, OpenTelemetry traces, structured connection logs.

:class:`Observer` is what an app (``Unbroken(observe=…)``) tells about itself;
:mod:`.metrics` renders its counters for ``/metrics``, :mod:`.tracing` opens spans
when the OpenTelemetry API is installed, :mod:`.logs` writes JSON lines.
docs/how-to/metrics.md lists every metric.
"""

from __future__ import annotations

from .counts import Counts, Live, RedisCounts
from .observer import ConnectionObserver, Observer

__all__ = ["ConnectionObserver", "Counts", "Live", "Observer", "RedisCounts"]
