"""Runs the matrix for real: one :class:`~unbroken.scenarios.catalog.RunSpec` after the
other, each driven by :func:`~unbroken.scenarios.run.run_one`.

The runner is generic; what a scenario streams, how its network fails and what must
hold afterwards is its case's (:mod:`unbroken.scenarios.cases`). The concerns live in
their own modules: :mod:`.run` (drive one spec), :mod:`.faults` (play the condition
through the chaos toolkit), :mod:`.assess` (the generic checks, then the case's),
:mod:`.artefacts` (logs, traces and files of a failed run). The names below stay
importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .answers import REPORT_SCHEMA
from .catalog import CONDITIONS, RunSpec
from .context import Baseline
from .run import answers_for, clear_baselines, layout, memory_guard, pace, run_one
from .run_result import RunResult
from .sequence import FRAME_CAP
from .sequence import Episode as _Episode

# ------------------------------------------------------------------ the matrix
ProgressHook = Callable[[RunSpec, RunResult | None], None]


async def run_matrix(
    specs: Sequence[RunSpec],
    *,
    out_dir: Path | None = None,
    keep_artefacts: bool = False,
    on_progress: ProgressHook | None = None,
    isolate_logs: bool = True,
    stop: Callable[[], bool] | None = None,
) -> tuple[list[RunResult], list[tuple[float, float, float]], float]:
    """Run ``specs`` one after the other (timings are honest only alone). Returns the
    results, the memory timeline and the wall seconds. ``on_progress(spec, None)`` is
    called before a run and ``on_progress(spec, result)`` after it; ``stop()`` is asked
    before each run (true: stop there)."""
    origin = time.monotonic()
    memory: list[tuple[float, float, float]] = []
    results: list[RunResult] = []
    artefacts = out_dir / "artefacts" if out_dir is not None else None
    for spec in specs:
        if stop is not None and stop():
            break
        if on_progress is not None:
            on_progress(spec, None)
        result = await run_one(
            spec,
            artefacts=artefacts,
            keep_artefacts=keep_artefacts,
            isolate_logs=isolate_logs,
            clock_origin=origin,
            sampler_sink=memory,
        )
        results.append(result)
        if on_progress is not None:
            on_progress(spec, result)
    return results, _thin(memory, 4000), time.monotonic() - origin


def _thin(samples: list[tuple[float, float, float]], n: int) -> list[tuple[float, float, float]]:
    if len(samples) <= n:
        return samples
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)]


__all__ = [
    "CONDITIONS",
    "FRAME_CAP",
    "REPORT_SCHEMA",
    "Baseline",
    "_Episode",
    "answers_for",
    "clear_baselines",
    "layout",
    "memory_guard",
    "pace",
    "run_matrix",
    "run_one",
]
