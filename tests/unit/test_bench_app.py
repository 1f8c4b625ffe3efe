"""The benchmarks' one app builder (``benchmarks.common.bench_app``): its settings, and
that importing it keeps a served benchmark app's imports (its RSS is measured)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.common import ROOT, bench_app
from unbroken.store.memory import MemoryStore


def test_bench_app_is_anonymous_unthrottled_and_takes_overrides() -> None:
    store = MemoryStore()
    app = bench_app(store)
    assert app.store is store
    assert app.allow_anonymous
    assert (app.config.start_rate, app.config.start_burst) == (1e6, 1_000_000)
    assert app.config.limits.max_streams == 100_000
    tuned = bench_app(heartbeat=1000.0, request_rate=1e9, max_streams_per_connection=7)
    assert tuned.config.heartbeat == 1000.0
    assert tuned.config.request_rate == 1e9
    assert tuned.config.limits.max_streams == 7  # an override wins over the default


def test_a_served_benchmark_app_loads_no_client_side_helpers() -> None:
    probe = (
        "import sys, benchmarks.paced\n"
        "print(*(m for m in ('httpx', 'psutil', 'rich', 'statistics') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
