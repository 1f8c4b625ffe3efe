"""Agent answers as an AI SDK UI message stream and as AG-UI events, over real
sockets: read whole, read live, cut mid-answer by the fault proxy and read again
(the prelude rebuilds the message exactly), owner only, clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.protocol.events import Kind

from ..server.conftest import Kit
from .conftest import CHART, META, REASONING, RESULT, TEXT_1, TEXT_2, TOOL_ARGS
from .parsers import ag_ui_events, ag_ui_run, ai_sdk_chunks, ai_sdk_message

pytestmark = pytest.mark.timeout(60)

ALICE = {"authorization": "Bearer alice-token"}
TIMEOUT = 10.0


class SSEReader:
    """One GET read in a task: ``raw`` grows as bytes arrive; ``until`` waits for a
    condition on them; ``error`` is what ended the read (``None``: a clean end)."""

    def __init__(self, http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.raw = b""
        self.status = 0
        self.headers: httpx.Headers = httpx.Headers()
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._run(http, url, headers))

    async def _run(self, http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        try:
            async with http.stream("GET", url, headers=headers) as r:
                self.status, self.headers = r.status_code, r.headers
                self._changed.set()
                async for piece in r.aiter_raw():
                    self.raw += piece
                    self._changed.set()
        except (httpx.HTTPError, OSError) as exc:
            self.error = exc
        finally:
            self._changed.set()

    @property
    def done(self) -> bool:
        return self._task.done()

    async def until(self, ok: Callable[[bytes], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not ok(self.raw):
                if self._task.done():
                    raise AssertionError(
                        f"the read ended first: {self.error!r} {self.raw[-300:]!r}"
                    )
                self._changed.clear()
                await self._changed.wait()

    async def finish(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.shield(self._task)
        return self.raw

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


def expected_ai_sdk(stream: str) -> dict[str, Any]:
    return {
        "id": stream,
        "metadata": META,
        "parts": [
            {"type": "reasoning", "text": "".join(REASONING), "state": "done"},
            {"type": "text", "text": "".join(TEXT_1), "state": "done"},
            {
                "type": "tool-get_weather",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": json.loads("".join(TOOL_ARGS)),
                "output": RESULT,
            },
            {"type": "text", "text": "".join(TEXT_2), "state": "done"},
            {"type": "data-chart", "id": "chart", "data": CHART},
        ],
        "end": {"type": "finish", "finishReason": "stop"},
    }


def expected_ag_ui(stream: str) -> dict[str, Any]:
    return {
        "runId": stream,
        "threadId": stream,
        "messages": [
            {"id": f"{stream}.text", "content": "".join(TEXT_1), "done": True},
            {"id": f"{stream}.text-2", "content": "".join(TEXT_2), "done": True},
        ],
        "reasoning": [{"id": f"{stream}.reasoning", "content": "".join(REASONING), "done": True}],
        "tools": [
            {"id": "call_1", "name": "get_weather", "args": "".join(TOOL_ARGS), "done": True}
        ],
        "results": [{"toolCallId": "call_1", "content": json.dumps(RESULT, separators=(",", ":"))}],
        "custom": [{"name": "chart", "value": CHART}, {"name": "metadata", "value": META}],
        "end": {
            "type": "RUN_FINISHED",
            "threadId": stream,
            "runId": stream,
            "result": {"metadata": META},
        },
    }


async def log_parts(kit: Kit, stream: str) -> dict[str, str]:
    """Each part's whole body, as the log holds it."""
    _epoch, events = await kit.app.store.read_all(stream)  # type: ignore[attr-defined]
    bodies: dict[str, str] = {}
    for ev in events:
        if ev.kind in (Kind.TEXT, Kind.JSON, Kind.DATA):
            bodies[ev.part] = bodies.get(ev.part, "") + ev.body
    return bodies


async def start_mixed(url: str, gates: dict[str, str] | None = None) -> str:
    async with Client(url, token="alice-token") as c:
        stream = await c.start("mixed", {"gates": gates or {}})
        return stream.id


async def test_a_finished_answer_reads_whole_in_both_protocols_equal_to_the_log(
    ui_served: Any,
) -> None:
    kit, srv = await ui_served()
    stream = await start_mixed(srv.url)
    await kit.wait_ended(stream)
    bodies = await log_parts(kit, stream)
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.get(f"/v1/ui/ai-sdk/{stream}", headers=ALICE)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.headers["unbroken-status"] == "completed"
        chunks, done = ai_sdk_chunks(r.content)
        assert done
        msg = ai_sdk_message(chunks)
        assert msg["parts"] == expected_ai_sdk(stream)["parts"], msg["parts"]
        assert msg == expected_ai_sdk(stream)
        # the message is the log's content, part by part
        assert msg["parts"][0]["text"] == bodies["reasoning"]
        assert msg["parts"][1]["text"] == bodies["text"]
        assert msg["parts"][2]["input"] == json.loads(bodies["tool-call_1"])
        assert msg["parts"][2]["output"] == json.loads(bodies["result-call_1"])
        assert msg["parts"][3]["text"] == bodies["text-2"]
        assert msg["parts"][4]["data"] == json.loads(bodies["chart"])
        assert msg["metadata"] == json.loads(bodies["metadata"])
        # the prelude is compact: one delta per part
        kinds = [c["type"] for c in chunks]
        assert kinds.count("text-delta") == 2 and kinds.count("tool-input-delta") == 1

        r = await http.get(f"/v1/ui/ag-ui/{stream}", headers=ALICE)
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        run = ag_ui_run(ag_ui_events(r.content))
        assert run == expected_ag_ui(stream)
        assert run["tools"][0]["args"] == bodies["tool-call_1"]
        r = await http.get(f"/v1/ui/ag-ui/{stream}?threadId=chat-7", headers=ALICE)
        assert ag_ui_run(ag_ui_events(r.content))["threadId"] == "chat-7"


@pytest.mark.parametrize("proto", ["ai-sdk", "ag-ui"])
async def test_a_cut_mid_answer_then_a_reconnect_rebuilds_the_exact_message(
    ui_served: Any, proto: str
) -> None:
    """One reader live from the start on the direct socket; one through the fault
    proxy, cut (rst) after the tool call while the agent is paused, reconnected (the
    prelude), then live to the end. Both messages equal the uninterrupted read's."""
    kit, srv = await ui_served()
    stream = await start_mixed(srv.url, {"g1": "g1", "g2": "g2"})
    async with asyncio.timeout(TIMEOUT):
        await kit.reached["g1"].wait()
    path = f"/v1/ui/{proto}/{stream}"
    tool_done = b"tool-input-available" if proto == "ai-sdk" else b"TOOL_CALL_END"
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        FaultProxy(f"127.0.0.1:{srv.port}") as proxy,
    ):
        live = SSEReader(http, f"{srv.http}{path}", ALICE)
        cut = SSEReader(http, f"http://{proxy.listen}{path}", ALICE)
        first_text = "".join(TEXT_1)[-6:].encode()
        await live.until(lambda b: first_text in b)
        await cut.until(lambda b: first_text in b)
        kit.gates["g1"].set()
        async with asyncio.timeout(TIMEOUT):
            await kit.reached["g2"].wait()
        await cut.until(lambda b: tool_done in b)
        await proxy.disable("rst")
        async with asyncio.timeout(TIMEOUT):
            while not cut.done:  # noqa: ASYNC110 - polled under a timeout
                await asyncio.sleep(0.01)
        assert cut.error is not None  # the read was cut, not ended
        before = cut.raw
        await proxy.enable()
        again = SSEReader(http, f"http://{proxy.listen}{path}", ALICE)
        await again.until(lambda b: tool_done in b)  # the prelude, while the agent waits
        kit.gates["g2"].set()
        raw_live, raw_again = await live.finish(), await again.finish()
        assert again.error is None and live.error is None
    await kit.wait_ended(stream)
    if proto == "ai-sdk":
        want = expected_ai_sdk(stream)
        chunks, done = ai_sdk_chunks(raw_again)
        assert done and ai_sdk_message(chunks) == want
        chunks, done = ai_sdk_chunks(raw_live)
        assert done and ai_sdk_message(chunks) == want
        assert b"[DONE]" not in before
    else:
        want = expected_ag_ui(stream)
        assert ag_ui_run(ag_ui_events(raw_again)) == want
        assert ag_ui_run(ag_ui_events(raw_live)) == want
        assert b"RUN_FINISHED" not in before
    # live deltas arrived one by one on the uninterrupted read, and joined in the prelude
    if proto == "ai-sdk":
        live_kinds = [c["type"] for c in ai_sdk_chunks(raw_live)[0]]
        again_kinds = [c["type"] for c in ai_sdk_chunks(raw_again)[0]]
        assert live_kinds.count("tool-input-delta") == len(TOOL_ARGS)
        assert again_kinds.count("tool-input-delta") == 1
        assert again_kinds.count("text-delta") == 1 + len(TEXT_2)


async def test_owner_only_resume_shape_and_clear_errors(ui_served: Any) -> None:
    kit, srv = await ui_served()
    running = await start_mixed(srv.url, {"g1": "g1"})
    async with asyncio.timeout(TIMEOUT):
        await kit.reached["g1"].wait()
    async with httpx.AsyncClient(base_url=srv.http, timeout=TIMEOUT) as http:
        bob = {"authorization": "Bearer bob-token"}
        for path in (f"ai-sdk/{running}", f"ag-ui/{running}", f"ai-sdk/{running}/stream"):
            r = await http.get(f"/v1/ui/{path}", headers=bob)
            assert r.status_code == 404, path
            unknown = await http.get(f"/v1/ui/{path.replace(running, 'f' * 32)}", headers=ALICE)
            assert unknown.status_code == 404 and unknown.text == r.text
            assert (await http.get(f"/v1/ui/{path}")).status_code == 401
        assert (await http.get(f"/v1/ui/other/{running}", headers=ALICE)).status_code == 404
        assert (await http.get(f"/v1/ui/ag-ui/{running}/stream", headers=ALICE)).status_code == 404
        r = await http.post(f"/v1/ui/ai-sdk/{running}", headers=ALICE)
        assert r.status_code == 405
        r = await http.get(f"/v1/ui/ag-ui/{running}?threadId=" + "x" * 201, headers=ALICE)
        assert r.status_code == 400
        # useChat's reconnect path: the answer in flight, prelude then live
        reader = SSEReader(http, f"{srv.http}/v1/ui/ai-sdk/{running}/stream", ALICE)
        await reader.until(lambda b: b"text-end" in b)
        assert reader.headers["x-vercel-ai-ui-message-stream"] == "v1"
        kit.gates["g1"].set()
        chunks, done = ai_sdk_chunks(await reader.finish())
        assert done and ai_sdk_message(chunks) == expected_ai_sdk(running)
        await kit.wait_ended(running)
        # ended: no active stream (204), as the AI SDK expects; the whole answer stays readable
        r = await http.get(f"/v1/ui/ai-sdk/{running}/stream", headers=ALICE)
        assert r.status_code == 204
        r = await http.get(f"/v1/ui/ai-sdk/{running}", headers=ALICE)
        assert r.status_code == 200
        # a page of a refused origin: 403, nothing read
        r = await http.get(
            f"/v1/ui/ai-sdk/{running}", headers={**ALICE, "origin": "https://evil.example"}
        )
        assert r.status_code == 403
    # the server is still fine
    other = await start_mixed(srv.url)
    assert (await kit.wait_ended(other)).status == "completed"


AI_JS = Path(__file__).resolve().parents[3] / "js" / "node_modules" / "ai" / "dist" / "index.js"


@pytest.mark.skipif(
    shutil.which("node") is None or not AI_JS.exists(), reason="needs node and js/ (npm ci)"
)
async def test_the_ai_packages_own_reader_rebuilds_the_message_through_use_chats_resume(
    ui_served: Any,
) -> None:
    """``DefaultChatTransport.reconnectToStream`` (what ``useChat({resume: true})``
    calls) against ``/v1/ui/ai-sdk``, mid-answer, then ``readUIMessageStream``: the
    SDK's schema accepts every chunk and its message holds the log's parts."""
    kit, srv = await ui_served()
    stream = await start_mixed(srv.url, {"g1": "g1"})
    async with asyncio.timeout(TIMEOUT):
        await kit.reached["g1"].wait()
    script = Path(__file__).with_name("ai_sdk_reader.mjs")
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        str(AI_JS),
        f"{srv.http}/v1/ui/ai-sdk",
        stream,
        "alice-token",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            first = await proc.stdout.readline()
            assert first == b"connected\n", (first, await proc.stderr.read())  # type: ignore[union-attr]
            kit.gates["g1"].set()
            out, err = await proc.communicate()
        assert proc.returncode == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    msg = json.loads(out)
    assert msg["id"] == stream and msg["role"] == "assistant"
    assert msg["metadata"] == META
    parts = [p for p in msg["parts"] if p["type"] != "step-start"]
    assert [p["type"] for p in parts] == [
        "reasoning",
        "text",
        "tool-get_weather",
        "text",
        "data-chart",
    ]
    assert parts[0]["text"] == "".join(REASONING) and parts[0]["state"] == "done"
    assert parts[1]["text"] == "".join(TEXT_1)
    assert parts[2]["toolCallId"] == "call_1" and parts[2]["state"] == "output-available"
    assert parts[2]["input"] == json.loads("".join(TOOL_ARGS)) and parts[2]["output"] == RESULT
    assert parts[3]["text"] == "".join(TEXT_2)
    assert parts[4]["data"] == CHART
    # ended: the SDK's "no active stream"
    await kit.wait_ended(stream)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        str(AI_JS),
        f"{srv.http}/v1/ui/ai-sdk",
        stream,
        "alice-token",
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert out == b"null\n"


async def test_cors_for_a_page_and_a_drain_ends_a_live_response_without_its_end(
    ui_served: Any,
) -> None:
    """A page of an allowed origin reads the stream and its SDK header (exposed); a
    preflight for it passes. A server that drains ends an open UI response within a
    second, without ``finish``/``[DONE]``: the front end resumes (elsewhere)."""
    kit, srv = await ui_served(shutdown_grace=0.2)
    stream = await start_mixed(srv.url, {"g1": "g1"})
    async with asyncio.timeout(TIMEOUT):
        await kit.reached["g1"].wait()
    path = f"/v1/ui/ai-sdk/{stream}"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        pre = await http.options(
            f"{srv.http}{path}",
            headers={
                "origin": srv.http,
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization",
            },
        )
        assert pre.status_code == 204
        assert "authorization" in pre.headers["access-control-allow-headers"]
        reader = SSEReader(http, f"{srv.http}{path}", {**ALICE, "origin": srv.http})
        await reader.until(lambda raw: b"text-end" in raw)
        assert reader.headers["access-control-allow-origin"] == srv.http
        assert "x-vercel-ai-ui-message-stream" in reader.headers["access-control-expose-headers"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        srv.stop()
        raw = await reader.finish()
        assert loop.time() - began < 5.0
        assert reader.error is None  # ended by the server, cleanly
        chunks, done = ai_sdk_chunks(raw)
        assert not done and chunks[-1]["type"] == "text-end"
    kit.gates["g1"].set()
