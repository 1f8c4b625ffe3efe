"""``unbroken serve`` keeps what it imports to what a server needs: every worker
holds its imports in RSS for its whole life (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
sys.argv = ["unbroken", *sys.argv[1:]]
from unbroken.cli import main
try:
    main()
except SystemExit:
    pass
HEAVY = ("unbroken.scenarios.catalog", "jwt", "jsonschema")
print("LOADED", *(m for m in HEAVY if m in sys.modules))
"""


def loaded(*argv: str) -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    last = out.stdout.strip().splitlines()[-1].split()
    assert last[0] == "LOADED", out.stdout + out.stderr
    return out.stdout, last[1:]


def test_serve_builds_no_scenario_catalog_and_no_schema_validator() -> None:
    text, mods = loaded("serve", "--help")
    assert "--workers" in text  # the command line was built and shown
    assert mods == []


def test_the_chaos_group_is_still_there_with_its_catalog() -> None:
    text, mods = loaded("chaos", "run", "--help")
    assert "--conditions" in text
    assert "unbroken.scenarios.catalog" in mods


SERVING = """
import sys
import uvicorn

async def serve(self, sockets=None):  # started as far as uvicorn: report, do not serve
    mods = [m for m in HEAVY if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules)]
    print("SERVING", self.config.ws_max_size, self.config.backlog, *mods, flush=True)

uvicorn.Server.serve = serve
HEAVY = ("typer", "pydantic", "rich", "starlette", "unbroken.chaos", "unbroken.scenarios",
         "unbroken.cli",
         "jwt", "jsonschema",
         # ~0.8 MB and ~0.5 MB of RSS a worker: the RSS read is /proc's on Linux, the
         # client's session is the client's; the TOML parser is for --policy files
         "psutil", "unbroken.protocol.client_session", "tomllib",
         # the HTTP stream handlers: made on their first request
         "unbroken.server.http_streams", "unbroken.server.ui_streams", "unbroken.server.http_agent",
         # metrics on by default: their registry (and the library) come with the first
         # scrape; OpenTelemetry once the application imports it (none here)
         "prometheus_client", "opentelemetry")
sys.argv = ["unbroken", *sys.argv[1:]]
from unbroken.__main__ import main
main()
"""


def test_a_serving_process_imports_no_command_line_toolkit() -> None:
    """``unbroken serve`` parses its options without Typer (which brings pydantic,
    ~7 MB), Rich or the chaos tools, and still applies them."""
    options = ["--port", "0", "--ws-max-size", "12345", "--backlog", "77", "--log-level", "warning"]
    out = subprocess.run(
        [sys.executable, "-c", SERVING, "serve", "benchmarks.paced:app", *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("SERVING")]
    assert lines, out.stdout + out.stderr
    assert lines[0].split()[1:] == ["12345", "77"]  # options parsed, nothing heavy loaded


def test_serve_has_the_same_options_with_or_without_typer() -> None:
    import typer.main

    from unbroken.cli import app
    from unbroken.server.cli import _click_command

    def shape(command: object) -> list[tuple[object, ...]]:
        return sorted(
            (p.name, tuple(p.opts), tuple(p.secondary_opts), p.required)
            + (() if p.required else (p.default,))
            for p in command.params  # type: ignore[attr-defined]
        )

    typed = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    assert shape(_click_command()) == shape(typed)
    assert len(typed.params) > 30


def test_serve_refuses_a_leftover_grace_below_zero_or_unbounded() -> None:
    from typer.testing import CliRunner

    from unbroken.cli import app

    argv = ["serve", "examples.agent_app:app", "--port", "0", "--leftover-grace"]
    for bad in ("-1", "nan", "inf"):
        result = CliRunner().invoke(app, [*argv, bad])
        assert result.exit_code == 2, result.output
        assert "--leftover-grace" in result.output and "0 or more" in result.output


def test_serve_help_shows_square_brackets_as_written() -> None:
    # Rich would take `[server]` or `[origins]` for markup and drop it from the help
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "unbroken", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    text = " ".join(out.stdout.replace("│", " ").split())
    assert "pip install 'unbroken[server]'" in text, text
    assert "(TOML: [origins] allow, allow_any, same_host; [cors] allow_headers" in text, text
