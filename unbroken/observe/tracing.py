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
import importlib.util
import os
import sys
from typing import Any

#: ``opentelemetry.trace`` once loaded (the optional extra: unbroken[otel]). Imported
#: when first needed, not with unbroken: a server whose application never set a tracer
#: provider (so never imported OpenTelemetry) does not hold its ~0.3 MB.
_trace: Any = None
#: where the API's global provider may be named without importing it
_PROVIDER_ENV = "OTEL_PYTHON_TRACER_PROVIDER"


def _load() -> Any:
    """``opentelemetry.trace``, imported now if it is not yet (None: not installed)."""
    global _trace
    if _trace is None:
        try:
            from opentelemetry import trace
        except ImportError:  # another opentelemetry package, without the API
            return None
        _trace = trace
    return _trace


#: The instrumentation scope name of unbroken's tracer.
TRACER_NAME = "unbroken"


def available() -> bool:
    """The OpenTelemetry API is installed."""
    try:
        # the top-level name: a submodule's spec would import its package to find it
        return _trace is not None or importlib.util.find_spec("opentelemetry") is not None
    except ImportError:  # pragma: no cover - no opentelemetry package at all
        return False


def stream_ids(stream: str) -> tuple[int, int]:
    """The (trace id, span id) every node derives for ``stream``: its trace, and the
    parent of its run and attachment spans."""
    digest = hashlib.blake2b(stream.encode(), digest_size=24, person=b"unbroken-trace").digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:], "big") or 1
    return trace_id, span_id


class Tracing:
    """Opens and ends unbroken's spans (every method is a no-op when disabled)."""

    __slots__ = ("_global", "_on", "_provider", "_tracer")

    def __init__(self, enabled: bool = True, tracer_provider: Any = None) -> None:
        self._tracer: Any = None
        self._provider = tracer_provider
        #: spans go to the global provider (set by the application, maybe later)
        self._global = tracer_provider is None
        self._on = enabled and available()
        if self._on and not self._global:
            api = _load()
            self._on = api is not None
            if api is not None:
                self._tracer = api.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    @property
    def enabled(self) -> bool:
        return self._on

    def _recording(self) -> Any:
        """The tracer, or ``None`` when its spans would be no-ops: disabled, or on
        the global provider while the application has set none (the API's proxy).
        Asked per span, so a provider set after the app was made is used from then
        on; a connection or attachment opened before it has no span (nor link). An
        application that set a global provider has imported ``opentelemetry.trace``
        (or named one in ``OTEL_PYTHON_TRACER_PROVIDER``): until then there is none,
        and nothing is imported to tell."""
        if not self._on:
            return None
        if self._global:
            if _trace is None:
                if "opentelemetry.trace" not in sys.modules and not os.environ.get(_PROVIDER_ENV):
                    return None
                if _load() is None:
                    self._on = False
                    return None
            if isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
                return None
            if self._tracer is None:
                self._tracer = _trace.get_tracer(TRACER_NAME)
        return self._tracer

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
