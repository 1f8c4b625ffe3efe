"""The protocol core is sans-I/O: importing it pulls in neither asyncio nor socket."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import unbroken.protocol
bad = [m for m in ("asyncio", "socket", "selectors", "ssl") if m in sys.modules]
assert not bad, f"unbroken.protocol imported {bad}"
"""


def test_importing_the_protocol_core_imports_neither_asyncio_nor_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
