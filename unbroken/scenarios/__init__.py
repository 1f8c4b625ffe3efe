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
