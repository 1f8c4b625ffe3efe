"""The sum of several workers' Prometheus texts (unbroken serve --workers N)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from unbroken.observe.workers import merge


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def worker(conns: int, live: int, lag: float, resumed: int, buckets: tuple[int, int]) -> str:
    """A worker's exposition, as prometheus_client writes it."""
    resumes = CounterMetricFamily("unbroken_resumes", "Resumes.", labels=["outcome", "reason"])
    resumes.add_metric(["resumed", ""], resumed)
    resumes.add_metric(["gone", "expired"], 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Fixed(
            [
                CounterMetricFamily("unbroken_connections", "Connections.", value=conns),
                GaugeMetricFamily("unbroken_streams_live", "Runs.", value=live),
                GaugeMetricFamily("unbroken_event_loop_lag_seconds", "Lag.", value=lag),
                resumes,
                HistogramMetricFamily(
                    "unbroken_recovery_seconds",
                    "Recovery.",
                    buckets=[("0.1", buckets[0]), ("+Inf", buckets[1])],
                    sum_value=0.5,
                ),
            ]
        )
    )
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_counters_histograms_and_gauges_add_up_the_lag_is_the_worst_workers() -> None:
    body, live = merge([worker(3, 2, 0.01, 4, (1, 2)), worker(5, 1, 0.2, 6, (3, 3))])
    got = samples(body)
    assert live == 2
    assert got[("unbroken_connections_total", ())] == 8
    assert got[("unbroken_streams_live", ())] == 3
    assert got[("unbroken_event_loop_lag_seconds", ())] == 0.2
    assert got[("unbroken_resumes_total", (("outcome", "resumed"), ("reason", "")))] == 10
    assert got[("unbroken_resumes_total", (("outcome", "gone"), ("reason", "expired")))] == 2
    assert got[("unbroken_recovery_seconds_bucket", (("le", "0.1"),))] == 4
    assert got[("unbroken_recovery_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("unbroken_recovery_seconds_count", ())] == 5
    assert got[("unbroken_recovery_seconds_sum", ())] == 1.0


def test_a_dead_worker_keeps_its_counters_in_the_sum_not_its_gauges() -> None:
    body, live = merge([worker(3, 2, 0.01, 4, (1, 2))], retired=[worker(5, 7, 9.0, 6, (3, 3))])
    got = samples(body)
    assert live == 1
    assert got[("unbroken_connections_total", ())] == 8
    assert got[("unbroken_recovery_seconds_count", ())] == 5
    assert got[("unbroken_streams_live", ())] == 2  # its runs died with it
    assert got[("unbroken_event_loop_lag_seconds", ())] == 0.01
