"""Where a paced stream's server RSS goes (issue 21): the concurrency benchmark's
load (N paced streams, one per connection) against ``unbroken serve
benchmarks.paced:app``, with the server dumping its state at two points: idle
before the first connection, and at the end of the measured window.

``python -m benchmarks.rss_breakdown --at 1000`` prints and writes
``results/rss_breakdown.json``: RSS idle and at the end (KB per stream), glibc's heap
(``mallinfo2``), the garbage-collected objects per stream by type (with their
``sys.getsizeof``), and with ``--trace FRAMES`` the ``tracemalloc`` lines that grew
most, per stream (tracing slows the server several times over: use a smaller N, as
the per-stream figures are what it is for). With ``RSS_BREAKDOWN_ATTRS=1`` the dumps
also count the containers and bound methods that objects hold, by ``Class.attribute``
(``attrs`` in the server's dump files).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

DUMPS = Path(os.environ.get("RSS_BREAKDOWN_DIR", "/tmp/unbroken-rss-breakdown"))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_mb() -> dict[str, float]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
    except (OSError, AttributeError):  # not glibc
        return {}
    return {
        "heap_mb": round(mi.arena / 2**20, 2),
        "heap_used_mb": round(mi.uordblks / 2**20, 2),
        "heap_free_mb": round(mi.fordblks / 2**20, 2),
        "mmapped_mb": round(mi.hblkhd / 2**20, 2),
    }


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def _serve(argv: list[str]) -> None:
    """The server role: ``unbroken serve`` with a SIGUSR1 handler that dumps."""
    frames = int(os.environ.get("RSS_BREAKDOWN_TRACE", "0"))
    if frames:
        tracemalloc.start(frames)
    count = [0]

    def dump(*_: Any) -> None:
        gc.collect()
        n = count[0]
        count[0] += 1
        # read first: the walk below allocates
        rss_mb, blocks, heap = _vm_rss_mb(), sys.getallocatedblocks(), _malloc_mb()
        types: collections.Counter[str] = collections.Counter()
        sizes: collections.Counter[str] = collections.Counter()
        for o in gc.get_objects():
            kind = type(o).__qualname__
            if kind in ("coroutine", "generator"):
                kind = f"{kind} {o.__qualname__}"
            elif kind == "method":
                kind = f"method {getattr(o.__func__, '__qualname__', '?')}"
            types[kind] += 1
            with contextlib.suppress(Exception):
                sizes[kind] += sys.getsizeof(o)
        attrs: collections.Counter[str] = collections.Counter()
        if os.environ.get("RSS_BREAKDOWN_ATTRS"):
            for o in gc.get_objects():
                cls = type(o)
                names = list(getattr(o, "__dict__", {}) or ())
                for klass in cls.__mro__:
                    names += [n for n in klass.__dict__.get("__slots__", ()) if isinstance(n, str)]
                for name in names:
                    v = getattr(o, name, None)
                    if type(v) in (list, dict, set, bytearray) or type(v).__name__ in (
                        "array",
                        "deque",
                        "method",
                    ):
                        attrs[f"{cls.__qualname__}.{name} {type(v).__name__}"] += 1
        out = {
            "rss_mb": rss_mb,
            "blocks": blocks,
            "types": types,
            "sizes": sizes,
            "attrs": attrs,
            **heap,
        }
        if frames:
            tracemalloc.take_snapshot().dump(str(DUMPS / f"snap{n}.pickle"))
        (DUMPS / f"dump{n}.json").write_text(json.dumps(out))

    signal.signal(signal.SIGUSR1, dump)
    from unbroken.__main__ import main  # the console script: serve's lean path

    sys.argv = ["unbroken", "serve", *argv]
    main()


class _Server:
    """A psutil.Process that dumps the server's state when the benchmark reads RSS."""

    def __init__(self, proc: Any) -> None:
        self.p = proc
        self.pid = proc.pid
        self.n = 0
        self.end: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.p, name)

    def dump(self) -> dict[str, Any]:
        path = DUMPS / f"dump{self.n}.json"
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                out: dict[str, Any] = json.loads(path.read_text())
                self.n += 1
                return out
            time.sleep(0.05)
        raise TimeoutError("the server did not dump its state")

    def memory_info(self) -> Any:
        self.end = self.dump()
        return self.p.memory_info()


def per_stream(a: dict[str, Any], b: dict[str, Any], n: int, top: int) -> list[dict[str, Any]]:
    rows = []
    for kind in set(a["types"]) | set(b["types"]):
        count = (b["types"].get(kind, 0) - a["types"].get(kind, 0)) / n
        size = (b["sizes"].get(kind, 0) - a["sizes"].get(kind, 0)) / n
        rows.append({"type": kind, "per_stream": round(count, 2), "bytes": round(size)})
    rows.sort(key=lambda r: -r["bytes"])
    return rows[:top]


def traced_top(n: int, top: int) -> list[dict[str, Any]]:
    s0 = tracemalloc.Snapshot.load(str(DUMPS / "snap0.pickle"))
    s1 = tracemalloc.Snapshot.load(str(DUMPS / "snap1.pickle"))
    rows = []
    for stat in s1.compare_to(s0, "lineno")[:top]:
        frame = stat.traceback[0]
        rows.append(
            {
                "line": f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}",
                "bytes": round(stat.size_diff / n),
                "objects": round(stat.count_diff / n, 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", type=int, default=1000, help="paced streams, one per connection")
    ap.add_argument("--duration", type=float, default=8.0, help="the measured window, s")
    ap.add_argument("--trace", type=int, default=0, metavar="FRAMES", help="tracemalloc depth")
    ap.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        _serve(a.serve)  # importing no more than unbroken serve does
        return
    import psutil

    from benchmarks.common import PYTHON, RESULTS, ROOT, free_port, meta, wait_http
    from benchmarks.concurrency import measure

    DUMPS.mkdir(parents=True, exist_ok=True)
    for old in DUMPS.iterdir():
        old.unlink()
    port = free_port()
    cmd = [PYTHON, "-m", "benchmarks.rss_breakdown", "--serve", "benchmarks.paced:app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--max-loop-lag", "30"]
    env = dict(os.environ, RSS_BREAKDOWN_TRACE=str(a.trace))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_http(port, 180)
        server = _Server(psutil.Process(proc.pid))
        time.sleep(0.5)
        idle = server.dump()
        row = measure("unbroken", port, server, a.at, a.at, a.duration)
        end = server.end
    finally:
        proc.terminate()
        proc.wait(30)
    n = a.at
    result = meta()
    result.update(
        benchmark="rss_breakdown",
        streams=n,
        load_average=[round(x, 2) for x in os.getloadavg()],
        run={k: row[k] for k in ("delivered_fraction", "p99_ms", "tokens_in_window")},
        idle={k: v for k, v in idle.items() if k not in ("types", "sizes")},
        end={k: v for k, v in end.items() if k not in ("types", "sizes")},
        rss_kb_per_stream=round((end["rss_mb"] - idle["rss_mb"]) * 1024 / n, 1),
        heap_kb_per_stream=round((end.get("heap_mb", 0) - idle.get("heap_mb", 0)) * 1024 / n, 1),
        blocks_per_stream=round((end["blocks"] - idle["blocks"]) / n, 1),
        objects_per_stream=per_stream(idle, end, n, 40),
    )
    if a.trace:
        result["traced_top"] = traced_top(n, 30)
    out = RESULTS / "rss_breakdown.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("objects_per_stream",)}, indent=1)
    )
    for r in result["objects_per_stream"][:25]:
        print(f"{r['per_stream']:7.2f} {r['bytes']:6d} B  {r['type']}")


if __name__ == "__main__":
    main()
