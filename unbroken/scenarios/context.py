"""The state of one run, shared by the generic runner's modules and the cases: the
clients and their connection events, the streams' recorders, when the fault hit, what
the fault plan installed. Nothing here knows a scenario."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..chaos import GeneratedAnswer, InstalledToxic, NetworkSimulator, Verdict
from ..client import Client, ConnectionEvent
from ..server import Unbroken
from .harness import ChaosHarness, StreamRecorder
from .sequence import Episode
from .spec import RunSpec

if TYPE_CHECKING:
    from ..chaos.kernel import Fault as KernelFault
    from ..chaos.kernel import Topology

#: The server's heartbeat in chaos runs: its default (a blackhole is found in about
#: three of them), so the suite measures what users get.
HEARTBEAT: float = inspect.signature(Unbroken).parameters["heartbeat"].default


#: Called with (the run's spec, what) for every fault a faulty run marks: the fault being
#: played now (``chaos run --dashboard`` listens). A listener must not raise.
fault_listeners: list[Callable[[RunSpec, str], None]] = []


# ------------------------------------------------------------------ baseline
@dataclass(frozen=True, slots=True)
class Baseline:
    """The same run without a fault."""

    total_s: float
    wire_bytes: int
    cpu_s: float
    conn_bytes: int = 0
    """Bytes the first connection carried to the client (one-client runs)."""


# ------------------------------------------------------------------ watching
class EventWatch:
    """A client's connection events, with waits."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.events: list[ConnectionEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, ev: ConnectionEvent) -> None:
        self.events.append(ev)
        self._changed.set()

    def first(self, kind: str, after: float) -> ConnectionEvent | None:
        for ev in self.events:
            if ev.kind == kind and ev.at > after:
                return ev
        return None

    async def wait(self, kind: str, after: float) -> ConnectionEvent:
        while True:
            self._changed.clear()
            ev = self.first(kind, after)
            if ev is not None:
                return ev
            await self._changed.wait()


class ProgressGate:
    """Counts events received over all streams; wakes waiters at thresholds."""

    def __init__(self) -> None:
        self.count = 0
        self.opened = False
        """Every threshold counts as reached (:meth:`open`)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def open(self) -> None:
        """Wake every waiter now and from now on (the agents are all held at the
        timing point: it is reached whatever the count says)."""
        self.opened = True
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters = []

    def on_event(self, _rec: StreamRecorder) -> None:
        self.count += 1
        if self._waiters and self.count >= self._waiters[0][0]:
            keep = []
            for n, fut in self._waiters:
                if self.count >= n:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((n, fut))
            self._waiters = keep

    async def reached(self, n: int) -> None:
        if self.opened or self.count >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        self._waiters.sort(key=lambda w: w[0])
        await fut


@dataclass
class ForeignStream:
    """A stream consumed by a client other than the runner's Python one (e.g. the JS
    client in a browser page), as that client reported it: what it assembled, the end
    digest its own verifier checked, how it ended. The generic checks compare it with
    the generated answer and the server's log."""

    key: str
    """The answer's key in the harness's book (its agent's calls are counted there)."""
    expected: GeneratedAnswer
    stream_id: str
    parts: dict[str, str]
    """Each part's body as the client assembled it."""
    digest: str
    """The end digest (hex) the client verified."""
    status: str
    complete: bool
    error: str | None
    started_at: float
    ended_at: float | None
    """When the client had the whole answer (monotonic), None if it never did."""
    report: dict[str, Any] = field(default_factory=dict)
    """Whatever else the client and its driver reported (for the case's checks)."""

    def open_at(self, t: float | None) -> bool:
        """The stream was not finished for the client when the fault hit at ``t``."""
        return t is not None and (self.ended_at is None or self.ended_at > t)


@dataclass
class RunState:
    """One run in progress (fault-free for a baseline), then what it recorded."""

    spec: RunSpec
    h: ChaosHarness
    faulty: bool
    clients: list[Client] = field(default_factory=list)
    watches: list[EventWatch] = field(default_factory=list)
    recs: list[StreamRecorder] = field(default_factory=list)
    owner: dict[int, int] = field(default_factory=dict)
    """id(recorder) -> index of its client."""
    gate: ProgressGate = field(default_factory=ProgressGate)
    t_start: float = 0.0
    t_started: float = 0.0
    t_fault: float | None = None
    faults: list[tuple[float, str]] = field(default_factory=list)
    snapshot: dict[str, Any] | None = None
    client_snapshot: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    resumed_recs: list[StreamRecorder] = field(default_factory=list)
    exhausted: list[BaseException] = field(default_factory=list)
    released: float | None = None
    """When a fault plan that held the network down for the client's budget let it
    come back."""
    t_restored: float | None = None
    """When a condition that held the path down let it come back (receive-only, long
    outage): reconnection and recovery are timed from here."""
    down_until: float | None = None
    """When the path is planned to come back (receive-only: found before this?)."""
    net: NetworkSimulator | None = None
    throttle: list[InstalledToxic] = field(default_factory=list)
    throttle_rate: float = 0.0
    throttled_at_end: bool = False
    cut_verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Each stream's log verified at the cut (for a case whose :meth:`at_cut` does)."""
    at_cut: Callable[[RunState], Awaitable[None]] | None = None
    """Run once the server's snapshot at the cut is taken (the case's hook)."""
    cancel_at_end: list[Callable[[], None]] = field(default_factory=list)
    """Called when the streams are done (e.g. a byte cut that never fired)."""
    episodes: list[Episode] = field(default_factory=list)
    """The resumes read back from the sequence trace (filled when the run is assessed)."""
    faulted: asyncio.Event = field(default_factory=asyncio.Event)
    welcome_bytes: int = 0
    baseline: Baseline | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    kernel: list[KernelFault] = field(default_factory=list)
    """Kernel-level faults installed on the topology's router (kernel conditions)."""
    loss_percent: float = 0.0
    lossy_at_end: bool = False
    foreign: list[ForeignStream] = field(default_factory=list)
    """Streams consumed by a client other than the Python one (a case's :meth:`drive`)."""
    held_until: float | None = None
    """When a fault that held the client itself (a frozen or stopped tab, a browser
    offline) let it go: reconnection and recovery are timed from here."""
    _snap_task: asyncio.Task[None] | None = None

    @property
    def proxy(self) -> Any:
        return self.h.proxy

    @property
    def topology(self) -> Topology:
        topo = self.h.topology
        assert topo is not None, "a kernel condition runs on a Topology"
        return topo

    def mark(self, what: str, t: float | None = None) -> float:
        t = time.monotonic() if t is None else t
        self.faults.append((t, what))
        for listener in list(fault_listeners):
            try:
                listener(self.spec, what)
            except Exception:  # a listener's failure is not the run's
                logging.getLogger(__name__).debug("fault listener failed", exc_info=True)
        if self.t_fault is None:
            self.t_fault = t
            self.faulted.set()
            self._snap_task = asyncio.get_running_loop().create_task(self._take_snapshot())
        return t

    def open_at(self, rec: StreamRecorder) -> bool:
        """The stream was not finished (for the client's session) when the fault hit."""
        t = self.t_fault
        return t is not None and (rec.settled_at is None or rec.settled_at > t)

    def simulator(self) -> NetworkSimulator:
        if self.net is None:
            self.net = NetworkSimulator(self.h.proxy)
        return self.net

    async def _take_snapshot(self) -> None:
        try:
            self.snapshot = await self.h.snapshot()
            if self.at_cut is not None:
                await self.at_cut(self)
        except Exception as exc:  # the server may be shutting down: say so
            self.snapshot = {"error": repr(exc)}

    async def snapshot_done(self) -> None:
        if self._snap_task is not None:
            await self._snap_task

    def streams(self) -> list[tuple[StreamRecorder, StreamRecorder | None]]:
        """Each stream's recorder, with the recorder of the new client that resumed it
        (a client that gave up) or None."""
        resumed = {r.key.removesuffix("-resumed"): r for r in self.resumed_recs}
        return [(rec, resumed.get(rec.key)) for rec in self.recs]
