"""JSON connection events from a real ``unbroken serve --log-format json`` process (and
its ``/metrics``), and OpenTelemetry spans caught by the SDK's in-memory exporter:
run, connection, attachments, one trace per stream across two nodes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from unbroken import BackoffPolicy
from unbroken.client import Client
from unbroken.observe import Observer
from unbroken.observe.tracing import stream_ids
from unbroken.store.memory import MemoryStore
from unbroken.testing import serve

from ..server.process import Process
from .conftest import GOOD_TOKEN, TIMEOUT, gated_app, parse, value

ROOT = Path(__file__).resolve().parents[3]
UNBROKEN = Path(sys.executable).with_name("unbroken")
FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=50, deadline=20)


async def test_serve_log_format_json_writes_one_json_line_per_connection_event() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "examples.agent_app:app",
        "--port",
        "0",
        "--log-format",
        "json",
        "--timeout-graceful-shutdown",
        "1",
        cwd=ROOT,
        env={**os.environ, "UNBROKEN_EXAMPLE_TOKENS_PER_S": "2000"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Process(proc)
    try:
        m = await p.wait_line(r"serving examples\.agent_app:app on (ws://[^\s\"]+)")
        url = m.group(1)
        async with Client(url, policy=FAST) as client:
            st = await client.start("report", {"topic": "logs", "words": 30})
            answer = await asyncio.wait_for(st.wait(), TIMEOUT)
        assert answer.complete
        await p.wait_line(r'"event": "close"')
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            r = await http.get(url.replace("ws://", "http://").replace("/ws", "/metrics"))
        assert r.status_code == 200
        samples = parse(r.text)
        assert value(samples, "unbroken_connections_total") == 1
        # the connection guard's refusals (below HTTP) are counted under serve
        assert ("unbroken_refusals_total", (("reason", "socket_full"),)) in samples
    finally:
        await p.stop()
    records = [json.loads(line) for line in p.lines if line.strip()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    events = {r["event"]: r for r in records if "event" in r}
    assert set(events) >= {"connect", "hello", "start", "detach", "close"}, events
    conn = events["connect"]["conn"]
    assert all(e["conn"] == conn for e in events.values())
    assert events["connect"]["client"].startswith("127.0.0.1:")
    assert events["hello"]["principal"] and events["hello"]["hello_ms"] >= 0
    assert events["start"]["stream"] == st.id and events["start"]["new"] is True
    assert events["detach"]["stream"] == st.id and events["detach"]["cause"] == "ended"
    assert events["detach"]["seq"] > 30 and events["detach"]["attached_ms"] >= 0
    assert events["close"]["code"] == 1000 and events["close"]["by"] == "peer"
    assert events["close"]["duration_ms"] >= events["close"]["hello_ms"] >= 0
    # the text lines the events repeat are not written twice
    assert not any(r["msg"].startswith(("connect conn=", "close conn=")) for r in records)


def _spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_spans_of_a_stream_share_one_trace_across_two_nodes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = MemoryStore()
    a = gated_app(store=store, observe=Observer(tracer_provider=provider))
    b = gated_app(store=store, observe=Observer(tracer_provider=provider))
    b.gates[0].set()
    async with serve(a.app) as node_a, serve(b.app) as node_b:
        async with Client(node_a.url, token=GOOD_TOKEN, policy=FAST) as c1:
            st = await c1.start("staged", {"stages": 1, "per_stage": 20})
            await asyncio.wait_for(a.reached[0].wait(), TIMEOUT)
            it = aiter(st)
            for _ in range(21):  # the part start and 20 tokens
                await asyncio.wait_for(anext(it), TIMEOUT)
            cursor = st.cursor
        assert cursor is not None
        async with Client(node_b.url, token=GOOD_TOKEN, policy=FAST) as c2:
            again = await c2.resume(cursor)
            a.gates[0].set()
            answer = await asyncio.wait_for(again.wait(), TIMEOUT)
        assert answer.status == "completed" and answer.events == 23
        async with asyncio.timeout(TIMEOUT):
            while a.app.hub.runs or a.app.connections or b.app.connections:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    trace_id, parent_id = stream_ids(st.id)
    (run,) = _spans(exporter, "unbroken.run")
    assert run.context is not None and run.context.trace_id == trace_id
    assert run.parent is not None and run.parent.span_id == parent_id
    assert _attrs(run)["unbroken.stream_id"] == st.id
    assert _attrs(run)["unbroken.status"] == "completed"
    assert _attrs(run)["unbroken.events"] == 23
    atts = sorted(_spans(exporter, "unbroken.attachment"), key=lambda s: s.start_time or 0)
    assert [_attrs(s)["unbroken.attach"] for s in atts] == ["start", "resume"]
    assert [_attrs(s)["unbroken.detach_cause"] for s in atts] == ["disconnect", "ended"]
    assert _attrs(atts[1])["unbroken.resume_after"] == cursor.seq
    assert _attrs(atts[1])["unbroken.last_seq"] == 23
    for s in atts:  # the node that resumed put its span in the stream's trace
        assert s.context is not None and s.context.trace_id == trace_id
        assert s.parent is not None and s.parent.span_id == parent_id
    conns = _spans(exporter, "unbroken.connection")
    assert len(conns) == 2
    assert {_attrs(s)["unbroken.close_code"] for s in conns} == {1000}
    # each attachment links to its connection's span
    conn_ids = {s.context.span_id for s in conns if s.context is not None}
    assert {s.links[0].context.span_id for s in atts} == conn_ids


def test_without_opentelemetry_tracing_is_a_no_op() -> None:
    """The API hidden (as if not installed): the observer works, no span is made."""
    code = (
        "import sys\nsys.modules['opentelemetry'] = None\n"
        "from unbroken.observe import Observer\n"
        "from unbroken.observe.tracing import available\n"
        "assert not available()\n"
        "o = Observer()\n"
        "assert not o.tracing.enabled and o.run_started('s1', 'a') is None\n"
        "c = o.connect('c1', '127.0.0.1:1')\n"
        "c.hello('alice', [])\n"
        "c.attach('s1', 'start')\n"
        "c.closed(1006, 'lost', False)\n"
        "assert o.counts.attachments['start'] == 1 and o.counts.disconnects == {'1006': 1}\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_serve_no_metrics_serves_no_metrics() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "examples.agent_app:app",
        "--port",
        "0",
        "--no-metrics",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Process(proc)
    try:
        m = await p.wait_line(r"serving examples\.agent_app:app on ws://([^\s/]+)/ws")
        async with httpx.AsyncClient(base_url=f"http://{m.group(1)}", timeout=TIMEOUT) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 404
    finally:
        await p.stop()
    # the default text log is unchanged: no JSON, no structured event lines
    assert not any(line.lstrip().startswith("{") for line in p.lines)
