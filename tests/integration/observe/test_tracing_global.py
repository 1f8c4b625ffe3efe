"""Spans on the global tracer provider: none (and no work) while the application has
set none, recorded from the moment it sets one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from unbroken.observe.tracing import Tracing


def test_no_global_provider_means_no_span_work() -> None:
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # another test of this process set one: the subprocess test covers it
    tracing = Tracing()
    assert tracing.enabled
    conn = tracing.connection("c1", "127.0.0.1:1")
    assert conn is None
    assert tracing.attachment(conn, "c1", "s1", "resume", 10) is None
    assert tracing.run("s1", "agent") is None


def test_a_provider_set_later_gets_the_spans() -> None:
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from unbroken.observe.tracing import Tracing

        tracing = Tracing()  # made before the application sets its provider
        assert tracing.attachment(None, "c0", "s0", "start", 0) is None
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        conn = tracing.connection("c1", "127.0.0.1:1")
        att = tracing.attachment(conn, "c1", "s1", "resume", 10)
        Tracing.end(att, detach_cause="disconnect")
        Tracing.end(conn)
        names = sorted(s.name for s in exporter.get_finished_spans())
        print(names)
        assert names == ["unbroken.attachment", "unbroken.connection"], names
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "unbroken.attachment" in done.stdout
