"""``unbroken serve``'s admission flags reach the app: a real process started with
``--max-runs 1`` answers a second concurrent start ``overloaded`` with
``retry_after_ms`` while the first streams on; a bad value is refused at start."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from unbroken.protocol.codes import ErrorCode
from unbroken.protocol.frames import Start

from .hardened import ROOT, ServeProcess
from .wire import Wire

SLOW = {"words": 4000, "tokens_per_s": 200}


@pytest.mark.full  # a real serve process and a slow agent, ~11 s
async def test_max_runs_flag_refuses_a_second_run_and_keeps_the_first() -> None:
    srv = await ServeProcess.start("--max-runs", "1", "--stall-timeout", "30")
    try:
        w = await Wire.open(srv.url)
        first = await w.start("one", "report", SLOW)
        await w.send(Start("two", "report", SLOW))
        await w.until(lambda _o: any(e.req == "two" for e in w.errors))
        refused = next(e for e in w.errors if e.req == "two")
        assert refused.code == ErrorCode.OVERLOADED and (refused.retry_after_ms or 0) > 0
        assert "two" not in w.started
        before = len(w.events.get(first, []))
        await w.until(lambda _o: len(w.events.get(first, [])) > before + 5)  # still streaming
        await w.close()
    finally:
        await srv.stop()


async def test_a_bad_admission_value_is_refused_at_start() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("unbroken")),
        "serve",
        "examples.agent_app:app",
        "--port",
        "0",
        "--max-runs",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"max_runs must be at least 1" in err


CONFIG_APP = """
from unbroken import Unbroken

app = Unbroken(allow_anonymous=True)


@app.agent("adaptive")
async def adaptive(req, out):
    await out.text(str(app.config.adaptive))
"""


@pytest.mark.parametrize(("flag", "expected"), [("--no-adaptive", "False"), (None, "True")])
async def test_the_adaptive_flag_reaches_the_running_app(
    tmp_path: Path, flag: str | None, expected: str
) -> None:
    """``--no-adaptive`` turns adaptive delivery off in the served app (the agent
    reads the configuration the connections are built from); without it, it stays on."""
    from unbroken import Client

    (tmp_path / "adaptive_app.py").write_text(CONFIG_APP)
    args = [flag] if flag else []
    srv = await ServeProcess.start(*args, target="adaptive_app:app", path=tmp_path)
    try:
        async with Client(srv.url) as client:
            st = await client.start("adaptive")
            answer = await asyncio.wait_for(st.wait(), 30)
        assert answer.text == expected
    finally:
        await srv.stop()
