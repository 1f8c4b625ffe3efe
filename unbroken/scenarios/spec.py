"""What one run of the matrix is (:class:`RunSpec`) and the axes it is drawn from: answer
sizes, fault timings, network conditions, fault modes, and the tiers' durations
(:class:`Profile`).

This module sits below both the catalog (which lists the scenarios and builds the
matrices) and the cases (which play them), so both can use it without a circle;
:mod:`unbroken.scenarios.catalog` re-exports every name in it.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Final, Literal

FaultMode = Literal["fin", "rst", "blackhole"]


def scenario_order(scenario: str) -> int:
    """The sort key of a scenario id: its number (``"TC10"`` after ``"TC9"``)."""
    return int(scenario.removeprefix("TC"))


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
    "quick": Profile("quick", 0.6, 0.5, 0.5, 0.4, 0.2, 4.0, 30.0, 0.5, 2.0),
    "full": Profile("full", 1.0, 1.0, 1.0, 0.8, 0.3, 5.0, 30.0, 0.5, 3.0),
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


__all__ = [
    "CONDITIONS",
    "FAULTS",
    "KERNEL_CONDITIONS",
    "PATH_DOWN_CONDITIONS",
    "PROFILES",
    "SEED_CONDITIONS",
    "SIZES",
    "TC8_CUTS",
    "TIMINGS",
    "Condition",
    "Fault",
    "FaultMode",
    "Profile",
    "RunSpec",
    "SizeClass",
    "Timing",
    "scenario_order",
]
