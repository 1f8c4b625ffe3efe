"""What a scenario is to the runner: a :class:`Case`, one per module in this package.

The generic runner (:mod:`..run`, :mod:`..faults`, :mod:`..assess`) drives every run the
same way: it opens the clients, starts the case's answers, plays the spec's network
condition, waits for the streams, checks what every run must show. It asks the case
at each point where scenarios differ; the defaults below are what a simple case wants
(one text answer, one client, the condition played at the timing point), so such a case
only names its id and its checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, Final, Literal

from ...chaos import GeneratedAnswer
from ...protocol.backoff import BackoffPolicy
from ..answers import AnswerShape, answer
from ..context import RunState
from ..faults import timed_play
from ..run_result import Check, RunResult
from ..spec import FAULTS, SEED_CONDITIONS, SIZES, TIMINGS, FaultMode, RunSpec, scenario_order

Row = tuple[str, str, str, FaultMode, str]
"""One run of a matrix, as the case's tables write it: (size, timing, condition, fault,
variant)."""

#: The order faults and timings are rotated in (the quick tier).
FAULT_ORDER: Final[tuple[FaultMode, ...]] = ("rst", "fin", "blackhole")
TIMING_ORDER: Final[tuple[str, ...]] = ("mid", "early", "late", "final", "immediate")
#: The full tier's conditions crossed with everything: the seed's five and throttling.
FULL_CONDITIONS: Final[tuple[str, ...]] = (*SEED_CONDITIONS, "throttled")
#: Every fault mode, in the catalog's order (fin, rst, blackhole).
FAULT_MODES: Final[tuple[FaultMode, ...]] = tuple(f.name for f in FAULTS.values())


def cycle(items: Sequence[str], i: int) -> str:
    """``items[i]``, going round."""
    return items[i % len(items)]


class Case:
    """One scenario's answers, pacing, faults and checks. Subclass it in ``tcN.py``,
    set :attr:`id`, override what differs, and name the module in ``cases/__init__``."""

    id: ClassVar[str]
    """The catalog's scenario id (``TC1``)."""
    shape: ClassVar[AnswerShape] = "text"
    """What the one answer of :meth:`answers` looks like by default."""
    baseline_as: ClassVar[str | None] = None
    """Share the fault-free baseline of this scenario (same answers, same clients)."""
    baseline_runs: ClassVar[int] = 2
    """Fault-free runs the baseline is the best of (2: a conservative yardstick for the
    delay and the CPU overhead of a short answer). A case whose answer is paced over many
    seconds and whose checks do not read the baseline takes 1: the pace is its time."""
    checks_baseline: ClassVar[bool] = False
    """Whether a check compares the run with a baseline figure (TC1: total time <=
    baseline + 5 s). Its baseline stays the best of :attr:`baseline_runs` where
    fault-free runs are economised (:data:`unbroken.scenarios.run.max_baseline_runs`
    caps the others): one run would loosen the bound by the run-to-run spread."""
    reads_baseline: ClassVar[bool] = True
    """Whether the case's fault plan or checks read the baseline. A case that does not
    gets none where fault-free runs are economised (the project's tests:
    :data:`unbroken.scenarios.run.max_baseline_runs`); its metrics then lack the
    baseline's figures."""
    open_timeout: ClassVar[float] = 1.0
    """The clients' handshake timeout (s)."""
    tick: ClassVar[float] = 0.01
    """How often the paced agent writes (s)."""
    extra_budget: ClassVar[float] = 0.0
    """Seconds added to the time the streams may take before the run is stopped."""
    plan_grace: ClassVar[float] = 0.0
    """Seconds the fault plan may still run once the streams are done (0: cancelled)."""

    default_size: ClassVar[str] = "small"
    """The size class of a run that names none (the ``run_scenario`` fixture)."""
    default_timing: ClassVar[str] = "mid"
    """The timing of a run that names none (the ``run_scenario`` fixture)."""
    sized: ClassVar[bool] = True
    """Its answers' size follows the spec's size class (``--size`` selects its runs)."""
    foreign_app: ClassVar[str | None] = (
        "its fault plan or checks need the built-in test server (not your service)"
    )
    """Why the case does not run against your own service (``chaos run --app/--url``,
    :func:`~unbroken.scenarios.user_app.run_user_spec`), shown as the skip reason; None:
    its faults are all on the network path (the fault proxy), so it runs with your
    agents as its answers, judged by the digest chain against a fault-free run (its own
    checks, which know its generated answers, are left out)."""

    # ---- its runs in the tiers' matrices (the catalog collects them)
    quick_order: ClassVar[float | None] = None
    """Where :meth:`quick_rows` stand among the cases' (None: the scenario's number)."""
    quick_sample: ClassVar[tuple[Row, ...]] = ()
    """The quick tier's sample of larger answers and other conditions (after every
    case's :meth:`quick_rows`)."""
    quick_kernel_sample: ClassVar[tuple[Row, ...]] = ()
    """The quick tier's kernel-level runs (root; skipped elsewhere), last."""
    full_kernel_sample: ClassVar[tuple[Row, ...]] = ()
    """The full tier's kernel-level runs, after every case's :meth:`full_rows`."""
    rotation: ClassVar[int | None] = None
    """The offset of the default quick rows' timing and fault rotation (None: the
    scenario's number - 1)."""

    @property
    def number(self) -> int:
        """The scenario's number (``TC3``: 3)."""
        return scenario_order(self.id)

    def spec(self, row: Row, profile: str = "quick") -> RunSpec:
        """The run of ``row`` in the tier ``profile``."""
        size, timing, condition, fault, variant = row
        return RunSpec(self.id, size, timing, condition, fault, variant, profile=profile)

    def quick_rows(self) -> list[RunSpec]:
        """The quick tier's runs of this case under the seed's five conditions: small
        answers, timings and faults rotated so each appears."""
        n = self.number - 1 if self.rotation is None else self.rotation
        return [
            self.spec(("small", cycle(TIMING_ORDER, i + n), cond, FAULT_ORDER[(i + n) % 3], ""))
            for i, cond in enumerate(SEED_CONDITIONS)
        ]

    #: the full tier adds receive-only runs with extra-large answers (they outgrow the
    #: flow window), one per fault
    full_receive_only: ClassVar[bool] = False
    #: the full tier adds one long silent outage, cut with this fault
    full_long_outage: ClassVar[FaultMode | None] = None

    def full_rows(self) -> list[RunSpec]:
        """The full tier's runs: every size x timing x fault, the conditions rotated so
        each meets each fault; then the extras the class asks for."""
        rows = [
            self.spec((size, timing, cycle(FULL_CONDITIONS, a + b + c), fault, ""), "full")
            for a, size in enumerate(SIZES)
            for b, timing in enumerate(TIMINGS)
            for c, fault in enumerate(FAULT_MODES)
        ]
        if self.full_receive_only:
            rows += [
                self.spec(("xlarge", "mid", "receive_only", f, ""), "full") for f in FAULT_MODES
            ]
        if self.full_long_outage is not None:
            rows.append(
                self.spec(("medium", "mid", "long_outage", self.full_long_outage, ""), "full")
            )
        return rows

    # ---- what is streamed, how
    def answers(self, spec: RunSpec) -> list[GeneratedAnswer]:
        """The answers of a run, one per stream (``layout``'s clients x streams)."""
        return [answer(self.shape, spec.size_bytes, 1 + spec.repeat)]

    def layout(self, spec: RunSpec) -> tuple[int, int]:
        """(clients, streams per client)."""
        return 1, 1

    def pace(self, spec: RunSpec) -> float:
        """Seconds the agent takes to write each answer."""
        return SIZES[spec.size].seconds * spec.profile_info.pace

    def policy(self, spec: RunSpec) -> BackoffPolicy | None:
        """The clients' reconnect policy; None: the runner's (set by the condition)."""
        return None

    def gives_up(self, spec: RunSpec) -> bool:
        """The client must give up (``ReconnectExhausted``); a new client then resumes
        the stream from the cursor it saved, and the run is not timed as a recovery."""
        return False

    def disruption(self, spec: RunSpec) -> Literal["recovers", "gives_up", "none"]:
        """What the run's fault does to the client's connections: ``recovers`` (they
        break and the same client comes back: the default), ``gives_up`` (they break
        and the client ends, as :meth:`gives_up` or a refusal says), ``none`` (no
        connection is meant to break: a token refresh, a policy change, a burst of
        load, a slow link)."""
        return "gives_up" if self.gives_up(spec) else "recovers"

    def baseline_family(self, spec: RunSpec) -> str:
        """Runs of the same family (and answer size, repeat, tier, clients) share one
        fault-free baseline: :attr:`baseline_as`, else the scenario. A case whose
        variants stream differently before the fault (another wire version) names one
        family per way."""
        return self.baseline_as or spec.scenario

    def expected_closes(self, spec: RunSpec) -> frozenset[int]:
        """Close codes the run's fault provokes on purpose (a refusal the case checks
        itself, e.g. 4005 when a resume meets a version the client does not speak): the
        log scan lets them pass in its runs. None by default."""
        return frozenset()

    def skip_reason(self, spec: RunSpec) -> str | None:
        """Why the run ``spec`` cannot happen on this machine (e.g. no browser): it is
        then reported as skipped with this reason, never failed. None: it runs."""
        return None

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        """Drive the clients of a run (the fault-free baselines' too): open them, start
        the streams, play the fault plan, wait for the streams. By default the runner's
        Python clients (``python_clients(run)``, which asks the hooks below). A case with
        another client (a browser page) drives it here and reports each stream it
        consumed as a :class:`~unbroken.scenarios.context.ForeignStream` in
        ``run.foreign``, its connection events in ``run.watches``, the fault in
        ``run.mark``: the generic checks then judge it too."""
        await python_clients(run)

    # ---- the faults
    def early_faults(self, run: RunState) -> Coroutine[Any, Any, None] | None:
        """A fault plan armed before any stream starts (the connections are open, the
        welcome through), instead of :meth:`plan_faults`; None: none."""
        return None

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        """The fault plan, started once the streams are running (``total_events``: over
        all streams). By default the spec's condition at its timing point."""
        await timed_play(run, total_events)

    async def at_cut(self, run: RunState) -> None:
        """Called right after the server's snapshot at the first fault (the server's
        loop still serving the streams)."""

    # ---- the checks
    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        """The case's own checks (its "must hold" list), after the generic ones.
        ``run.baseline`` and ``run.episodes`` are filled; ``result.metrics`` too."""
        return []

    def timeout_ok(self, run: RunState, checks: list[Check]) -> bool | None:
        """The run's verdict for the seed's "timeout handling" target, from the case's
        own ``checks``; None: judged by the runner (a blackhole found in time)."""
        return None
