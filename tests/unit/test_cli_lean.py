"""``unbroken serve`` keeps what it imports to what a server needs: every worker
holds its imports in RSS for its whole life (issue 21)."""

from __future__ import annotations

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
