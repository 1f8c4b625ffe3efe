"""The real OpenAI Agents SDK (``openai-agents``) forwarded by ``forward_run``, with a cut.

The dev venv has ``openai-agents`` (0.25 or later: ``unbroken[all]``) on websockets 17; this
test builds a throwaway venv (reused across runs: keyed on its requirements under the temp
dir) with unbroken's server and chaos dependencies plus ``openai-agents`` and websockets 16
(pinned here: the SDK allows 15 to 17, and what pip picks must not decide what is tested),
and runs ``agents_run_script.py`` there against the replayed provider. That also checks
unbroken's server, client and fault proxy on websockets 16.

Building the venv (pip over the network) can take minutes, so the test has its own
pytest-timeout limit: the build's own 600 s plus the run's two 120 s waits.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
import venv
from pathlib import Path

import pytest

from .conftest import FakeProvider, sse_data

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("agents_run_script.py")

# pytest-timeout counts a fixture's setup: the default 60 s would cut a venv build short
pytestmark = [pytest.mark.full, pytest.mark.timeout(900)]

# the websockets the SDK's venv must have (the dev venv has 17)
WEBSOCKETS_16 = "websockets>=16,<17"


def requirements() -> list[str]:
    """unbroken's base, server and chaos dependencies, the SDK's extra, and websockets 16."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = list(project["dependencies"])
    for name in ("server", "chaos", "openai-agents"):
        reqs += [r for r in extras[name] if not r.startswith("unbroken")]
    return [*reqs, WEBSOCKETS_16]


@pytest.fixture(scope="session")
def agents_python() -> str:
    reqs = requirements()
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    home = Path(tempfile.gettempdir()) / f"unbroken-openai-agents-{key}"
    python = home / "bin" / "python"
    with (home.with_suffix(".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (xdist workers, other runs)
        if not (home / "ready").is_file():
            shutil.rmtree(home, ignore_errors=True)
            venv.create(home, with_pip=True)
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *reqs],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            (home / "ready").write_text("\n".join(reqs))
    return str(python)


async def test_a_real_agents_sdk_run_is_exact_across_a_client_cut(
    provider: FakeProvider, agents_python: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
    proc = await asyncio.create_subprocess_exec(
        agents_python,
        str(SCRIPT),
        f"{provider.url}/v1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not first:
            raise AssertionError((await proc.stderr.read()).decode())
        assert json.loads(first)["cut"] >= 1  # cut while the provider waits at #GATE
        provider.gate.set()
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    a = json.loads(out)

    assert a["websockets"].startswith("16."), a["websockets"]  # unbroken works on 16
    assert a["status"] == "completed" and a["digest_ok"] and a["disconnects"] >= 1
    assert a["order"] == [
        "reasoning",
        "text",
        "tool-call_Wx1",
        "metadata",
        "result-call_Wx1",
        "text-2",
        "metadata-2",
    ]
    parts = a["parts"]
    assert all(p["ended"] and p["error"] == "" for p in parts.values())
    first_ev, second_ev = sse_data("agents_run"), sse_data("agents_run.2")

    def joined(ev: list[dict], t: str) -> str:
        return "".join(e["delta"] for e in ev if e["type"] == t)

    assert parts["reasoning"]["text"] == joined(first_ev, "response.reasoning_summary_text.delta")
    assert parts["reasoning"]["mime"] == "text/plain; role=reasoning"
    assert parts["text"]["text"] == joined(first_ev, "response.output_text.delta")
    assert parts["text-2"]["text"] == joined(second_ev, "response.output_text.delta")
    args = joined(first_ev, "response.function_call_arguments.delta")
    assert parts["tool-call_Wx1"]["text"] == args
    result = {"city": "Paris, France", "temp": 21, "units": "c", "sky": "sunny"}
    assert a["tool_calls"] == [["call_Wx1", "get_weather", json.loads(args), result, ""]]
    assert a["tool_ran"] == [{"city": "Paris, France", "units": "c"}]
    u1, u2 = first_ev[-1]["response"]["usage"], second_ev[-1]["response"]["usage"]
    m1, m2 = a["metadata"]
    assert m1 == {
        "provider": "openai_agents",
        "id": "resp_01",
        "model": "gpt-5-mini-2025-08-07",
        "agent": "weather",
        "finish_reason": "completed",
        "usage": u1,
    }
    assert m2["id"] == "resp_02" and m2["usage"] == u2 and m2["agent"] == "weather"
    total = u1["total_tokens"] + u2["total_tokens"]
    assert a["usage"]["total_tokens"] == a["turn"]["usage"]["total_tokens"] == total
    assert a["finish_reason"] == a["turn"]["finish_reason"] == "completed"
    assert a["turn"]["final_output"] == parts["text-2"]["text"]
