"""benchmarks.wirestep (the instruction ratio to bare, issue 21) runs both servers to
the last round: the client counts every token each server sends, and a round starts
only on its count, so a server that dropped or merged a token would hang it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.full  # a benchmark's harness (~9 s): the long tier
@pytest.mark.parametrize("server", ["unbroken", "bare"])
def test_wirestep_runs_every_round(server: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.wirestep",
            "--server",
            server,
            "--streams",
            "4",
            "--rounds",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["server"] == server
    assert result["streams"] == 4 and result["rounds"] == 3
    assert result["cpu_us_per_token"] > 0
