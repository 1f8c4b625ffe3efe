"""Prometheus metrics of an unbroken app, rendered from its counters at scrape time.

Nothing here runs on the hot path: the server bumps plain integers
(:class:`~unbroken.observe.counts.Counts`), and :class:`UnbrokenCollector` turns them,
plus a few figures read live from the app (open connections, live runs, log bytes,
loop lag), into ``unbroken_*`` metric families when ``/metrics`` is scraped. No
metric has a per-stream or per-connection label: the number of series is fixed.

Each app registers in its own ``CollectorRegistry`` (two apps in one process, or
one test after another, never see each other's figures); pass
``Observer(registry=prometheus_client.REGISTRY)`` to join the process's default
registry, beside the process and Python collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .counts import RECOVERY_BUCKETS, Counts, Live

if TYPE_CHECKING:
    from .workers import WorkerMetrics

#: (name without ``unbroken_``, type, help) of every metric: the documented list
METRICS: tuple[tuple[str, str, str], ...] = (
    ("connections_open", "gauge", "WebSocket connections being served now."),
    ("connections_total", "counter", "WebSocket connections served since start."),
    ("streams_live", "gauge", "Agent runs alive on this node (streams being written)."),
    ("attachments_open", "gauge", "Streams attached to connections now."),
    (
        "attachments_total",
        "counter",
        "Streams attached to a connection, by how (start or resume).",
    ),
    ("events_in_total", "counter", "Events written by agents on this node."),
    ("events_out_total", "counter", "Events sent to clients (a replayed event counts again)."),
    ("bytes_in_total", "counter", "Bytes of WebSocket messages received from clients."),
    ("bytes_out_total", "counter", "Bytes of WebSocket messages sent to clients."),
    (
        "resumes_total",
        "counter",
        "Resume requests by outcome (resumed, gone) and, when gone, reason.",
    ),
    (
        "recovery_seconds",
        "histogram",
        "Time from a stream's detach (its connection lost) to its resume, as this server saw it.",
    ),
    (
        "heartbeat_timeouts_total",
        "counter",
        "Connections dropped for liveness: peer silent (4004), send timeout, peer gone.",
    ),
    ("refusals_total", "counter", "Connections or requests refused, by reason."),
    ("disconnects_total", "counter", "Connections closed, by close code."),
    (
        "admission_refusals_total",
        "counter",
        "New runs refused by admission control, by signal (runs, principal_runs, loop_lag, rss).",
    ),
    ("log_bytes", "gauge", "Bytes the stream log holds (memory) or this node appended (Redis)."),
    ("event_loop_lag_seconds", "gauge", "Smoothed event-loop lag measured by admission control."),
    ("redis_round_trips_total", "counter", "Commands and pipelines sent to Redis."),
    ("redis_errors_total", "counter", "Redis sends and reads that failed (connection, timeout)."),
)
_HELP = {name: text for name, _kind, text in METRICS}


def _help(name: str) -> str:
    return _HELP[name]


class UnbrokenCollector(Collector):
    """A ``prometheus_client`` collector over an app's counters and live figures."""

    def __init__(self, counts: Counts, live: Callable[[], Live]) -> None:
        self.counts = counts
        self.live = live

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        now = self.live()

        def counter(name: str, value: float) -> CounterMetricFamily:
            # prometheus_client appends _total to a counter's name
            return CounterMetricFamily(f"unbroken_{name[:-6]}", _help(name), value=value)

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"unbroken_{name}", _help(name), value=value)

        yield gauge("connections_open", now.connections)
        yield counter("connections_total", c.connections)
        yield gauge("streams_live", now.runs)
        yield gauge("attachments_open", now.attachments)
        fam = CounterMetricFamily(
            "unbroken_attachments", _help("attachments_total"), labels=["kind"]
        )
        for kind, n in sorted(c.attachments.items()):  # sorted: a copy (scrape thread)
            fam.add_metric([kind], n)
        yield fam
        yield counter("events_in_total", c.events_in_done + now.run_events)
        yield counter("events_out_total", c.events_out)
        yield counter("bytes_in_total", c.bytes_in)
        yield counter("bytes_out_total", c.bytes_out)
        fam = CounterMetricFamily(
            "unbroken_resumes", _help("resumes_total"), labels=["outcome", "reason"]
        )
        fam.add_metric(["resumed", ""], c.resumes.get(("resumed", ""), 0))
        for (outcome, reason), n in sorted(c.resumes.items()):
            if outcome != "resumed":
                fam.add_metric([outcome, reason], n)
        yield fam
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*RECOVERY_BUCKETS, float("inf")), c.recovery_buckets, strict=True):
            total += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily(
            "unbroken_recovery_seconds",
            _help("recovery_seconds"),
            buckets=cumulative,
            sum_value=c.recovery_sum,
        )
        yield counter("heartbeat_timeouts_total", c.heartbeat_timeouts)
        refusals = dict(c.refusals)
        for reason, n in now.socket_refusals.items():
            refusals[reason] = refusals.get(reason, 0) + n
        yield _labelled("refusals_total", "reason", refusals)
        yield _labelled("disconnects_total", "code", c.disconnects)
        yield _labelled("admission_refusals_total", "reason", now.admission_refusals)
        if now.log_bytes is not None:
            yield gauge("log_bytes", now.log_bytes)
        if now.loop_lag is not None:
            yield gauge("event_loop_lag_seconds", now.loop_lag)
        if now.redis is not None:
            yield counter("redis_round_trips_total", now.redis.round_trips)
            yield counter("redis_errors_total", now.redis.errors)


def _labelled(name: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(f"unbroken_{name[:-6]}", _help(name), labels=[label])
    for key, n in sorted(values.items()):
        fam.add_metric([key], n)
    return fam


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry's metrics in the Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


Scope = dict[str, Any]


class MetricsApp:
    """A tiny ASGI app answering ``GET``/``HEAD`` with a registry's metrics (any path:
    mount it where you want it, e.g. ``api.mount("/metrics", app.metrics_app())``)."""

    def __init__(self, registry: CollectorRegistry, workers: WorkerMetrics | None = None) -> None:
        self.registry = registry
        #: with ``unbroken serve --workers N``: answer the sum over every worker
        self.workers = workers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            body, ctype, status = b"Method Not Allowed", "text/plain; charset=utf-8", 405
        elif self.workers is not None:
            body, _live = await self.workers.exposition()
            ctype, status = CONTENT_TYPE_LATEST, 200
        else:
            data, ctype = exposition(self.registry)
            body, status = data, 200
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if self.workers is not None:  # which worker answered (the sum is the same)
            headers.append((b"x-unbroken-worker", str(self.workers.pid).encode()))
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
