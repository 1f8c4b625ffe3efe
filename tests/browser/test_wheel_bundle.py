"""The wheel ships the browser client: ``pip wheel .`` holds ``js/dist/unbroken.js`` as
``unbroken/server/static/unbroken.js``, and ``unbroken serve --demo-page`` run from
that wheel alone (no checkout on the path) serves it at ``/unbroken.js``. Full tier
(building a wheel takes a while)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from unbroken.scenarios.browser import BUNDLE

ROOT = Path(__file__).resolve().parents[2]

APP = """from unbroken.server import Unbroken
app = Unbroken(allow_anonymous=True)

@app.agent("hi")
async def hi(req, out):
    await out.text("hi")
"""


def unpack(tmp_path: Path) -> bytes:
    """Extract the wheel (and write the app beside it); its copy of the bundle."""
    [wheel] = tmp_path.glob("unbroken-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
        shipped = z.read("unbroken/server/static/unbroken.js")
        # (and protocol v1's codec, which the bundle loads from next to itself)
        # (and the modules it loads from next to itself: v1's codec, JavaScript BLAKE2b)
        for name in ("unbroken-v1.js", "unbroken-blake2b.js"):
            assert z.read(f"unbroken/server/static/{name}") == (BUNDLE.parent / name).read_bytes()
    (tmp_path / "myapp.py").write_text(APP)
    return shipped


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        body: bytes = r.read()
        return body


@pytest.mark.full
async def test_the_wheel_serves_the_built_bundle(tmp_path: Path) -> None:
    built = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await built.communicate()
    assert built.returncode == 0, out.decode()
    assert await asyncio.to_thread(unpack, tmp_path) == BUNDLE.read_bytes()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{tmp_path}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from unbroken.cli import main; main()",
        "serve", "myapp:app", "--demo-page", "--port", "0", "--loop", "asyncio",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        url, lines = "", []
        async with asyncio.timeout(30):
            while not url:
                line = (await proc.stderr.readline()).decode()
                assert line, f"unbroken serve exited: {''.join(lines)}"
                lines.append(line)
                assert "not built" not in line, line
                found = re.search(r"demo page: (http://\S+)", line)
                url = found.group(1) if found else ""
        assert await asyncio.to_thread(get, f"{url}unbroken.js") == BUNDLE.read_bytes()
        for name in ("unbroken-v1.js", "unbroken-blake2b.js"):
            lazy = (BUNDLE.parent / name).read_bytes()
            assert await asyncio.to_thread(get, f"{url}{name}") == lazy
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
