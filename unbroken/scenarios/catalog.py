"""The seed's fifteen scenarios, its targets and its matrix, as data.

What the report and the pytest tier know about a scenario comes from here: what answer
it streams, how the network fails, what must hold afterwards, and which runs of it the
tiers make. How it is played and checked is its case, one module per scenario in
:mod:`unbroken.scenarios.cases` (``cases/tc3.py``: its answers, pacing, faults and
checks), which the generic runner finds by the scenario's id. Cases 1-9 run; 10-15 need
features of a later wave and are listed as *not yet covered* (the report shows them so,
never as passed): covering one is its ``cases/tcN.py``, its name on the import line of
``cases/__init__.py``, ``covered`` here and its rows in the matrices.

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

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Final, Literal

from ..errors import ConfigError

FaultMode = Literal["fin", "rst", "blackhole"]


# ------------------------------------------------------------------ axes
@dataclass(frozen=True, slots=True)
class SizeClass:
    """A response size category of the seed: answers between ``lo`` and ``hi`` bytes."""

    name: str
    lo: int
    hi: int
    label: str
    seconds: float
    """How long the paced agent takes to write an answer of this class (full tier)."""

    def pick(self, repeat: int) -> int:
        """The answer size of repeat ``repeat``: the geometric middle of the range for
        repeat 0, then log-uniform within the range (seeded, reproducible)."""
        if repeat == 0:
            return int(math.sqrt(self.lo * self.hi))
        u = random.Random(f"size:{self.name}:{repeat}").random()
        return int(self.lo * (self.hi / self.lo) ** u)


@dataclass(frozen=True, slots=True)
class Timing:
    """When the fault hits: a fraction of the answer delivered, or ``at`` seconds after
    the stream started (``immediate``)."""

    name: str
    lo: float
    hi: float
    label: str
    at: float | None = None

    def fraction(self, repeat: int) -> float:
        """The fraction of the answer delivered when the fault hits (middle of the range
        for repeat 0, then uniform within it)."""
        if repeat == 0:
            return (self.lo + self.hi) / 2
        return random.Random(f"timing:{self.name}:{repeat}").uniform(self.lo, self.hi)


@dataclass(frozen=True, slots=True)
class Condition:
    """A network condition of the seed and how it is played on the proxy."""

    name: str
    label: str
    plan: str
    simulator: str
    """The :class:`~unbroken.chaos.NetworkSimulator` method that plays it (for the
    kernel-level ones, the :class:`~unbroken.chaos.kernel.RouterFaults` method)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """How a connection dies: ``fin`` (orderly close), ``rst`` (reset), ``blackhole``
    (silence: nothing passes, nothing closes)."""

    name: FaultMode
    label: str


SIZES: Final[dict[str, SizeClass]] = {
    s.name: s
    for s in (
        SizeClass("small", 1_000, 10_000, "1–10 KB (typical chat responses)", 0.8),
        SizeClass("medium", 10_000, 100_000, "10–100 KB (detailed analysis)", 1.2),
        SizeClass("large", 100_000, 1_000_000, "100 KB–1 MB (comprehensive reports)", 1.6),
        SizeClass("xlarge", 1_000_000, 10_000_000, "1–10 MB (data exports, visualisations)", 2.5),
    )
}

TIMINGS: Final[dict[str, Timing]] = {
    t.name: t
    for t in (
        Timing("immediate", 0.0, 0.0, "within 100 ms of stream start", at=0.05),
        Timing("early", 0.10, 0.25, "at 10–25 % of the answer"),
        Timing("mid", 0.40, 0.60, "at 40–60 % of the answer"),
        Timing("late", 0.75, 0.90, "at 75–90 % of the answer"),
        Timing("final", 0.95, 0.98, "at 95 %+ of the answer"),
    )
}

#: TC8's cut points: percentages of a 10 MB+ answer.
TC8_CUTS: Final[dict[str, Timing]] = {
    f"p{p}": Timing(f"p{p}", p / 100, p / 100, f"at {p} % of a 10 MB+ answer")
    for p in (10, 25, 50, 75, 95)
}

CONDITIONS: Final[dict[str, Condition]] = {
    c.name: c
    for c in (
        Condition(
            "clean",
            "clean disconnect",
            "the connection is cut once with the fault mode, at the timing point",
            "simulate_clean_disconnect",
        ),
        Condition(
            "gradual",
            "gradual degradation",
            "latency rises to 300 ms and bandwidth falls to 32 KB/s over a ramp, then the "
            "connection is cut with the fault mode; the new path is healthy",
            "simulate_gradual_degradation",
        ),
        Condition(
            "intermittent",
            "intermittent drops",
            "three cuts with the fault mode in quick succession (every 0.2-0.3 s)",
            "simulate_intermittent_drops",
        ),
        Condition(
            "outage",
            "complete outage",
            "every connection is cut with the fault mode and new ones are refused for "
            "0.5-1 s (shorter than the client's budget)",
            "simulate_complete_outage",
        ),
        Condition(
            "asymmetric",
            "asymmetric failure",
            "the answer direction is silently dropped for 0.5-1 s while the client's "
            "sends still flow (send-only failure); then the connections that lost bytes "
            "are cut with the fault mode",
            "simulate_asymmetric_failure",
        ),
        Condition(
            "receive_only",
            "receive-only failure",
            "the client's frames (acks, pings) are silently dropped for 4 s (quick) or 5 s "
            "(full) while the answer still flows, new connections included; unbroken must "
            "find the failure itself before the direction comes back (a stream stalls once "
            "the server's flow window is full of unacked bytes); then connections still "
            "open that lost bytes are cut with the fault mode",
            "simulate_asymmetric_failure",
        ),
        Condition(
            "long_outage",
            "long silent outage",
            "every connection is cut with the fault mode, then nothing passes for 30 s on "
            "any connection, new ones included: they are accepted and hear nothing, so "
            "every attempt runs into its handshake timeout; the client rides it out",
            "simulate_silent_outage",
        ),
        Condition(
            "throttled",
            "bandwidth throttling",
            "the link (both directions, every connection, new ones too) is capped at half "
            "the rate the fault-free run used, from the start of the answer to its end; "
            "at the timing point the connection is cut with the fault mode and the answer "
            "resumes over the throttled link",
            "simulate_bandwidth_throttling",
        ),
        Condition(
            "kernel_loss",
            "random packet loss (kernel)",
            "10-20 % of the packets are dropped at random both ways in a router namespace "
            "(nft numgen) from the start of the answer to its end; at the timing point the "
            "connection is cut with the fault mode and the answer resumes over the lossy "
            "path (root only)",
            "RouterFaults.loss",
        ),
        Condition(
            "kernel_receive_only",
            "receive-only failure (kernel)",
            "the TCP segments that carry the client's data (acks, pings, new handshakes) "
            "are dropped in a router namespace for 4 s (quick) or 5 s (full) while TCP's "
            "bare ACKs pass and the answer still flows; unbroken must find it before the "
            "path comes back; then connections still open from before it are cut with the "
            "fault mode (root only)",
            "RouterFaults.drop_data",
        ),
        Condition(
            "kernel_blackhole",
            "silent path (kernel)",
            "every packet both ways is dropped in a router namespace for 2 s (quick) or "
            "3 s (full), new connections' SYNs included: no FIN, no RST, the sockets stay "
            "established; then connections still open from before it are cut with the "
            "fault mode (root only)",
            "RouterFaults.blackhole",
        ),
    )
}

#: The seed's five conditions (quick: every scenario meets each of them).
SEED_CONDITIONS: Final[tuple[str, ...]] = (
    "clean",
    "gradual",
    "intermittent",
    "outage",
    "asymmetric",
)
#: Conditions that keep the path down for a set time: the reconnection and the recovery
#: are timed from when it came back (a path that drops everything cannot be reconnected
#: over), and the time it was down is added to TC1's allowance.
PATH_DOWN_CONDITIONS: Final[frozenset[str]] = frozenset(
    {"receive_only", "long_outage", "kernel_receive_only", "kernel_blackhole"}
)
#: Conditions made by the kernel in network namespaces (:mod:`unbroken.chaos.kernel`):
#: they need root and iproute2/nftables/ethtool; elsewhere their runs are skipped with
#: the reason (``kernel_skip_reason()``).
KERNEL_CONDITIONS: Final[frozenset[str]] = frozenset(
    {"kernel_loss", "kernel_receive_only", "kernel_blackhole"}
)

FAULTS: Final[dict[str, Fault]] = {
    f.name: f
    for f in (
        Fault("fin", "orderly close (FIN)"),
        Fault("rst", "reset (RST)"),
        Fault("blackhole", "silent blackhole (found by heartbeats)"),
    )
}


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
    covered: bool = True
    not_covered_because: str = ""
    variants: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


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
            "the delays used equal protocol.backoff.Backoff's with the same seed and policy",
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
        "none",
        "",
        (),
        covered=False,
        not_covered_because="in-band token refresh (wave 2)",
    ),
    Scenario(
        "TC11",
        11,
        "Browser tab suspension/wake during stream",
        "Browser suspends WebSocket connection mid-stream",
        ("Stream resumes when tab becomes active",),
        "none",
        "",
        (),
        covered=False,
        not_covered_because="the browser (JavaScript) client (wave 2)",
    ),
    Scenario(
        "TC12",
        12,
        "Network quality degradation",
        "Gradually decreasing network quality during stream",
        ("Adaptive quality adjustments without interruption",),
        "none",
        "",
        (),
        covered=False,
        not_covered_because="adaptive quality (compression, batching by link) (wave 2)",
    ),
    Scenario(
        "TC13",
        13,
        "Server-side resource exhaustion",
        "Server temporarily unable to continue stream due to load",
        ("Graceful degradation and retry with backoff",),
        "none",
        "",
        (),
        covered=False,
        not_covered_because="overload shedding under load tests (wave 2)",
    ),
    Scenario(
        "TC14",
        14,
        "Protocol upgrade mid-stream",
        "WebSocket protocol version change during active stream",
        ("Backwards compatibility maintained",),
        "none",
        "",
        (),
        covered=False,
        not_covered_because="a second protocol version (wave 2)",
    ),
    Scenario(
        "TC15",
        15,
        "Cross-origin policy changes",
        "CORS policy changes affecting active connections",
        ("Existing streams unaffected by policy updates",),
        "none",
        "",
        (),
        covered=False,
        not_covered_because="origin policy (wave 2)",
    ),
)

SCENARIO_BY_ID: Final[dict[str, Scenario]] = {s.id: s for s in SCENARIOS}
COVERED: Final[tuple[str, ...]] = tuple(s.id for s in SCENARIOS if s.covered)


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
        "server thread CPU seconds of all fault runs ÷ the same runs without a fault, minus 1",
    ),
)

TARGET_BY_ID: Final[dict[str, Target]] = {t.id: t for t in SEED_TARGETS}


# ------------------------------------------------------------------ profiles
@dataclass(frozen=True, slots=True)
class Profile:
    """Durations of a tier: quick runs are shorter, not different."""

    name: str
    pace: float
    """Multiplies :attr:`SizeClass.seconds` (how long the agent writes)."""
    outage: float
    asymmetric: float
    ramp: float
    drop_every: float
    tc5_short: float
    tc8_seconds: float
    tc9_streams: int
    tc9_per_client: int
    receive_only: float = 4.0
    """How long a receive-only failure lasts (longer than it may take to find it)."""
    long_outage: float = 30.0
    """How long a long silent outage lasts."""
    throttle: float = 0.5
    """A throttled link carries this fraction of the fault-free run's bytes per second."""
    kernel_blackhole: float = 2.0
    """How long the kernel blackhole (both ways) lasts."""

    def loss_percent(self, repeat: int) -> float:
        """The kernel loss of repeat ``repeat``: 15 % for repeat 0, then uniform in
        10-20 % (seeded)."""
        if repeat == 0:
            return 15.0
        return round(random.Random(f"loss:{repeat}").uniform(10.0, 20.0), 1)


PROFILES: Final[dict[str, Profile]] = {
    "quick": Profile("quick", 0.6, 0.5, 0.5, 0.4, 0.2, 0.4, 1.5, 100, 5, 4.0, 30.0, 0.5, 2.0),
    "full": Profile("full", 1.0, 1.0, 1.0, 0.8, 0.3, 0.5, 2.5, 1000, 10, 5.0, 30.0, 0.5, 3.0),
}


# ------------------------------------------------------------------ runs
@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of the matrix."""

    scenario: str
    size: str
    timing: str
    condition: str
    fault: FaultMode
    variant: str = ""
    repeat: int = 0
    profile: str = "quick"

    @property
    def id(self) -> str:
        """A readable, unique, file-safe id."""
        parts = [self.scenario, self.size, self.timing, self.condition, self.fault]
        if self.variant:
            parts.append(self.variant)
        parts.append(f"r{self.repeat}")
        return "-".join(parts)

    @property
    def scenario_info(self) -> Scenario:
        return SCENARIO_BY_ID[self.scenario]

    @property
    def profile_info(self) -> Profile:
        return PROFILES[self.profile]

    @property
    def timing_info(self) -> Timing:
        return TC8_CUTS[self.timing] if self.timing in TC8_CUTS else TIMINGS[self.timing]

    @property
    def size_bytes(self) -> int:
        """Bytes of (each) answer."""
        if self.scenario == "TC8":
            return 10_500_000 + 100_000 * self.repeat
        return SIZES[self.size].pick(self.repeat)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        out = asdict(self)
        out["id"] = self.id
        out["size_bytes"] = self.size_bytes
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunSpec:
        """Inverse of :meth:`to_dict`."""
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in names}
        return cls(**kwargs)  # type: ignore[arg-type]


_FAULT_ORDER: Final[tuple[FaultMode, ...]] = ("rst", "fin", "blackhole")
_TIMING_ORDER: Final[tuple[str, ...]] = ("mid", "early", "late", "final", "immediate")


def _cycle(items: Sequence[str], i: int) -> str:
    return items[i % len(items)]


#: The quick tier's sample of larger answers and of the conditions beyond the seed's five
#: (scenario, size, timing, condition, fault, variant): every size in several scenarios,
#: each new condition at least once, one long silent outage (30 s), and the run where a
#: late ack once closed a finished stream's connection (TC1 xlarge asymmetric blackhole).
QUICK_SAMPLE: Final[tuple[tuple[str, str, str, str, FaultMode, str], ...]] = (
    ("TC1", "medium", "mid", "throttled", "fin", ""),
    ("TC1", "large", "early", "clean", "blackhole", ""),
    ("TC1", "xlarge", "mid", "asymmetric", "blackhole", ""),
    ("TC1", "xlarge", "mid", "receive_only", "rst", ""),
    ("TC1", "small", "mid", "long_outage", "blackhole", ""),
    ("TC2", "medium", "late", "intermittent", "rst", ""),
    ("TC2", "large", "mid", "outage", "fin", ""),
    ("TC3", "medium", "mid", "throttled", "blackhole", ""),
    ("TC3", "xlarge", "mid", "clean", "fin", ""),
    ("TC4", "medium", "mid", "intermittent", "blackhole", ""),
    ("TC5", "small", "mid", "clean", "rst", "silent"),
    ("TC8", "xlarge", "p50", "receive_only", "blackhole", ""),
    ("TC9", "small", "mid", "throttled", "rst", ""),
    # kernel-level faults (root; skipped elsewhere): two short runs
    ("TC1", "small", "mid", "kernel_blackhole", "fin", ""),
    ("TC1", "medium", "mid", "kernel_loss", "rst", ""),
)


#: The full tier's kernel-level runs (scenario, size, timing, condition, fault, variant):
#: loss with small to large answers, the receive-only failure with answers past the
#: server's flow window (1 MiB), a silent path at several sizes, in every scenario where
#: the condition means something (TC5's budgets are the proxy's refusals: not here).
KERNEL_SAMPLE: Final[tuple[tuple[str, str, str, str, FaultMode, str], ...]] = (
    ("TC1", "small", "mid", "kernel_loss", "rst", ""),
    ("TC1", "medium", "early", "kernel_loss", "fin", ""),
    ("TC1", "large", "late", "kernel_loss", "blackhole", ""),
    ("TC1", "small", "mid", "kernel_blackhole", "fin", ""),
    ("TC1", "medium", "early", "kernel_blackhole", "rst", ""),
    ("TC1", "xlarge", "mid", "kernel_blackhole", "blackhole", ""),
    ("TC1", "xlarge", "early", "kernel_receive_only", "rst", ""),
    ("TC1", "xlarge", "mid", "kernel_receive_only", "fin", ""),
    ("TC1", "xlarge", "late", "kernel_receive_only", "blackhole", ""),
    ("TC2", "medium", "mid", "kernel_loss", "rst", ""),
    ("TC2", "medium", "mid", "kernel_blackhole", "fin", ""),
    ("TC2", "xlarge", "mid", "kernel_receive_only", "blackhole", ""),
    ("TC3", "medium", "mid", "kernel_loss", "fin", ""),
    ("TC3", "medium", "mid", "kernel_blackhole", "blackhole", ""),
    ("TC3", "xlarge", "mid", "kernel_receive_only", "rst", ""),
    ("TC4", "medium", "mid", "kernel_loss", "blackhole", ""),
    ("TC4", "medium", "mid", "kernel_blackhole", "rst", ""),
    ("TC6", "small", "immediate", "kernel_loss", "rst", "before_started"),
    ("TC6", "small", "immediate", "kernel_blackhole", "fin", "after_started"),
    ("TC7", "medium", "mid", "kernel_loss", "rst", ""),
    ("TC7", "medium", "mid", "kernel_blackhole", "fin", ""),
    ("TC8", "xlarge", "p25", "kernel_loss", "rst", ""),
    ("TC8", "xlarge", "p50", "kernel_receive_only", "fin", ""),
    ("TC8", "xlarge", "p75", "kernel_blackhole", "blackhole", ""),
    ("TC9", "small", "mid", "kernel_loss", "rst", ""),
    ("TC9", "small", "mid", "kernel_blackhole", "fin", ""),
)


def quick_matrix() -> list[RunSpec]:
    """Every scenario 1-9 under each of the seed's five network conditions, small
    answers, faults and timings rotated so each appears in each scenario (TC9: 100
    streams); then :data:`QUICK_SAMPLE`: medium, large and extra-large answers, the
    receive-only failure, bandwidth throttling, one long silent outage and TC5's
    silent-drop variant."""
    specs: list[RunSpec] = []
    conditions = list(SEED_CONDITIONS)
    for n, sid in enumerate(("TC1", "TC2", "TC3", "TC4", "TC7")):
        for i, cond in enumerate(conditions):
            timing = _cycle(_TIMING_ORDER, i + n)
            if sid == "TC7" and timing in ("final", "immediate"):
                timing = "mid"  # the cascade starts while the answer is still flowing
            specs.append(
                RunSpec(sid, "small", timing, cond, _FAULT_ORDER[(i + n) % 3], profile="quick")
            )
    for i, cond in enumerate(conditions):
        specs.append(RunSpec("TC5", "small", "mid", cond, _FAULT_ORDER[i % 3], "long"))
    for i, cond in enumerate(("clean", "outage")):
        specs.append(RunSpec("TC5", "small", "early", cond, _FAULT_ORDER[(i + 1) % 3], "short"))
    for i, cond in enumerate(conditions):
        phase = "before_started" if i % 2 == 0 else "after_started"
        specs.append(RunSpec("TC6", "small", "immediate", cond, _FAULT_ORDER[i % 3], phase))
    specs.append(RunSpec("TC6", "small", "immediate", "clean", "rst", "after_started"))
    # each cut point once; the asymmetric drop mid-answer, where bytes are still to come
    tc8_cuts = ("p95", "p10", "p75", "p25", "p50")
    for i, (cond, cut) in enumerate(zip(conditions, tc8_cuts, strict=True)):
        specs.append(RunSpec("TC8", "xlarge", cut, cond, _FAULT_ORDER[i % 3]))
    for i, cond in enumerate(conditions):
        specs.append(RunSpec("TC9", "small", "mid", cond, _FAULT_ORDER[i % 3]))
    for sid, size, timing, cond, fault, variant in QUICK_SAMPLE:
        specs.append(RunSpec(sid, size, timing, cond, fault, variant))
    return specs


def full_matrix() -> list[RunSpec]:
    """The crossed matrix (see docs/reliability.md for its shape; ``len(full_matrix())``
    for its size). Conditions that hold the path down for a set time are sampled: a
    receive-only failure only stalls a stream whose unacked bytes fill the server's flow
    window (1 MiB), so it runs with answers larger than that; a long silent outage lasts
    30 s, so a few runs carry it."""
    specs: list[RunSpec] = []
    # the seed's five and bandwidth throttling: crossed with everything
    conditions = [*SEED_CONDITIONS, "throttled"]
    faults = list(FAULTS)

    def add(*args: str, variant: str = "") -> None:
        sid, size, timing, cond, fault = args
        specs.append(RunSpec(sid, size, timing, cond, fault, variant, profile="full"))  # type: ignore[arg-type]

    # TC1: every size x timing x condition x fault; receive-only with extra-large answers
    # at every timing; a long silent outage for every size and fault
    for size in SIZES:
        for timing in TIMINGS:
            for cond in conditions:
                for fault in faults:
                    add("TC1", size, timing, cond, fault)
    for timing in TIMINGS:
        for fault in faults:
            add("TC1", "xlarge", timing, "receive_only", fault)
    for size in SIZES:
        for fault in faults:
            add("TC1", size, "mid", "long_outage", fault)
    # TC2, TC3: every size x timing x fault; conditions rotated (each meets each fault);
    # receive-only with extra-large answers; one long silent outage
    for n, sid in enumerate(("TC2", "TC3")):
        for a, size in enumerate(SIZES):
            for b, timing in enumerate(TIMINGS):
                for c, fault in enumerate(faults):
                    add(sid, size, timing, _cycle(conditions, a + b + c), fault)
        for fault in faults:
            add(sid, "xlarge", "mid", "receive_only", fault)
        add(sid, "medium", "mid", "long_outage", faults[n])
    # TC4: six streams of small..large, every timing x fault, conditions rotated; one
    # long silent outage (no receive-only: none of its answers outgrows the window)
    for a, size in enumerate(("small", "medium", "large")):
        for b, timing in enumerate(TIMINGS):
            for c, fault in enumerate(faults):
                add("TC4", size, timing, _cycle(conditions, a + b + c), fault)
    add("TC4", "medium", "mid", "long_outage", "blackhole")
    # TC5: every condition x fault, long, short and silent
    for cond in conditions:
        for fault in faults:
            for variant in ("long", "short", "silent"):
                add("TC5", "medium", "mid", cond, fault, variant=variant)
    # TC6: every condition x fault, before and after started, small and medium
    for size in ("small", "medium"):
        for cond in conditions:
            for fault in faults:
                for variant in ("before_started", "after_started"):
                    add("TC6", size, "immediate", cond, fault, variant=variant)
    # TC7: every condition x fault x timing (but final/immediate) at medium size
    for cond in conditions:
        for fault in faults:
            for timing in ("early", "mid", "late"):
                add("TC7", "medium", timing, cond, fault)
    # TC8: every cut point x condition x fault, receive-only included; one long outage
    for cut in TC8_CUTS:
        for cond in [*conditions, "receive_only"]:
            for fault in faults:
                add("TC8", "xlarge", cut, cond, fault)
    add("TC8", "xlarge", "p50", "long_outage", "rst")
    # TC9: 1,000 streams, every condition x fault; one long silent outage
    for cond in conditions:
        for fault in faults:
            add("TC9", "small", "mid", cond, fault)
    add("TC9", "small", "mid", "long_outage", "fin")
    # kernel-level faults (root; skipped elsewhere): a handful per scenario, not crossed
    for kind, size, timing, cond, fault, variant in KERNEL_SAMPLE:
        add(kind, size, timing, cond, fault, variant=variant)
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
        and (sz is None or s.size in sz or s.scenario == "TC8")
        and (tm is None or s.timing in tm)
        and (cd is None or s.condition in cd)
        and (ft is None or s.fault in ft)
    ]
    if repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    return [replace(s, repeat=r) for r in range(repeat) for s in out]


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
    "Condition",
    "Fault",
    "FaultMode",
    "Profile",
    "RunSpec",
    "Scenario",
    "SizeClass",
    "Target",
    "Timing",
    "full_matrix",
    "matrix",
    "quick_matrix",
    "select",
]
