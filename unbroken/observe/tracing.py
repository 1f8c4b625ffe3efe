"""OpenTelemetry spans for runs, connections and attachments; nothing without it.

With the ``opentelemetry-api`` package (``pip install 'unbroken[otel]'``) the server
opens spans on the tracer provider the application configured (none set on the
global provider: no span is built at all). Without the package every call here
returns at once.

The spans:

- ``unbroken.run``: one agent run, on the node that runs it (attributes
  ``unbroken.stream_id``, ``unbroken.agent``; ended with ``unbroken.status`` and
  ``unbroken.events``);
- ``unbroken.connection``: one WebSocket connection (``unbroken.connection_id``,
  ``unbroken.close_code``, ``unbroken.close_reason``);
- ``unbroken.attachment``: one stream pumped to one connection, from its ``start``
  or ``resume`` to its detach (``unbroken.attach`` = start | resume,
  ``unbroken.resume_after``, ``unbroken.detach_cause``, ``unbroken.last_seq``),
  linked to its connection's span.

**One trace per stream, across nodes, with nothing stored.** A run's span and its
attachments' spans are children of a remote parent whose trace and span ids are
hashes of the stream id: every node serving the stream (the one running the agent,
the one a client resumed on after a failover) puts its spans in the same trace
without reading anything from the log but the stream id. The stream's own span is
never emitted (a tracing backend shows the trace's root as missing); the parent is
marked sampled, so a parent-based sampler keeps every stream's spans.
"""

from __future__ import annotations

import hashlib
from typing import Any

try:  # the optional extra: unbroken[otel]
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _trace = None  # type: ignore[assignment]

#: The instrumentation scope name of unbroken's tracer.
TRACER_NAME = "unbroken"


def available() -> bool:
    """The OpenTelemetry API is installed."""
    return _trace is not None


def stream_ids(stream: str) -> tuple[int, int]:
    """The (trace id, span id) every node derives for ``stream``: its trace, and the
    parent of its run and attachment spans."""
    digest = hashlib.blake2b(stream.encode(), digest_size=24, person=b"unbroken-trace").digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:], "big") or 1
    return trace_id, span_id


class Tracing:
    """Opens and ends unbroken's spans (every method is a no-op when disabled)."""

    __slots__ = ("_global", "_tracer")

    def __init__(self, enabled: bool = True, tracer_provider: Any = None) -> None:
        self._tracer: Any = None
        #: spans go to the global provider (set by the application, maybe later)
        self._global = tracer_provider is None
        if enabled and _trace is not None:
            self._tracer = _trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _recording(self) -> Any:
        """The tracer, or ``None`` when its spans would be no-ops: disabled, or on
        the global provider while the application has set none (the API's proxy).
        Asked per span, so a provider set after the app was made is used from then
        on; a connection or attachment opened before it has no span (nor link)."""
        tracer = self._tracer
        if tracer is None or (
            self._global and isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)
        ):
            return None
        return tracer

    def _stream_context(self, stream: str) -> Any:
        assert _trace is not None
        trace_id, span_id = stream_ids(stream)
        parent = _trace.SpanContext(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=_trace.TraceFlags(_trace.TraceFlags.SAMPLED),
        )
        return _trace.set_span_in_context(_trace.NonRecordingSpan(parent))

    def run(self, stream: str, agent: str) -> Any:
        """The span of an agent run (``None`` when disabled)."""
        tracer = self._recording()
        if tracer is None:
            return None
        return tracer.start_span(
            "unbroken.run",
            context=self._stream_context(stream),
            attributes={"unbroken.stream_id": stream, "unbroken.agent": agent},
        )

    def connection(self, conn: str, client: str) -> Any:
        """The span of a WebSocket connection."""
        tracer = self._recording()
        if tracer is None:
            return None
        return tracer.start_span(
            "unbroken.connection",
            attributes={"unbroken.connection_id": conn, "client.address": client},
        )

    def attachment(self, conn_span: Any, conn: str, stream: str, how: str, after: int) -> Any:
        """The span of one stream attached to one connection."""
        tracer = self._recording()
        if tracer is None:
            return None
        links = []
        if conn_span is not None:
            links.append(_trace.Link(conn_span.get_span_context()))
        return tracer.start_span(
            "unbroken.attachment",
            context=self._stream_context(stream),
            links=links,
            attributes={
                "unbroken.stream_id": stream,
                "unbroken.connection_id": conn,
                "unbroken.attach": how,
                "unbroken.resume_after": after,
            },
        )

    @staticmethod
    def end(span: Any, **attributes: Any) -> None:
        """Set ``attributes`` (``unbroken.`` is prefixed to each name) and end ``span``."""
        if span is None:
            return
        for key, value in attributes.items():
            span.set_attribute(f"unbroken.{key}", value)
        span.end()

    @staticmethod
    def event(span: Any, name: str, **attributes: Any) -> None:
        """Add an event to ``span`` (e.g. ``hello`` on a connection)."""
        if span is not None:
            span.add_event(name, {f"unbroken.{k}": v for k, v in attributes.items()})
