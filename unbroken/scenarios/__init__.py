"""The reliability suite: the seed's scenarios as data, a runner, a report.

* :mod:`.catalog`: the fifteen scenarios (covered: those with a case; 1-9 run, 10-15
  listed as not yet covered), the seed's targets, the quick and full matrices collected
  from the cases;
* :mod:`.cases`: one module per scenario (``cases/tc3.py``): its answers, pacing,
  faults, checks and its runs in the matrices;
* :mod:`.spec`: one run of the matrix (:class:`RunSpec`) and the axes it is drawn from;
* :mod:`.harness`: the pieces of a chaos run (server thread, wire tap, answering agent,
  stream recorder, log capture), reusable in your own tests;
* :mod:`.runner`: one run of the matrix, measured and checked, and the matrix;
* :mod:`.logscan`: what a run's logs must never hold (protocol-error closes, exceptions,
  ERROR lines);
* :mod:`.report`: ``report.html`` with charts and the regression check;
* :mod:`.pytest_plugin`: pytest fixtures (``-p unbroken.scenarios.pytest_plugin``);
* ``unbroken chaos run`` / ``unbroken chaos report`` (:mod:`.cli`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import (
        CONDITIONS,
        FAULTS,
        SCENARIOS,
        SEED_TARGETS,
        SIZES,
        TIMINGS,
        RunSpec,
        Scenario,
        full_matrix,
        quick_matrix,
        select,
    )
    from .harness import ChaosHarness, StreamRecorder, WireTap
    from .results import Results, RunResult
    from .runner import run_matrix, run_one

#: where each public name lives: the package imports it on first use, so the
#: ``unbroken`` command (``serve`` above all) does not load the catalog at start-up
_HOME = {
    **dict.fromkeys(
        (
            "CONDITIONS",
            "FAULTS",
            "SCENARIOS",
            "SEED_TARGETS",
            "SIZES",
            "TIMINGS",
            "RunSpec",
            "Scenario",
            "full_matrix",
            "quick_matrix",
            "select",
        ),
        "catalog",
    ),
    **dict.fromkeys(("ChaosHarness", "StreamRecorder", "WireTap"), "harness"),
    **dict.fromkeys(("Results", "RunResult"), "results"),
    **dict.fromkeys(("run_matrix", "run_one"), "runner"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CONDITIONS",
    "FAULTS",
    "SCENARIOS",
    "SEED_TARGETS",
    "SIZES",
    "TIMINGS",
    "ChaosHarness",
    "Results",
    "RunResult",
    "RunSpec",
    "Scenario",
    "StreamRecorder",
    "WireTap",
    "full_matrix",
    "quick_matrix",
    "run_matrix",
    "run_one",
    "select",
]
