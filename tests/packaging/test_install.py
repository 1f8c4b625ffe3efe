"""Install what you use: a client-only ``pip install unbroken`` brings no server stack.

The default-tier tests check, in a fresh interpreter of the project's venv, that a client
imports nothing of the server, the chaos toolkit or the command line, and that a server
name or the command line used without its extra says which extra to install (the extra's
modules hidden with ``sys.modules[name] = None``, which makes them unimportable).

The full-tier test does it for real: it builds the wheel, installs it with only its base
dependencies into a new virtual environment (no system site-packages), and runs a client
there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what a client-only install must neither import nor install
SERVER_STACK = (
    "starlette",
    "uvicorn",
    "typer",
    "rich",
    "psutil",
    "jwt",
    "click",
    "uvloop",
    "prometheus_client",
)

CLIENT_SCRIPT = f"""
import importlib.util, sys
import unbroken
from unbroken import Client, Cursor, StreamGone
client = Client("ws://127.0.0.1:9/ws")
assert Cursor.parse(str(Cursor("s1", 3, "ab" * 16, "e1"))).seq == 3
heavy = {SERVER_STACK!r}
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in heavy)
assert not loaded, f"a client imported {{loaded}}"
print("imported:", loaded)
print("installed:", sorted(m for m in heavy if importlib.util.find_spec(m) is not None))
"""


def _run(python: str, code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_client_imports_no_server_chaos_or_cli_module() -> None:
    out = _run(sys.executable, CLIENT_SCRIPT)
    assert "imported: []" in out


HIDE = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"


def test_a_server_name_without_the_server_extra_names_the_extra() -> None:
    code = HIDE.format(mods=SERVER_STACK) + (
        "import unbroken\n"
        "try:\n    unbroken.Unbroken\nexcept unbroken.MissingExtra as e:\n"
        "    assert isinstance(e, unbroken.ConfigError) and isinstance(e, ImportError)\n"
        "    print(e)\n"
        "try:\n    from unbroken.server import Unbroken\nexcept unbroken.MissingExtra as e:\n"
        "    print(e)\n"
        "try:\n    import unbroken.testing\nexcept unbroken.MissingExtra as e:\n"
        "    print(e)\n"
    )
    out = _run(sys.executable, code)
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert "'server' extra" in line and "pip install 'unbroken[server]'" in line, out


def test_the_command_line_without_typer_says_which_extra_to_install() -> None:
    code = HIDE.format(mods=("typer", "click", "rich")) + (
        "from unbroken.__main__ import main\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'unbroken[chaos]'" in proc.stderr, proc.stderr


def test_the_extras_split_client_server_and_chaos() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ("starlette", "uvicorn", "typer", "rich", "psutil", "pyjwt", "prometheus"):
        assert name not in base, f"{name} is a base dependency: a client would install it"
    extras = project["optional-dependencies"]
    assert {"server", "chaos", "report", "redis", "all", "dev"} <= set(extras)
    server = " ".join(extras["server"]).lower()
    assert all(n in server for n in ("starlette", "uvicorn", "psutil", "pyjwt"))
    assert "unbroken[all]" in extras["dev"]  # ./dev installs everything
    assert project["scripts"]["unbroken"] == "unbroken.__main__:main"


def _pip_env() -> dict[str, str]:
    # the same pip configuration as the project's venv (index, find-links, certificates)
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.full
def test_a_client_only_install_from_the_wheel_brings_no_server_stack(tmp_path: Path) -> None:
    env = _pip_env()
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        timeout=600,
        env=env,
    )
    (wheel,) = wheels.glob("unbroken-*.whl")
    home = tmp_path / "venv"
    venv.create(home, with_pip=True, system_site_packages=False)
    python = str(home / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600, env=env
    )
    work = tmp_path / "elsewhere"  # not the repository: unbroken comes from the venv
    work.mkdir()
    proc = subprocess.run(
        [python, "-c", "import unbroken; print(unbroken.__file__)\n" + CLIENT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(home) in proc.stdout.splitlines()[0], proc.stdout
    assert "imported: []" in proc.stdout and "installed: []" in proc.stdout, proc.stdout
    cli = subprocess.run(
        [str(home / "bin" / "unbroken"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=env,
    )
    assert cli.returncode == 1
    assert "pip install 'unbroken[chaos]'" in cli.stderr and "Traceback" not in cli.stderr
    server = subprocess.run(
        [python, "-c", "import unbroken; unbroken.Unbroken"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=env,
    )
    assert server.returncode == 1
    assert "MissingExtra" in server.stderr and "unbroken[server]" in server.stderr


@pytest.mark.full
def test_a_server_install_serves_and_brings_no_report_or_redis(tmp_path: Path) -> None:
    """``pip install 'unbroken[server]'``: the server and ``unbroken serve`` work; the
    report's matplotlib and the Redis client stay out."""
    env = _pip_env()
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        timeout=600,
        env=env,
    )
    (wheel,) = wheels.glob("unbroken-*.whl")
    home = tmp_path / "venv"
    venv.create(home, with_pip=True, system_site_packages=False)
    python = str(home / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"{wheel}[server]"],
        check=True,
        timeout=900,
        env=env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import importlib.util\n"
        "from unbroken import JWTAuth, MemoryStore, Unbroken\n"
        "app = Unbroken(allow_anonymous=True)\n"
        "print('absent:', [m for m in ('matplotlib', 'redis') if importlib.util.find_spec(m)])\n"
    )
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=120, cwd=work, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "absent: []" in proc.stdout
    serve = subprocess.run(
        [str(home / "bin" / "unbroken"), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
        env=env,
    )
    assert serve.returncode == 0 and "Usage" in serve.stdout, serve.stdout + serve.stderr
