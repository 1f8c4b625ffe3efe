"""Instructions per token on the server's path: cachegrind over ``benchmarks.lockstep``.

A figure the machine's load does not move (issue 21): ``valgrind --tool=cachegrind``
counts the instructions of two lockstep invocations that differ only in their round
count (``--high`` and ``--low`` tokens per stream); their difference divided by the
extra tokens is the cost of one token, with imports and start-up cancelled out. A
warm-up invocation runs first so that compiling ``.pyc`` files (after a checkout or a
rebase touched a module) is not counted in one of the two.

    python -m benchmarks.instructions            # 200 streams, 25 - 5 rounds
    python -m benchmarks.instructions --repeat 2 # two measurements (they agree to ~0.1 %)
    python -m benchmarks.instructions --wire     # real sockets: unbroken, bare, their ratio

``--wire`` counts ``benchmarks.wirestep`` instead: the real servers over loopback
WebSockets (unbroken's uvicorn stack and WebSocket layer; a plain ``websockets``
server), the same lockstep agents, the client connections in a child process that
valgrind does not follow. Its ``ratio`` (unbroken's instructions per token over
bare's) is the server-CPU ratio of issue 21 without the machine's speed or load in it.
User-space instructions only: the kernel's work for the socket write (one per token
in both servers) is not counted, so the ratio of CPU time is nearer 1 than this.

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
from typing import Any

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(streams: int, rounds: int, server: str | None = None) -> int:
    """Instructions of one lockstep invocation under cachegrind: ``benchmarks.lockstep``,
    or ``benchmarks.wirestep --server SERVER`` when ``server`` is given."""
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
    ]
    if server is None:
        cmd += ["benchmarks.lockstep", "--reps", "1"]
        cmd += ["--heartbeat", "1000"]  # the heartbeat's sweep runs on wall time: keep it out
    else:
        cmd += ["benchmarks.wirestep", "--server", server]
    cmd += ["--streams", str(streams), "--rounds", str(rounds)]
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
    ap.add_argument("--wire", action="store_true", help="real sockets, unbroken and bare")
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
    if a.wire:
        for server in ("bare", "unbroken"):
            warm = ["--server", server, "--streams", "10", "--rounds", "1"]
            subprocess.run(
                [sys.executable, "-m", "benchmarks.wirestep", *warm],
                capture_output=True,
                check=True,
            )
    tokens: int = (a.high - a.low) * a.streams

    def per_token(server: str | None) -> int:
        hi = instructions(a.streams, a.high, server)
        lo = instructions(a.streams, a.low, server)
        return round((hi - lo) / tokens)

    result: dict[str, Any] = {
        "bench": "instructions_wire" if a.wire else "instructions",
        "streams": a.streams,
        "rounds": [a.high, a.low],
    }
    if a.wire:
        ours = [per_token("unbroken") for _ in range(a.repeat)]
        bare = [per_token("bare") for _ in range(a.repeat)]
        result["unbroken_per_token"] = ours
        result["bare_per_token"] = bare
        result["ratio"] = round(min(ours) / min(bare), 3)
    else:
        result["instructions_per_token"] = [per_token(None) for _ in range(a.repeat)]
    result["at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    line = json.dumps(result)
    print(line)
    if a.out is not None:
        a.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
