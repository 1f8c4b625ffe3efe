"""The seed's fifteen scenarios, its targets and its matrix, as data.

What the report and the pytest tier know about a scenario comes from here: what answer
it streams, how the network fails, what must hold afterwards, and which runs of it the
tiers make. How it is played and checked is its case, one module per scenario in
:mod:`unbroken.scenarios.cases` (``cases/tc3.py``: its answers, pacing, faults and
checks), which the generic runner finds by the scenario's id. A scenario is covered when
it has a case (:data:`~unbroken.scenarios.cases.CASES`); the others need features of a
later wave and are listed as *not yet covered* with the reason (the report shows them
so, never as passed). Each case also says which runs of it the tiers make
(:meth:`~unbroken.scenarios.cases.Case.quick_rows`, ``quick_sample``, ...): this module
collects them. Covering a scenario is its ``cases/tcN.py`` and its name on the import
line of ``cases/__init__.py``; nothing here changes.

The matrix axes are the seed's: sizes (small 1-10 KB ... extra large 1-10 MB), timings
(immediate < 100 ms, early 10-25 %, mid 40-60 %, late 75-90 %, final 95 %+), network
conditions (the seed's five: clean disconnect, gradual degradation, intermittent drops,
complete outage, asymmetric (send-only) failure; and three more: receive-only failure, a
long silent outage, bandwidth throttling; and three made by the kernel in network
namespaces when run as root: random packet loss, a receive-only failure, a silent path)
and fault modes (``fin``, ``rst``,
``blackhole``). :func:`quick_matrix` covers every scenario under each of the seed's five
conditions with small answers, plus a sampled few larger answers and the other three
conditions; :func:`full_matrix` crosses the axes (see ``docs/reliability.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Final, Literal

from ..errors import ConfigError
from .cases import CASES, Case
from .cases.base import Row
from .spec import (
    CONDITIONS,
    FAULTS,
    KERNEL_CONDITIONS,
    PATH_DOWN_CONDITIONS,
    PROFILES,
    SEED_CONDITIONS,
    SIZES,
    TC8_CUTS,
    TIMINGS,
    Condition,
    Fault,
    FaultMode,
    Profile,
    RunSpec,
    SizeClass,
    Timing,
    scenario_order,
)

# ------------------------------------------------------------------ scenarios
AnswerKind = Literal["text", "json", "multipart", "mixed", "none"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One case of the seed's test plan."""

    id: str
    number: int
    title: str
    seed_scenario: str
    seed_validation: tuple[str, ...]
    answer: AnswerKind
    fault_plan: str
    must_hold: tuple[str, ...]
    not_covered_because: str = ""
    variants: tuple[str, ...] = ()

    @property
    def covered(self) -> bool:
        """Whether it runs: it has a case (:data:`~unbroken.scenarios.cases.CASES`)."""
        return self.id in CASES

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        out = asdict(self)
        out["covered"] = self.covered
        return out


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario(
        "TC1",
        1,
        "Disconnection during text streaming",
        "Agent streaming long-form text response when network drops",
        (
            "Partial response preserved in buffer",
            "Response resumes from correct position on reconnection",
            "No text duplication or corruption",
            "Total response time < baseline + 5 seconds",
        ),
        "text",
        "one text answer; the condition hits at the timing point",
        (
            "the stream log holds every event 1..N, chained (verifier on the server log)",
            "every resume asks for the seq after the last one verified, and the replay "
            "starts exactly there (sequence trace)",
            "every event is yielded once, in order, unaltered; the end digest equals a "
            "fault-free run's (verifier on the client's events)",
            "total time <= fault-free baseline + 5 s",
        ),
    ),
    Scenario(
        "TC2",
        2,
        "Disconnection during JSON streaming",
        "Agent streaming structured JSON data when connection fails",
        (
            "JSON structure integrity maintained",
            "Partial objects properly handled",
            "Complete data delivered after reconnection",
            "Schema validation passes on final response",
        ),
        "json",
        "one JSON answer (a report schema: rows of objects) streamed as fragments cut "
        "anywhere, even inside strings; the condition hits at the timing point",
        (
            "the partial document held at the cut parses (best effort) to a value",
            "the final document equals the generated one and validates against its schema",
            "no part error; the end digest equals a fault-free run's",
        ),
    ),
    Scenario(
        "TC3",
        3,
        "Disconnection during multi-part delivery",
        "Agent delivering response with multiple components (text + data + visualizations)",
        (
            "Each component delivery tracked independently",
            "Missing components identified and re-sent",
            "Component ordering preserved",
            "No duplicate components delivered",
        ),
        "multipart",
        "text + JSON + Vega-Lite chart + CSV table + PNG image; the condition hits at the "
        "timing point",
        (
            "each part is tracked: at the cut the parts held are complete (with exactly "
            "the generated body), then at most one partial (a strict prefix of its body), "
            "then missing, in the generated order; every part partial or missing at the "
            "cut is complete and identical at the end",
            "parts arrive in the generated order, each started exactly once",
            "the end digest equals a fault-free run's",
        ),
    ),
    Scenario(
        "TC4",
        4,
        "Recovery with partial buffers preserved",
        "Network drop mid-stream with data in multiple buffers",
        (
            "All buffer states preserved during disconnection",
            "Buffer synchronization maintained on reconnection",
            "Message sequence numbers preserved",
            "No buffer overflow or underflow",
        ),
        "mixed",
        "six streams (text, JSON, multi-part, twice) on one connection, all mid-stream "
        "when the condition hits",
        (
            "the server's log of every stream is intact (seqs 1..N, chain, parts) at the "
            "cut and at the end (StateVerifier on the server log at both), and the log at "
            "the cut is a prefix of the final one (its head digest)",
            "each log holds exactly the expected events and bytes: no overflow, no underflow",
            "each stream resumes from its own last seq and ends with the expected digest",
        ),
    ),
    Scenario(
        "TC5",
        5,
        "Timeout and retry mechanisms",
        "Multiple failed reconnection attempts during active stream",
        (
            "Exponential backoff implemented correctly",
            "Maximum retry attempts respected",
            "Graceful degradation after timeout",
            "Clear error messages to client",
        ),
        "text",
        "after the condition drops the client, new connections are refused: longer than "
        "the client's budget (6 attempts) in the 'long' variant, 0.5 s in the 'short' one; "
        "in the 'silent' one they are accepted and hear nothing (a blackhole) longer than "
        "the client's deadline (2.5 s)",
        (
            "long: ReconnectExhausted after exactly max_attempts attempts, within the "
            "deadline, with a message saying the stream can be resumed from its cursor",
            "the delays used equal protocol.backoff.Backoff's with the same policy and "
            "random generator",
            "long: a new client resumes from the saved cursor once the network is back and "
            "ends with the digest of a fault-free run",
            "short: the same client recovers on its own, exactly",
            "silent: connection attempts are silently dropped (each runs into its handshake "
            "timeout): ReconnectExhausted at the deadline, never after it (+0.25 s of the "
            "loop's own lateness); a new client resumes from the cursor",
        ),
        variants=("long", "short", "silent"),
    ),
    Scenario(
        "TC6",
        6,
        "Rapid reconnection during stream start",
        "Disconnect within first 100ms of response streaming",
        ("Full response delivery with minimal delay",),
        "text",
        "the fault hits before 'started' reaches the client (the start is retried with "
        "the same request id) or right after it, within 100 ms of the start",
        (
            "the agent runs exactly once",
            "the whole answer arrives exactly (end digest of a fault-free run)",
            "the fault hit within 100 ms of the start",
        ),
        variants=("before_started", "after_started"),
    ),
    Scenario(
        "TC7",
        7,
        "Cascading connection failures",
        "Multiple connection drops in rapid succession",
        ("State consistency maintained across all failures",),
        "multipart",
        "the condition hits at the timing point, then each new connection is cut again "
        "right after it connects (three times) and once more after 2 KB",
        (
            "at least four drops happened",
            "after every drop the client resumed from its last verified seq",
            "the end digest equals a fault-free run's",
        ),
    ),
    Scenario(
        "TC8",
        8,
        "Large response stream interruption",
        "10MB+ response interrupted at various completion percentages",
        ("Efficient resume without full retransmission",),
        "text",
        "a 10.5 MB answer cut at 10, 25, 50, 75 or 95 %",
        (
            "bytes the server re-sent <= bytes that were in flight at the cut + one frame",
            "the end digest equals a fault-free run's",
        ),
    ),
    Scenario(
        "TC9",
        9,
        "Concurrent stream interruptions",
        "Multiple agents streaming responses simultaneously during network event",
        ("All streams handle interruption independently",),
        "mixed",
        "100 (quick) or 1,000 (full) streams over many connections, all hit by one network event",
        (
            "every stream completes exactly (its own digest)",
            "every connection recovers on its own: each resumes its own streams",
        ),
    ),
    Scenario(
        "TC10",
        10,
        "Authentication token expiry during stream",
        "JWT expires mid-stream requiring re-authentication",
        ("Seamless token refresh without losing stream state",),
        "text",
        "real EdDSA JWTs that live 2 s (JWTAuth) against a paced text answer of 7 s (quick) "
        "or 10 s (full), refreshed in-band; variant cut: the link is cut during a refresh "
        "with the fault mode; variant provider: the token provider fails once",
        (
            "refresh: at least three in-band refreshes, no reconnect, the answer exact",
            "cut: the client reconnects with a fresh token and resumes exact; refreshes go "
            "on in-band on the new connection",
            "provider: the provider is asked again after a backoff, the refresh goes "
            "through, no reconnect, the answer exact",
        ),
        variants=("refresh", "cut", "provider"),
    ),
    Scenario(
        "TC11",
        11,
        "Browser tab suspension/wake during stream",
        "Browser suspends WebSocket connection mid-stream",
        ("Stream resumes when tab becomes active",),
        "multipart",
        "a multi-part answer streamed to the JS client in a real chromium page (through "
        "the fault proxy); mid-answer the tab is frozen (Page Lifecycle over CDP), its "
        "renderer stopped (SIGSTOP, then SIGCONT), the browser taken offline, or the tab "
        "reloaded",
        (
            "the page's parts equal the generated answer and the end digest it verified "
            "equals the server log's; the server log verifies; the agent ran once",
            "freeze: the page saw freeze then resume, and the stream resumed after resume",
            "stop: the stopped renderer received the rest once continued",
            "offline: back online, the client reconnected at once (< 0.5 s)",
            "reload: the reloaded tab picked the same stream up from its saved cursor",
        ),
        not_covered_because="the browser (JavaScript) client (wave 2)",
        variants=("freeze", "stop", "offline", "reload"),
    ),
    Scenario(
        "TC12",
        12,
        "Network quality degradation",
        "Gradually decreasing network quality during stream",
        ("Adaptive quality adjustments without interruption",),
        "text",
        "the proxy's downstream link ramps from 1 MB/s to 20 KB/s with 2 s of latency, "
        "holds, and ramps back while one text answer streams",
        (
            "no connection is dropped or re-made (a slow link is not a dead one)",
            "the answer is exact",
            "the wire carries fewer bytes per payload byte while slow (full tier: at most "
            "85 % of fast); compression is not built",
        ),
    ),
    Scenario(
        "TC13",
        13,
        "Server-side resource exhaustion",
        "Server temporarily unable to continue stream due to load",
        ("Graceful degradation and retry with backoff",),
        "text",
        "the server's admission is set to C live runs and 2xC streams are offered in one "
        "burst (quick 2x4, full 2x16); the load is the fault",
        (
            "every admitted stream ends exact; in-flight streams are never shed",
            "every refused start is answered overloaded with retry_after_ms; the client's "
            "next try comes no sooner and ends exact",
            "the server never holds more than C runs; no connection drops",
        ),
    ),
    Scenario(
        "TC14",
        14,
        "Protocol upgrade mid-stream",
        "WebSocket protocol version change during active stream",
        ("Backwards compatibility maintained",),
        "text",
        "a text answer streamed over one protocol version; while it runs the server's "
        "versions change (a restart onto a new build: the next handshakes see them) and "
        "the condition hits at the timing point (a clean cut with the fault mode; the "
        "full tier adds the other conditions); 'upgrade': v1 only to "
        "v2 only, 'downgrade' (a rollback): v1+v2 to v1 only, 'refused': an old client "
        "pinned to v1 meets a server that dropped v1",
        (
            "upgrade, downgrade: the same client resumes on the other version (begun on "
            "v1, resumed on v2; or v2 then v1) and the answer is exact",
            "refused: the resume is closed 4005 and the client ends at once with "
            "UnsupportedVersion naming both sides' versions (not retried); what it "
            "received is a verified prefix; a new client resumes from the saved cursor on "
            "v2, exact",
            "the log and its digest chain do not depend on the wire version: the end "
            "digest equals a fault-free run's",
        ),
        variants=("upgrade", "downgrade", "refused"),
    ),
    Scenario(
        "TC15",
        15,
        "Cross-origin policy changes",
        "CORS policy changes affecting active connections",
        ("Existing streams unaffected by policy updates",),
        "text",
        "a text answer streamed to a client whose handshakes carry Origin A; mid-answer the "
        "origin policy is changed live (A dropped, B added); variant cut: the connection is "
        "then cut with the fault mode",
        (
            "the stream ends exact over the same connection: no drop, no reconnect",
            "after the change a handshake from A is refused (403), from B accepted",
            "cut: the resume from A is refused, the client raises a typed error at once (not "
            "retried), a client of origin B resumes from the saved cursor, exact",
        ),
        variants=("policy", "cut"),
    ),
)

SCENARIO_BY_ID: Final[dict[str, Scenario]] = {s.id: s for s in SCENARIOS}


def covered() -> tuple[str, ...]:
    """The ids of the covered scenarios (those with a case), in order."""
    return tuple(s.id for s in SCENARIOS if s.covered)


#: :func:`covered` when the package was imported.
COVERED: Final[tuple[str, ...]] = covered()


# ------------------------------------------------------------------ seed targets
@dataclass(frozen=True, slots=True)
class Target:
    """A number the seed asks for. ``op`` is ``<`` or ``>=`` against ``threshold``."""

    id: str
    label: str
    seed_text: str
    op: Literal["<", ">="]
    threshold: float
    unit: str
    measured_as: str
    informational: bool = False
    """Reported, but a miss fails a run only when asked (``--strict-targets``): a number
    the machine sets more than the code (CPU overhead on a shared box)."""

    def met(self, value: float) -> bool:
        """True when ``value`` meets the target."""
        return value < self.threshold if self.op == "<" else value >= self.threshold

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


SEED_TARGETS: Final[tuple[Target, ...]] = (
    Target(
        "reconnect",
        "Reconnection time",
        "< 2 seconds for < 1MB partial response",
        "<",
        2.0,
        "s",
        "p95 over runs with < 1 MB delivered at the cut: fault → client connected again, "
        "or path back → connected for a receive-only failure or a long silent outage "
        "(TC5 'long' and 'silent' excluded: they must not reconnect)",
    ),
    Target(
        "resume",
        "Stream resume time",
        "< 500ms from reconnection to resume",
        "<",
        0.5,
        "s",
        "p95: client connected again → first replayed event (or 'resumed' when nothing "
        "was left to replay)",
    ),
    Target(
        "recovery",
        "Complete recovery time",
        "< 5 seconds total (disconnect to completion); 95% of recoveries within 5 s",
        "<",
        5.0,
        "s",
        "p95: first fault (or path back, for a receive-only failure or a long silent "
        "outage) → last event of the answer (includes the agent still writing); "
        "throttled runs excluded (the link's rate sets their pace)",
    ),
    Target(
        "memory",
        "Memory overhead (buffered response data)",
        "< 50MB for buffered response data",
        "<",
        50.0,
        "MB",
        "peak bytes held by the stream log during a run (every event of every stream), "
        "max over runs",
    ),
    Target(
        "completion",
        "Stream completion rate",
        "99.95% across all scenarios",
        ">=",
        99.95,
        "%",
        "streams that ended complete and exact (after a resume from the cursor for TC5 "
        "'long' and 'silent') ÷ streams run",
    ),
    Target(
        "integrity",
        "Data integrity rate",
        "100% (zero corruption tolerance)",
        ">=",
        100.0,
        "%",
        "streams whose received events and end digest equal a fault-free run's, and "
        "whose server log verifies ÷ completed streams",
    ),
    Target(
        "recovery_rate",
        "Recovery success rate",
        "99.9% for network failures",
        ">=",
        99.9,
        "%",
        "runs in which the client recovered from every fault on its own ÷ runs meant to "
        "recover (all but TC5 'long' and 'silent')",
    ),
    Target(
        "timeouts",
        "Timeout handling",
        "100% proper timeout processing",
        ">=",
        100.0,
        "%",
        "TC5 runs with the right outcome (typed error after exactly the budget, or at "
        "the deadline and never past it, the configured schedule, resumable) plus "
        "blackholes found by the silence timeout within its limit + 0.35 s (time the "
        "client's own loop was busy not counted) plus receive-only failures that stalled "
        "a stream found before the direction came back ÷ such runs",
    ),
    Target(
        "cpu",
        "Recovery CPU overhead",
        "< 10% additional CPU load",
        "<",
        10.0,
        "%",
        "server thread CPU seconds of all fault runs ÷ the same runs without a fault, minus 1 "
        "(informational: a shared or busy machine sets it more than the code; "
        "--strict-targets makes a miss fail the run)",
        informational=True,
    ),
)

TARGET_BY_ID: Final[dict[str, Target]] = {t.id: t for t in SEED_TARGETS}


# ------------------------------------------------------------------ matrices
Sample = tuple[str, str, str, str, FaultMode, str]
"""(scenario, size, timing, condition, fault, variant)."""


def _cases() -> list[Case]:
    """The cases of the covered scenarios, by number."""
    stray = [c.id for c in CASES.values() if c.id not in SCENARIO_BY_ID]
    if stray:
        raise LookupError(f"cases without a Scenario record in SCENARIOS: {', '.join(stray)}")
    return sorted(CASES.values(), key=lambda c: c.number)


def _sample(rows: Callable[[Case], tuple[Row, ...]]) -> tuple[Sample, ...]:
    return tuple((c.id, *row) for c in _cases() for row in rows(c))


def quick_sample() -> tuple[Sample, ...]:
    """The quick tier's sample of larger answers and of the conditions beyond the seed's
    five: every case's ``quick_sample``, then its ``quick_kernel_sample``."""
    return _sample(lambda c: c.quick_sample) + _sample(lambda c: c.quick_kernel_sample)


def kernel_sample() -> tuple[Sample, ...]:
    """The full tier's kernel-level runs: every case's ``full_kernel_sample``."""
    return _sample(lambda c: c.full_kernel_sample)


#: The quick tier's sample (:func:`quick_sample`) of the cases imported with the package:
#: every size in several scenarios, each new condition at least once, one long silent
#: outage (30 s), and the run where a late ack once closed a finished stream's connection
#: (TC1 xlarge asymmetric blackhole).
QUICK_SAMPLE: Final[tuple[Sample, ...]] = quick_sample()
#: The full tier's kernel-level runs (:func:`kernel_sample`) of the cases imported with
#: the package: loss with small to large answers, the receive-only failure with answers
#: past the server's flow window (1 MiB), a silent path at several sizes, in every
#: scenario where the condition means something.
KERNEL_SAMPLE: Final[tuple[Sample, ...]] = kernel_sample()


def quick_matrix() -> list[RunSpec]:
    """Every covered scenario under each of the seed's five network conditions, small
    answers, faults and timings rotated so each appears in each scenario (each case's
    :meth:`~unbroken.scenarios.cases.Case.quick_rows`, in ``quick_order``); then the
    sample (:func:`quick_sample`): medium, large and extra-large answers, the
    receive-only failure, bandwidth throttling, one long silent outage, TC5's
    silent-drop variant and two kernel-level runs."""
    order = sorted(_cases(), key=lambda c: c.number if c.quick_order is None else c.quick_order)
    specs = [spec for case in order for spec in case.quick_rows()]
    for sid, size, timing, cond, fault, variant in quick_sample():
        specs.append(RunSpec(sid, size, timing, cond, fault, variant))
    return specs


def full_matrix() -> list[RunSpec]:
    """The crossed matrix: each case's
    :meth:`~unbroken.scenarios.cases.Case.full_rows`, then the kernel-level sample
    (:func:`kernel_sample`; see docs/reliability.md for its shape, ``len(full_matrix())``
    for its size). Conditions that hold the path down for a set time are sampled: a
    receive-only failure only stalls a stream whose unacked bytes fill the server's flow
    window (1 MiB), so it runs with answers larger than that; a long silent outage lasts
    30 s, so a few runs carry it."""
    specs = [spec for case in _cases() for spec in case.full_rows()]
    for sid, size, timing, cond, fault, variant in kernel_sample():
        specs.append(RunSpec(sid, size, timing, cond, fault, variant, profile="full"))
    return specs


def matrix(tier: Literal["quick", "full"]) -> list[RunSpec]:
    """:func:`quick_matrix` or :func:`full_matrix`."""
    return quick_matrix() if tier == "quick" else full_matrix()


def _names(values: Iterable[str] | None, known: Iterable[str], what: str) -> set[str] | None:
    if values is None:
        return None
    wanted: set[str] = set()
    known_set = set(known)
    for raw in values:
        for value in str(raw).split(","):
            v = value.strip()
            if not v:
                continue
            if what == "scenario" and v.isdigit():
                v = f"TC{v}"
            if what == "scenario":
                v = v.upper()
            if v not in known_set:
                raise ConfigError(f"unknown {what} {v!r}; known: {', '.join(sorted(known_set))}")
            wanted.add(v)
    return wanted or None


def _sized(scenario: str) -> bool:
    case = CASES.get(scenario)
    return case is None or case.sized


def select(
    specs: Iterable[RunSpec],
    *,
    scenarios: Iterable[str] | None = None,
    sizes: Iterable[str] | None = None,
    timings: Iterable[str] | None = None,
    conditions: Iterable[str] | None = None,
    faults: Iterable[str] | None = None,
    repeat: int = 1,
) -> list[RunSpec]:
    """Filter a matrix (comma-separated or repeated names; scenarios as ``TC3`` or ``3``)
    and repeat it ``repeat`` times (repeats get their own sizes and cut points)."""
    sc = _names(scenarios, SCENARIO_BY_ID, "scenario")
    if sc is not None:
        uncovered = sorted(s for s in sc if not SCENARIO_BY_ID[s].covered)
        if uncovered and uncovered == sorted(sc):
            raise ConfigError(f"{', '.join(uncovered)} are not covered yet: nothing to run")
    sz = _names(sizes, SIZES, "size")
    tm = _names(timings, [*TIMINGS, *TC8_CUTS], "timing")
    cd = _names(conditions, CONDITIONS, "condition")
    ft = _names(faults, FAULTS, "fault")
    out = [
        s
        for s in specs
        if (sc is None or s.scenario in sc)
        and (sz is None or s.size in sz or not _sized(s.scenario))
        and (tm is None or s.timing in tm)
        and (cd is None or s.condition in cd)
        and (ft is None or s.fault in ft)
    ]
    if repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    return [replace(s, repeat=r) for r in range(repeat) for s in out]


def select_filled(
    quick: Iterable[RunSpec],
    full: Iterable[RunSpec],
    *,
    scenarios: Iterable[str] | None = None,
    sizes: Iterable[str] | None = None,
    timings: Iterable[str] | None = None,
    conditions: Iterable[str] | None = None,
    faults: Iterable[str] | None = None,
    repeat: int = 1,
) -> tuple[list[RunSpec], list[str]]:
    """:func:`select` on the quick tier, where every axis value named runs: the quick
    tier is a sample, so a size, timing, condition or fault it has no run with (in the
    scenarios chosen) is taken from the full matrix's runs with that value (and the other
    filters). Returns the runs and the values taken from the full matrix
    (``"sizes=xlarge"``)."""
    filters = {
        "scenarios": scenarios,
        "sizes": sizes,
        "timings": timings,
        "conditions": conditions,
        "faults": faults,
    }
    picked = select(quick, **filters, repeat=1)
    axes: tuple[tuple[str, str, Iterable[str], Iterable[str] | None], ...] = (
        ("sizes", "size", SIZES, sizes),
        ("timings", "timing", [*TIMINGS, *TC8_CUTS], timings),
        ("conditions", "condition", CONDITIONS, conditions),
        ("faults", "fault", FAULTS, faults),
    )
    pool = select(full, **filters, repeat=1)
    have = {s.id for s in picked}
    filled: list[str] = []
    for option, field, known, values in axes:
        for value in sorted(_names(values, known, field) or ()):

            def has(s: RunSpec, field: str = field, value: str = value) -> bool:
                if field == "size" and not _sized(s.scenario):
                    return False  # its answers have their own size: any size filter keeps it
                return str(getattr(s, field)) == value

            if any(has(s) for s in picked):
                continue
            extra = [s for s in pool if has(s) and s.id not in have]
            if extra:
                filled.append(f"{option}={value}")
                picked += extra
                have.update(s.id for s in extra)
    if repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    return [replace(s, repeat=r) for r in range(repeat) for s in picked], filled


__all__ = [
    "CONDITIONS",
    "COVERED",
    "FAULTS",
    "KERNEL_CONDITIONS",
    "KERNEL_SAMPLE",
    "PATH_DOWN_CONDITIONS",
    "PROFILES",
    "QUICK_SAMPLE",
    "SCENARIOS",
    "SCENARIO_BY_ID",
    "SEED_CONDITIONS",
    "SEED_TARGETS",
    "SIZES",
    "TARGET_BY_ID",
    "TC8_CUTS",
    "TIMINGS",
    "Case",
    "Condition",
    "Fault",
    "FaultMode",
    "Profile",
    "RunSpec",
    "Sample",
    "Scenario",
    "SizeClass",
    "Target",
    "Timing",
    "covered",
    "full_matrix",
    "kernel_sample",
    "matrix",
    "quick_matrix",
    "quick_sample",
    "scenario_order",
    "select",
    "select_filled",
]
