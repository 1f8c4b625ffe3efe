"""Instructions per token on the server's path: cachegrind over ``benchmarks.lockstep``.

A figure the machine's load does not move (issue 21): ``valgrind --tool=cachegrind``
counts the instructions of two lockstep invocations that differ only in their round
count (``--high`` and ``--low`` tokens per stream); their difference divided by the
extra tokens is the cost of one token, with imports and start-up cancelled out. A
warm-up invocation runs first so that compiling ``.pyc`` files (after a checkout or a
rebase touched a module) is not counted in one of the two.

    python -m benchmarks.instructions            # 200 streams, 25 - 5 rounds
    python -m benchmarks.instructions --repeat 2 # two measurements (they agree to ~0.1 %)

Prints one JSON line; ``--out FILE`` writes it too. valgrind is a measuring aid
(Debian's ``valgrind``), not a dependency.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(streams: int, rounds: int) -> int:
    """Instructions of one lockstep invocation under cachegrind."""
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.lockstep",
        "--streams",
        str(streams),
        "--rounds",
        str(rounds),
        "--reps",
        "1",
        "--heartbeat",
        "1000",  # the heartbeat's sweep runs on wall time: keep it out
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    m = _REFS.search(done.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--high", type=int, default=25, help="rounds of the longer invocation")
    ap.add_argument("--low", type=int, default=5, help="rounds of the shorter invocation")
    ap.add_argument("--repeat", type=int, default=1, help="measurements (after one warm-up)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    # warm-up: compiles whatever .pyc is stale, so neither measured run pays for it
    subprocess.run(
        [sys.executable, "-m", "benchmarks.lockstep", "--streams", "10", "--rounds", "1"],
        capture_output=True,
        check=True,
    )
    tokens = (a.high - a.low) * a.streams
    per_token = []
    for _ in range(a.repeat):
        hi, lo = instructions(a.streams, a.high), instructions(a.streams, a.low)
        per_token.append(round((hi - lo) / tokens))
    result = {
        "bench": "instructions",
        "streams": a.streams,
        "rounds": [a.high, a.low],
        "instructions_per_token": per_token,
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    line = json.dumps(result)
    print(line)
    if a.out is not None:
        a.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
