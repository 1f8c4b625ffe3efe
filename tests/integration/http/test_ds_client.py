"""Interop: the official Durable Streams TypeScript client (npm ``@durable-streams/client``,
installed with the conformance suite in ``conformance/``) reads an unbroken agent
answer, started over WebSocket, in each of its modes: the same items as the log holds,
to the end (closed), and the last offset carries the final digest."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from unbroken.client.http_reader import format_offset

from .conftest import ServeKit
from .test_agent_http import finished

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "conformance" / "read_agent.mjs"
CLIENT = ROOT / "conformance" / "node_modules" / "@durable-streams" / "client"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("node") is None or not CLIENT.is_dir(),
        reason="needs node and `npm ci` in conformance/",
    ),
]


async def _read(url: str, live: str, offset: str = "-1") -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        url,
        live,
        offset,
        cwd=SCRIPT.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.parametrize("live", ["false", "long-poll", "sse"])
async def test_the_official_client_reads_an_agent_answer_exact(served: ServeKit, live: str) -> None:
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 30000)  # several SSE batches, one catch-up
    meta = await kit.meta(stream)
    assert meta is not None
    url = f"{srv.http}/v1/agent/{stream}"
    got = await _read(url, live)
    async with httpx.AsyncClient() as http:
        expected = (await http.get(url)).json()
    assert got["items"] == expected
    assert got["offset"] == format_offset(meta.head, meta.digest)
    middle = await kit.app.store.digest_at(stream, 12345)
    assert middle is not None
    rest = await _read(url, live, format_offset(12345, middle))
    async with httpx.AsyncClient() as http:
        tail = (await http.get(url, params={"offset": format_offset(12345, middle)})).json()
    assert rest["items"] == tail
