"""unbroken is typed for its users: ``py.typed`` ships, so ``mypy --strict`` on a user's
own code sees unbroken's real types, not ``Any``.

The check runs mypy as a user would: from a directory outside the repository, on a
file that imports the installed package (PEP 561: a package found on the import path
of an installed distribution, editable or not, is analysed only with a ``py.typed``
marker; without it mypy reports ``import-untyped`` and every name is ``Any``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unbroken

ROOT = Path(unbroken.__file__).resolve().parents[1]

USER_CODE = """\
from unbroken import Client, Output, Request, StreamGone, Unbroken, UnbrokenError, errors

app = Unbroken()


@app.agent("report")
async def report(req: Request, out: Output) -> None:
    await out.text("hello")
    # out.data's rules, as the overloads state them: a dict or list is JSON (its mime
    # optional), bytes and str need their mime; anything else is refused
    await out.data("chart", {"mark": "bar"})
    await out.data("spec", [1, 2], mime="application/vnd.vegalite.v5+json")
    await out.data("image", b"PNG", mime="image/png")
    await out.data("table", "a,b", mime="text/csv")
    await out.data("image2", b"PNG")  # type: ignore[call-overload]
    await out.data("table2", "a,b")  # type: ignore[call-overload]
    await out.data("n", 42, mime="text/plain")  # type: ignore[call-overload]
    reveal_type(out.data)


async def main() -> None:
    async with Client("ws://127.0.0.1:8000/ws") as client:
        stream = await client.start("report", {"q": "x"})
        answer = await stream.wait()
        reveal_type(app)
        reveal_type(client)
        reveal_type(stream)
        reveal_type(answer)
        reveal_type(answer.text)
        reveal_type(out_text)
        reveal_type(errors.ChainMismatch)
    try:
        pass
    except StreamGone as exc:
        reveal_type(exc)
    except UnbrokenError as exc:
        reveal_type(exc)


out_text = Output.text
"""

#: What each ``reveal_type`` above must show (in order, a part of it): a real type,
#: never ``Any``.
EXPECTED = [
    # the JSON overload first, its mime optional and offering the JSON types
    "body: typing.Mapping[str, Any] | list[Any], *, mime: Literal['application/json']",
    "unbroken.server.app.Unbroken",
    "unbroken.client.client.Client",
    "unbroken.client.client.Stream",
    "unbroken.client.response.Answer",
    "str",
    "def (self: unbroken.server.agent.Output, delta: str",
    "-> unbroken.errors.ChainMismatch",
    "unbroken.errors.StreamGone",
    "unbroken.errors.UnbrokenError",
]


def test_the_package_carries_the_py_typed_marker() -> None:
    # hatch ships every file of the package directory in the wheel
    # ([tool.hatch.build.targets.wheel] packages = ["unbroken"]), the marker with them
    assert (Path(unbroken.__file__).parent / "py.typed").is_file()


def test_mypy_strict_on_user_code_sees_real_types_not_any(tmp_path: Path) -> None:
    mypy = Path(sys.executable).with_name("mypy")
    if not mypy.exists() and shutil.which("mypy") is None:
        pytest.skip("mypy is not installed")
    user = tmp_path / "user_app.py"
    user.write_text(USER_CODE)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # not the repository's configuration
    # a copy of the cache of the checkout's own `mypy` run (./dev test runs it first), if
    # any: mypy re-checks whatever its options, paths or hashes do not match, so only
    # the time changes (~12 s cold, ~1.5 s warm); finding unbroken and its py.typed
    # marker is done afresh either way
    repo_cache = ROOT / ".mypy_cache"
    if repo_cache.is_dir():
        shutil.copytree(repo_cache, tmp_path / ".mypy_cache")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-executable",
            sys.executable,
            "--show-error-codes",
            str(user),
        ],
        cwd=tmp_path,  # outside the repository: unbroken is found as an installed package
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert "import-untyped" not in output, output
    revealed = re.findall(r'Revealed type is "(.*)"', output)
    assert len(revealed) == len(EXPECTED), output
    for got, want in zip(revealed, EXPECTED, strict=True):
        assert want in got, f"revealed {got!r}, want {want!r}\n{output}"
        assert got != "Any"
    # only the notes: no error in the user's strict run
    assert "error:" not in output, output
