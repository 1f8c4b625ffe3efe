"""``unbroken serve`` as a real process (SIGTERM → 1012 → exit 0), and the example
apps: the agent app served alone and inside FastAPI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest

from examples.agent_app import SUMMARY_SCHEMA, create_app
from examples.fastapi_app import create_api
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.events import Kind
from unbroken.server.cli import load_target
from unbroken.testing import serve

from .process import Process
from .wire import Wire, assert_exact, body_of, end_of, text_of

ROOT = Path(__file__).resolve().parents[3]
UNBROKEN = Path(sys.executable).with_name("unbroken")


async def test_unbroken_serve_streams_then_sigterm_closes_1012_and_exits_0() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "examples.agent_app:app",
        "--port",
        "0",
        "--timeout-graceful-shutdown",
        "1",
        cwd=ROOT,
        env={**os.environ, "UNBROKEN_EXAMPLE_TOKENS_PER_S": "400"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    p = Process(proc)
    try:
        m = await p.wait_line(r"serving examples\.agent_app:app on (ws://\S+)")
        url = m.group(1)
        w = await Wire.open(url)
        sid = await w.start("r1", "report", {"words": 100_000})  # long: still running at SIGTERM
        await w.read_until_seq(sid, 50)
        proc.send_signal(signal.SIGTERM)
        assert await w.expect_close() == CloseCode.SERVICE_RESTART
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await asyncio.wait_for(p._reader, 5)
        log = "\n".join(p.lines)
        assert "start conn=" in log and sid in log
        assert "code=1012 reason=server restarting" in log
        assert "draining runs=1" in log
        assert f"run ended stream={sid} status=failed error=shutdown" in log
        assert "Traceback" not in log
    finally:
        await p.stop()


async def test_unbroken_serve_rejects_a_target_that_does_not_exist() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(UNBROKEN),
        "serve",
        "examples.nope:app",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"could not import module" in err


def test_load_target_finds_unbroken_and_asgi_apps() -> None:
    from unbroken.server import Unbroken

    assert isinstance(load_target("examples.agent_app:app"), Unbroken)
    assert callable(load_target("examples.fastapi_app:api"))
    with pytest.raises(Exception, match="no attribute"):
        load_target("examples.agent_app:nope")
    with pytest.raises(Exception, match="module:attribute"):
        load_target("examples.agent_app")


async def test_the_example_report_has_text_a_valid_json_part_a_chart_and_a_table() -> None:
    app = create_app()
    async with serve(app) as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "report", {"topic": "ships", "words": 500, "tokens_per_s": 0})
        events = await w.read_to_end(sid)
        await w.close()
    assert_exact(events)
    assert end_of(events).status == "completed"
    text = text_of(events)
    assert text.startswith("# Ships\n\n") and len(text.split()) >= 500
    assert sum(1 for e in events if e.kind is Kind.TEXT) == 502  # token by token
    parts = {e.part: e for e in events if e.kind is Kind.PART_START}
    ends = {e.part: e.error for e in events if e.kind is Kind.PART_END}
    assert ends == {"text": "", "summary": "", "chart": "", "table": ""}
    summary = json.loads(body_of(events, "summary"))
    jsonschema.validate(summary, SUMMARY_SCHEMA)
    assert json.loads(parts["summary"].schema) == SUMMARY_SCHEMA
    chart = json.loads(body_of(events, "chart"))
    assert parts["chart"].mime == "application/vnd.vegalite.v5+json"
    assert chart["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert len(chart["data"]["values"]) == 24
    table = json.loads(body_of(events, "table"))
    assert [c["name"] for c in table["columns"]] == ["region", "requests", "error_rate"]
    assert len(table["rows"]) == 4


async def test_the_example_fastapi_app_serves_mounted_and_authenticated_routes() -> None:
    api = create_api()
    async with serve(api, path="/agent/ws") as srv:
        w = await Wire.open(srv.url)
        sid = await w.start("r1", "echo", {"hi": 1})
        assert json.loads(text_of(await w.read_to_end(sid))) == {"hi": 1}
        secure = f"ws://{srv.host}:{srv.port}/secure/ws?token=demo-token"
        s = await Wire.open(secure)
        sid2 = await s.start("r2", "echo", "secure")
        assert text_of(await s.read_to_end(sid2)) == '"secure"'
        for c in (w, s):
            await c.close()
        async with httpx.AsyncClient(base_url=srv.http) as http:
            assert (await http.get("/")).json()["agent"] == "/agent/ws"
            assert (await http.get("/agent/healthz")).status_code == 200
