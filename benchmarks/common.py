"""Helpers shared by the benchmark modules run from ``python -m benchmarks``.

Imported by the apps the benchmarks serve (:func:`bench_app`), so importing it loads
nothing a server process would not (httpx, psutil and statistics are imported where
used): the servers' RSS is what is measured."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

    from unbroken.server import Unbroken
    from unbroken.store.base import StreamLog

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """p50/p95/p99/max/mean of a sample, rounded."""
    import statistics

    if not values:
        return {"n": 0}
    s = sorted(values)
    n = len(s)

    def at(q: float) -> float:
        return round(s[min(n - 1, int(q * n))], digits)

    return {
        "n": n,
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(s[-1], digits),
        "mean": round(statistics.fmean(s), digits),
    }


def meta() -> dict[str, Any]:
    import unbroken

    return {
        "unbroken": unbroken.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def finish(result: dict[str, Any]) -> dict[str, Any]:
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def progress(done: int, total: int) -> None:
    """Tell the ``python -m benchmarks`` parent how far this benchmark is."""
    print(f"@progress {done} {total}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(port: int, limit: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
            return
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} not up after {limit} s")


def wait_tcp(port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {limit} s")


@contextlib.contextmanager
def unbroken_server(target: str, *extra: str) -> Iterator[tuple[int, psutil.Process]]:
    """``unbroken serve TARGET`` in a child process on a free loopback port."""
    port = free_port()
    cmd = [str(Path(PYTHON).parent / "unbroken"), "serve", target, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning", "--health-detail", *extra]
    import psutil

    with _child(cmd) as proc:
        wait_http(port)
        yield port, psutil.Process(proc.pid)


@contextlib.contextmanager
def module_server(module: str, *args: str) -> Iterator[tuple[int, psutil.Process]]:
    """``python -m MODULE --port P ARGS`` (a bare server) on a free loopback port."""
    import psutil

    port = free_port()
    with _child([PYTHON, "-m", module, "--port", str(port), *args]) as proc:
        wait_tcp(port)
        yield port, psutil.Process(proc.pid)


@contextlib.contextmanager
def _child(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def rss_mb(p: psutil.Process) -> float:
    return round(p.memory_info().rss / 2**20, 1)


def bench_app(store: StreamLog | None = None, **overrides: Any) -> Unbroken:
    """The benchmarks' unbroken app: anonymous, starts never refused for rate (10⁶/s,
    a burst of 10⁶), 100,000 streams per connection. ``overrides`` replace or add
    :class:`~unbroken.server.Unbroken` options (``heartbeat``, ``request_rate``, ...)."""
    from unbroken.server import Unbroken

    options: dict[str, Any] = {
        "allow_anonymous": True,
        "start_rate": 1e6,
        "start_burst": 1_000_000,
        "max_streams_per_connection": 100_000,
    }
    options.update(overrides)
    return Unbroken(store, **options)


def figure(name: str, value: Any, aim: Any, met: bool | None, unit: str = "") -> dict[str, Any]:
    """One row of a benchmark's ``figures`` (what ``python -m benchmarks`` tabulates)."""
    return {"name": name, "value": value, "aim": aim, "met": met, "unit": unit}


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported only to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
