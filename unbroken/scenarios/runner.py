"""Runs the matrix for real: a server on its own thread, a fault proxy and clients on
loopback, one fault plan per :class:`~unbroken.scenarios.catalog.RunSpec`.

:func:`run_one` runs one spec (and, once per answer, the same run without a fault: the
baseline) and returns a :class:`~unbroken.scenarios.results.RunResult` with the
verifier's verdicts, the checks of the scenario's "must hold" list, the timings, the
bytes re-sent and the server's CPU and memory. :func:`run_matrix` runs many, writing
debugging artefacts for every run that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import math
import random
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from ..chaos import (
    GeneratedAnswer,
    InstalledToxic,
    NetworkSimulator,
    StreamingResponseSimulator,
    Verdict,
)
from ..chaos.toxics import DIRECTIONS, CutMode, Timeout
from ..client import Client, ConnectionEvent
from ..client.response import parse_partial_json
from ..errors import ReconnectExhausted
from ..protocol.backoff import Backoff, BackoffPolicy
from ..protocol.events import Kind
from ..server import Unbroken
from .catalog import CONDITIONS, KERNEL_CONDITIONS, PATH_DOWN_CONDITIONS, SIZES, RunSpec
from .harness import (
    CHAOS_POLICY,
    SERVER_THREAD,
    ChaosHarness,
    LogCapture,
    ResourceSampler,
    StreamRecorder,
    reap,
)
from .logscan import scan
from .results import Check, Metrics, RunResult
from .targets import percentile

if TYPE_CHECKING:
    from ..chaos.kernel import Fault as KernelFault
    from ..chaos.kernel import Topology

log = logging.getLogger(__name__)

#: The JSON answers' schema (TC2, TC4, TC9): a report with rows of typed objects.
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 5, "maxLength": 60},
        "generated": {"type": "string", "format": "date-time"},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "minLength": 3, "maxLength": 24},
                    "region": {"enum": ["emea", "amer", "apac"]},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "active": {"type": "boolean"},
                },
                "required": ["id", "name", "region", "score", "active"],
            },
        },
    },
    "required": ["title", "generated", "rows"],
}

#: The server's heartbeat in chaos runs: its default (a blackhole is found in about
#: three of them), so the suite measures what users get.
HEARTBEAT: float = inspect.signature(Unbroken).parameters["heartbeat"].default
#: Largest ``events`` frame the server sends (the app's default ``frame_cap``).
FRAME_CAP = 256 * 1024
TEXT_CHUNK = 48
#: A throttled link never goes below this (bytes/s): handshakes and heartbeats still pass.
THROTTLE_FLOOR = 16_000
#: TC5 'silent': the deadline, and how late past it giving up may be reported (the
#: loop's own timer lateness on a busy machine; an attempt that runs its whole handshake
#: timeout past the deadline overshoots by up to that timeout, 1 s here).
TC5_SILENT_DEADLINE = 2.5
DEADLINE_SLACK = 0.25


# ------------------------------------------------------------------ answers
def chunk_size(size: int) -> int:
    """Token-like chunks: 8 bytes for the smallest answers, up to 48 (so a small answer
    still has a couple of hundred events, and 'final' has some left to lose)."""
    return max(8, min(TEXT_CHUNK, size // 200))


#: At most this many fragments per JSON part. The Python client builds
#: ``JsonFragment.text_so_far`` (the whole document so far) for every fragment: quadratic
#: in the fragment count, and quadratic in memory while fragments queue behind a reader
#: (a 3 MB document in 48-character fragments ran a 23 GB machine out of memory).
MAX_JSON_FRAGMENTS = 300


def json_chunk(size: int) -> int:
    """Fragment size of a JSON part of about ``size`` bytes (see MAX_JSON_FRAGMENTS)."""
    return max(chunk_size(size), -(-size // MAX_JSON_FRAGMENTS))


@functools.lru_cache(maxsize=64)
def _answer(kind: str, size: int, seed: int) -> GeneratedAnswer:
    sim = StreamingResponseSimulator(seed)
    chunk = chunk_size(size)
    if kind == "text":
        return sim.text_answer(size, chunk)
    if kind == "json":
        return sim.json_answer(REPORT_SCHEMA, chunk_size=json_chunk(size), target_size=size)
    return sim.multipart_answer(
        [
            {"type": "text", "size": max(200, int(size * 0.45)), "chunk_size": chunk},
            {
                "type": "json",
                "schema": REPORT_SCHEMA,
                "target_size": max(200, int(size * 0.2)),
                "chunk_size": json_chunk(max(200, int(size * 0.2))),
            },
            {"type": "chart", "points": max(5, size // 2000), "series": 2},
            {"type": "table", "rows": max(5, size // 1500), "columns": 5, "chunk_size": 4096},
            {"type": "image", "size": max(300, int(size * 0.1)), "chunk_size": 4096},
        ]
    )


def answers_for(spec: RunSpec) -> list[GeneratedAnswer]:
    """The answers a run streams (one per stream)."""
    size, seed = spec.size_bytes, 1 + spec.repeat
    sc = spec.scenario
    if sc in ("TC1", "TC5", "TC6", "TC8"):
        return [_answer("text", size, seed)]
    if sc == "TC2":
        return [_answer("json", size, seed)]
    if sc in ("TC3", "TC7"):
        return [_answer("multipart", size, seed)]
    if sc == "TC4":
        kinds = ["text", "json", "multipart"] * 2
        return [_answer(k, size, seed * 10 + i) for i, k in enumerate(kinds)]
    # text: one process plays every user here, so per-stream client work (e.g. the
    # client's JSON schema validation) would be multiplied by the number of streams
    n = spec.profile_info.tc9_streams
    return [_answer("text", size, seed * 100 + i % 10) for i in range(n)]


def layout(spec: RunSpec) -> tuple[int, int]:
    """(clients, streams per client)."""
    if spec.scenario == "TC9":
        p = spec.profile_info
        return math.ceil(p.tc9_streams / p.tc9_per_client), p.tc9_per_client
    if spec.scenario == "TC4":
        return 1, 6
    return 1, 1


def pace(spec: RunSpec) -> float:
    """Seconds the agent takes to write each answer."""
    p = spec.profile_info
    if spec.scenario == "TC8":
        return p.tc8_seconds
    return SIZES[spec.size].seconds * p.pace


def _policy(spec: RunSpec) -> BackoffPolicy:
    if spec.scenario == "TC5" and spec.variant == "long":
        return BackoffPolicy(base=0.05, cap=0.4, max_attempts=6, deadline=10.0)
    if spec.scenario == "TC5" and spec.variant == "silent":
        return BackoffPolicy(base=0.05, cap=0.4, max_attempts=None, deadline=TC5_SILENT_DEADLINE)
    if spec.scenario == "TC5":
        return BackoffPolicy(base=0.05, cap=0.4, max_attempts=None, deadline=5.0)
    if spec.condition == "long_outage":
        # the client must outlast the outage: a deadline past its end
        deadline = spec.profile_info.long_outage + 30.0
        return BackoffPolicy(base=0.05, cap=0.5, max_attempts=None, deadline=deadline)
    return CHAOS_POLICY


def _gives_up(spec: RunSpec) -> bool:
    """TC5 'long' and 'silent': the client must give up (then a new one resumes)."""
    return spec.scenario == "TC5" and spec.variant in ("long", "silent")


# ------------------------------------------------------------------ baseline
@dataclass(frozen=True, slots=True)
class Baseline:
    """The same run without a fault."""

    total_s: float
    wire_bytes: int
    cpu_s: float
    conn_bytes: int = 0
    """Bytes the first connection carried to the client (one-client runs)."""


_BASELINES: dict[tuple[str, int, int, str, int], Baseline] = {}


def _baseline_key(spec: RunSpec) -> tuple[str, int, int, str, int]:
    family = {"TC5": "TC1", "TC6": "TC1"}.get(spec.scenario, spec.scenario)
    return (family, spec.size_bytes, spec.repeat, spec.profile, layout(spec)[0])


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
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

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
        if self.count >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        self._waiters.sort(key=lambda w: w[0])
        await fut


@dataclass
class _Run:
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
    tc5_released: float | None = None
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
    """TC4: each stream's log verified at the cut."""
    faulted: asyncio.Event = field(default_factory=asyncio.Event)
    welcome_bytes: int = 0
    baseline: Baseline | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    kernel: list[KernelFault] = field(default_factory=list)
    """Kernel-level faults installed on the topology's router (kernel conditions)."""
    loss_percent: float = 0.0
    lossy_at_end: bool = False
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
            if self.spec.scenario == "TC4":
                # the log at the cut, verified there (one stream per call: the server's
                # loop serves the others in between)
                for rec in list(self.recs):
                    if rec.stream.id:
                        verdict = await self.h.verify_log(rec, require_end=False)
                        self.cut_verdicts[rec.stream.id] = verdict
        except Exception as exc:  # the server may be shutting down: say so
            self.snapshot = {"error": repr(exc)}

    async def snapshot_done(self) -> None:
        if self._snap_task is not None:
            await self._snap_task


def _client_state(run: _Run) -> dict[str, Any]:
    """What the client held when the fault hit (rebuilt after the run from the recorded
    events and their arrival times, so nothing runs at the cut itself)."""
    t = run.t_fault
    out = {}
    for rec in run.recs:
        held = rec.events if t is None else rec.events[: rec.count_at(t)]
        parts: dict[str, str] = {}
        ended = {e.part for e in held if e.kind == Kind.PART_END}
        for e in held:
            if e.kind == Kind.PART_START:
                parts[e.part] = "complete" if e.part in ended else "partial"
        if rec.expected is not None:
            for p in rec.expected.parts:
                parts.setdefault(p.id, "missing")
        frags = [e.body for e in held if e.kind == Kind.JSON]
        out[rec.stream.id or rec.key] = {
            "answer": rec.key,
            "open_at_fault": run.open_at(rec),
            "last_seq": held[-1].seq if held else 0,
            "expected_events": len(rec.expected.events) + 1 if rec.expected else None,
            "body_bytes": sum(len(e.body.encode()) for e in held if e.kind <= Kind.DATA),
            "parts": parts,
            "json_partial_ok": _json_partial_ok(frags),
        }
    return {"t_fault": t, "streams": out}


def _json_partial_ok(frags: list[str]) -> bool | None:
    """Does the JSON received so far parse (best effort) into a value?"""
    if not frags:
        return None
    text = "".join(frags)
    if not text.strip().strip("{[").strip():
        return True  # nothing but the opening bracket yet
    return parse_partial_json(text) is not None


# ------------------------------------------------------------------ fault plans
async def _play(
    run: _Run,
    condition: str,
    fault: CutMode,
    *,
    ramp: float | None = None,
    cut_done: float | None = None,
) -> None:
    """Play ``condition`` now, with ``fault`` as the way connections die (a gradual
    degradation cuts when its ramp is over). ``cut_done``: the first cut already happened
    then (an exact byte-offset cut), for the conditions that start with one."""
    p = run.h.proxy
    prof = run.spec.profile_info
    net = run.simulator()
    if cut_done is not None:
        run.mark(f"{condition}: cut at the timing point ({fault})", cut_done)
    if condition == "throttled":
        await _throttle(run)
        if cut_done is None:
            run.mark(f"cut on the throttled link ({fault})")
            await p.cut_all(fault, reason="throttled")
    elif condition == "receive_only":
        t = run.mark(f"client's frames dropped {prof.receive_only:.1f} s, then {fault}")
        run.down_until = t + prof.receive_only
        await net.simulate_asymmetric_failure("upstream", prof.receive_only, then=fault)
        # (the direction came back when the failure's time was up; the cut after it may
        # take a moment, a new connection may not)
        run.t_restored = run.down_until
        run.faults.append((time.monotonic(), "receive-only failure over"))
    elif condition == "long_outage":
        if cut_done is None:
            run.mark(f"silent outage {prof.long_outage:.0f} s ({fault})")
        run.down_until = time.monotonic() + prof.long_outage
        await net.simulate_silent_outage(prof.long_outage, mode=fault)
        run.t_restored = run.down_until
        run.faults.append((time.monotonic(), "silent outage over"))
    elif condition in KERNEL_CONDITIONS:
        await _play_kernel(run, condition, fault, cut_done=cut_done)
    elif condition == "clean":
        if cut_done is None:
            run.mark(f"clean disconnect ({fault})")
            await p.cut_all(fault, reason="clean_disconnect")
    elif condition == "gradual":
        duration = ramp if ramp is not None else prof.ramp
        run.faults.append((time.monotonic(), f"degradation starts ({duration:.2f} s ramp)"))
        await net.simulate_gradual_degradation(
            1.0 / duration, max_latency=0.3, start_rate=1_000_000.0, min_rate=32_000.0
        )
        run.mark(f"cut after degradation ({fault})")
        # the link dies and the path the client reconnects over is a healthy one
        await asyncio.gather(p.cut_all(fault, reason="after_degradation"), net.restore())
    elif condition == "intermittent":
        for k in range(3):
            if k == 0 and cut_done is not None:
                continue
            if k:
                await asyncio.sleep(prof.drop_every)  # the fault's own rhythm
            run.mark(f"intermittent drop {k + 1}/3 ({fault})")
            await p.cut_all(fault, reason=f"intermittent_{k + 1}")
    elif condition == "outage":
        if cut_done is None:
            run.mark(f"outage {prof.outage:.1f} s ({fault})")
        await net.simulate_complete_outage(prof.outage, mode=fault)
        run.faults.append((time.monotonic(), "outage over"))
    elif condition == "asymmetric":
        run.mark(f"answer direction dropped {prof.asymmetric:.1f} s, then {fault}")
        await net.simulate_asymmetric_failure("downstream", prof.asymmetric, then=fault)
        run.faults.append((time.monotonic(), "asymmetric over"))
    else:  # pragma: no cover - the catalog is closed
        raise ValueError(condition)


async def _kernel_loss(run: _Run) -> None:
    """Random loss both ways on the router (every connection, new ones too), from the
    start of the answer to its end. Installed once."""
    if run.kernel:
        return
    pct = run.spec.profile_info.loss_percent(run.spec.repeat)
    fault = await asyncio.to_thread(run.topology.faults.loss, pct, "both")
    run.kernel.append(fault)
    run.loss_percent = pct
    run.faults.append((fault.installed_at, f"kernel: {pct:g} % of packets lost both ways"))


async def _play_kernel(
    run: _Run, condition: str, fault: CutMode, *, cut_done: float | None
) -> None:
    """A kernel-level condition, on the topology's router. Loss: installed (if not yet)
    and the connection cut with the fault mode on the proxy. Receive-only and blackhole:
    the router drops the client's data segments (bare ACKs pass) or every packet both
    ways for the profile's time, new connections included; then the connections still
    open from before it are cut with the fault mode (``blackhole``: left as they are)."""
    p = run.h.proxy
    prof = run.spec.profile_info
    faults = run.topology.faults
    if condition == "kernel_loss":
        await _kernel_loss(run)
        if cut_done is None:
            run.mark(f"cut on the lossy path ({fault})")
            await p.cut_all(fault, reason="kernel_loss")
        return
    before = {c.id for c in p.connections}
    if condition == "kernel_receive_only":
        seconds, what = prof.receive_only, "client's data segments dropped (kernel)"
        installed = await asyncio.to_thread(faults.drop_data, "upstream")
    else:
        seconds, what = prof.kernel_blackhole, "every packet dropped both ways (kernel)"
        installed = await asyncio.to_thread(faults.blackhole, "both")
    run.kernel.append(installed)
    t = run.mark(f"{what} {seconds:.1f} s, then {fault}", installed.installed_at)
    run.down_until = t + seconds
    try:
        await asyncio.sleep(max(0.0, run.down_until - time.monotonic()))  # the fault's length
    finally:
        await asyncio.to_thread(installed.remove)
    assert installed.removed_at is not None
    run.t_restored = installed.removed_at
    run.faults.append(
        (installed.removed_at, f"kernel fault removed ({installed.dropped()} packets dropped)")
    )
    if fault != "blackhole":
        stale = [c for c in p.connections if c.id in before and c.is_live]
        await asyncio.gather(*(c.cut(fault, f"after_{condition}") for c in stale))


async def _throttle(run: _Run) -> None:
    """Cap the link (both directions, every connection, new ones too) at the profile's
    fraction of the rate the fault-free run used per connection; it stays until the run
    ends. Installed once."""
    if run.throttle:
        return
    base = run.baseline
    per_conn = base.wire_bytes / max(1, len(run.clients)) if base is not None else 0.0
    seconds = base.total_s if base is not None and base.total_s > 0 else 1.0
    rate = max(THROTTLE_FLOOR, run.spec.profile_info.throttle * per_conn / seconds)
    run.throttle_rate = rate
    run.throttle = await run.simulator().simulate_bandwidth_throttling(int(rate))
    run.faults.append((time.monotonic(), f"link throttled to {rate / 1000:,.0f} KB/s both ways"))


async def _trigger(run: _Run, total_events: int) -> None:
    """Wait for the spec's timing point."""
    timing = run.spec.timing_info
    if timing.at is not None:
        await asyncio.sleep(max(0.0, run.t_started + timing.at - time.monotonic()))
        return
    fraction = timing.fraction(run.spec.repeat)
    await run.gate.reached(max(1, int(fraction * total_events)))


async def _cascade(run: _Run) -> None:
    """TC7: cut each new connection right after its welcome (3x: the client is connected
    but has resumed nothing), then the next one 2 KB later."""
    p = run.h.proxy
    plan: tuple[tuple[int, CutMode], ...] = (
        (0, "rst"),
        (0, "fin"),
        (0, "rst"),
        (2048, "rst"),
    )
    for k, (extra, mode) in enumerate(plan):
        cut = p.cut_after_bytes(run.welcome_bytes + extra, mode=mode)
        streams = asyncio.gather(*(r.done() for r in run.recs))
        fired = asyncio.ensure_future(cut.wait())
        waits: set[asyncio.Future[Any]] = {fired, streams}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await reap(streams)
        if not fired.done():
            cut.cancel()
            await reap(fired)
            return  # the answer arrived before this cut could fire
        where = "right after the welcome" if not extra else f"{extra} B after the welcome"
        run.mark(f"cascade cut {k + 1}/4 ({mode}) {where}")


async def _hold_silent(run: _Run, release: asyncio.Event) -> None:
    """TC5 'silent': every connection is accepted and hears nothing (a blackhole: each
    attempt runs into its handshake timeout) until ``release``; then the connections
    that lost bytes meanwhile are reset."""
    p = run.h.proxy
    run.faults.append((time.monotonic(), "network silent: connections accepted, nothing passes"))
    before = {(c.id, d): c.link(d).dropped for c in p.connections for d in DIRECTIONS}
    installed = [
        p.add_toxic(Timeout(timeout=0.0), stream=d, name=f"tc5_silent_{d}") for d in DIRECTIONS
    ]
    try:
        await release.wait()
    finally:
        for toxic in installed:
            if p.get_toxic(toxic.name) is toxic:
                p.remove_toxic(toxic.name)
        run.tc5_released = time.monotonic()
        run.faults.append((run.tc5_released, "network back"))
    hung = [
        c
        for c in p.connections
        if c.is_live and any(c.link(d).dropped > before.get((c.id, d), 0) for d in DIRECTIONS)
    ]
    await asyncio.gather(*(c.cut("rst", "tc5_silent_end") for c in hung))


async def _hold_down(run: _Run, release: asyncio.Event) -> None:
    """TC5: refuse every connection (the proxy's port closed) until ``release``."""
    p = run.h.proxy
    run.faults.append((time.monotonic(), "network down: connections refused"))
    loop = asyncio.get_running_loop()
    released = loop.create_task(release.wait())
    try:
        while not release.is_set():
            if p.enabled:
                await p.disable("rst", reason="tc5_down")
            reenabled = loop.create_task(p.wait_until(lambda: p.enabled))
            await asyncio.wait({reenabled, released}, return_when=asyncio.FIRST_COMPLETED)
            reenabled.cancel()
    finally:
        released.cancel()
        await p.enable()
        run.tc5_released = time.monotonic()
        run.faults.append((run.tc5_released, "network back"))


async def _timed_play(run: _Run, total_events: int) -> None:
    """Play the condition at the timing point. A gradual degradation starts a ramp
    earlier, so that the link is degraded *before* it fails at the timing point."""
    spec, prof = run.spec, run.spec.profile_info
    timing = spec.timing_info
    if spec.condition == "throttled":
        await _throttle(run)  # from the start: the answer flows over a throttled link
    if spec.condition == "kernel_loss":
        await _kernel_loss(run)  # from the start: the answer flows over a lossy path
    if spec.condition == "gradual" and timing.at is None and run.baseline is not None:
        fraction = timing.fraction(spec.repeat)
        point = run.t_started + fraction * run.baseline.total_s
        await asyncio.sleep(max(0.0, point - prof.ramp - time.monotonic()))  # the schedule
        # a ramp that cannot fit before the point is shortened (never below 50 ms); the
        # link fails when the ramp is over: at the point, as the fault-free run paced it
        ramp = min(prof.ramp, max(0.05, point - time.monotonic()))
        await _play(run, spec.condition, spec.fault, ramp=ramp)
        return
    if timing.at is None and spec.condition in (
        "clean",
        "intermittent",
        "outage",
        "long_outage",
        "throttled",
        "kernel_loss",
    ):
        cut_at = await _cut_at_point(run, total_events)
        await _play(run, spec.condition, spec.fault, cut_done=cut_at)
        return
    await _trigger(run, total_events)
    short = min(prof.ramp, timing.at) if timing.at is not None else None
    await _play(run, spec.condition, spec.fault, ramp=short)


async def _cut_at_point(run: _Run, total_events: int) -> float | None:
    """Cut right after the byte at the timing point (an exact byte-offset cut in the
    proxy, so a fast answer cannot outrun it, nor a busy client loop that consumes
    events later than the proxy forwards them), unless the user reaches the point
    first. One client: its connection's bytes. Several: the bytes over all of them, and
    every connection is cut in the same instant (one network event). Returns the cut's
    time, or None (nothing cut yet)."""
    spec, base = run.spec, run.baseline
    fraction = spec.timing_info.fraction(spec.repeat)
    user = asyncio.ensure_future(run.gate.reached(max(1, int(fraction * total_events))))
    if base is None or not base.conn_bytes:
        await user
        return None
    p = run.h.proxy
    if len(run.clients) == 1:
        cut = p.cut_after_bytes(int(fraction * base.conn_bytes), mode=spec.fault)
    else:
        already = p.totals()["downstream"]["sent"]
        target = max(1, int(fraction * base.wire_bytes) - already)
        cut = p.cut_after_bytes(target, mode=spec.fault, total=True)
    fired = asyncio.ensure_future(cut.wait())
    waits: set[asyncio.Future[Any]] = {fired, user}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not fired.done():
            cut.cancel()
        for fut in waits:
            if not fut.done():
                await reap(fut)
    if fired.done() and not fired.cancelled() and fired.exception() is None:
        record = fired.result()  # its wall-clock time, on the monotonic clock
        return time.monotonic() - max(0.0, time.time() - record.time)
    return None


async def _driver(run: _Run, total_events: int) -> None:
    """The fault plan of a run (started once the streams are running)."""
    spec = run.spec
    loop = asyncio.get_running_loop()
    if spec.scenario == "TC6":  # 'after started': at once, within 100 ms of the start
        await _play(run, spec.condition, spec.fault, ramp=0.03)
        return
    if spec.scenario == "TC5":
        release = asyncio.Event()
        watch = run.watches[0]
        player = loop.create_task(_timed_play(run, total_events))
        await run.faulted.wait()
        assert run.t_fault is not None
        await watch.wait("disconnected", run.t_fault - 0.001)
        hold = _hold_silent if spec.variant == "silent" else _hold_down
        holder = loop.create_task(hold(run, release))
        if _gives_up(spec):
            await watch.wait("exhausted", run.t_fault)
        else:
            await asyncio.sleep(spec.profile_info.tc5_short)  # the outage's length
        release.set()
        await holder
        with contextlib.suppress(Exception):
            await player
        return
    if spec.scenario == "TC7":
        # the cascade starts as soon as the condition first breaks the link
        player = loop.create_task(_timed_play(run, total_events))
        await run.faulted.wait()
        try:
            await _cascade(run)
        finally:
            await player
        return
    await _timed_play(run, total_events)


# ------------------------------------------------------------------ one run
async def _stream_all(run: _Run) -> None:
    spec = run.spec
    h = run.h
    n_clients, per_client = layout(spec)
    answers = answers_for(spec)
    seconds = pace(spec)
    policy = _policy(spec)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(n_clients):
            watch = EventWatch(i)
            client = h.client(
                policy=policy,
                seed=1000 * spec.repeat + i,
                on_event=watch,
                open_timeout=3.0 if spec.scenario == "TC9" else 1.0,
            )
            run.clients.append(client)
            run.watches.append(watch)
        await asyncio.gather(*(stack.enter_async_context(c) for c in run.clients))
        byte_cut = None
        if n_clients == 1:
            # the 101 response and the welcome: what a connection carries before any stream
            run.welcome_bytes = (await h.proxy.wait_connection(1)).downstream.sent
        if run.faulty and spec.scenario == "TC6" and spec.variant == "before_started":
            # the welcome is through: cut right there, so 'started' never arrives
            byte_cut = h.proxy.cut_after_bytes(run.welcome_bytes, mode=spec.fault)
            byte_cut.fired.add_done_callback(
                lambda f: None if f.cancelled() else run.mark(f"'started' cut ({spec.fault})")
            )
        run.t_start = time.monotonic()
        tick = 0.1 if spec.scenario == "TC9" else 0.01

        async def start_client(ci: int) -> None:
            client = run.clients[ci]
            for k in range(per_client):
                a = answers[ci * per_client + k]
                rec = await h.start(
                    client,
                    a,
                    seconds=seconds,
                    tick=tick,
                    on_event=run.gate.on_event,
                    key=f"s{ci}-{k}",
                )
                run.recs.append(rec)
                run.owner[id(rec)] = ci

        loop = asyncio.get_running_loop()
        driver: asyncio.Task[None] | None = None
        if run.faulty and byte_cut is not None:
            driver = loop.create_task(_tc6_before(run, byte_cut))
        await asyncio.gather(*(start_client(ci) for ci in range(n_clients)))
        run.t_started = time.monotonic()
        if run.faulty and driver is None:
            total = sum(len(a.events) + 1 for a in answers)
            driver = loop.create_task(_driver(run, total))
        budget = 90.0 + 4 * seconds + (60.0 if spec.scenario == "TC9" else 0.0)
        done = asyncio.gather(*(rec.done() for rec in run.recs))
        try:
            await asyncio.wait_for(done, budget)
        except TimeoutError:
            run.notes.append(f"timed out after {budget:.0f} s waiting for the streams")
            raise
        finally:
            run.throttled_at_end = bool(run.throttle) and all(
                h.proxy.get_toxic(t.name) is t for t in run.throttle
            )
            run.lossy_at_end = bool(run.kernel) and all(f.active for f in run.kernel)
            if driver is not None and not driver.done():
                if spec.scenario in ("TC5",):
                    try:
                        await asyncio.wait_for(asyncio.shield(driver), 30)
                    except TimeoutError:
                        driver.cancel()
                else:
                    driver.cancel()
                await reap(driver)
            elif driver is not None and driver.done() and not driver.cancelled():
                exc = driver.exception()
                if exc is not None:
                    run.notes.append(f"fault driver failed: {exc!r}")
            if byte_cut is not None:
                byte_cut.cancel()
            if h.topology is not None and run.kernel:
                await asyncio.to_thread(_heal, h.topology)
        await run.snapshot_done()
        if run.faulty and _gives_up(spec):
            await _resume_with_new_client(run)


def _heal(topo: Topology) -> None:
    """Remove the run's kernel faults (their drop counts are kept)."""
    for fault in list(topo.faults.active):
        fault.remove()


async def _tc6_before(run: _Run, byte_cut: Any) -> None:
    """TC6 'before started': once the 'started' frame was cut on the wire, the rest of
    the condition plays on the connections that follow."""
    await byte_cut.wait()
    if run.spec.condition == "kernel_loss":
        await _kernel_loss(run)  # the retried start and the whole answer over the lossy path
    elif run.spec.condition != "clean":
        await _play(run, run.spec.condition, run.spec.fault, ramp=0.05)


async def _resume_with_new_client(run: _Run) -> None:
    """TC5 'long': once the network is back, a new client picks the stream up from the
    cursor the first one saved."""
    h = run.h
    for rec in run.recs:
        if not isinstance(rec.error, ReconnectExhausted):
            continue
        run.exhausted.append(rec.error)
        cursor = rec.stream.cursor
        if cursor is None:
            run.notes.append("no cursor saved before the budget ran out")
            continue
        async with h.client(seed=7) as client:
            st = await asyncio.wait_for(client.resume(cursor), 20)
            new = StreamRecorder(st, rec.expected, key=rec.key + "-resumed")
            await asyncio.wait_for(new.done(), 60)
        run.resumed_recs.append(new)


_warm = False


async def _warm_up() -> None:
    """One small fault-free run per process, so the first baseline does not pay for
    imports and first-use caches (it would make the CPU comparison unfair)."""
    global _warm
    if _warm:
        return
    async with ChaosHarness(heartbeat=HEARTBEAT) as h, h.client() as client:
        rec = await h.start(client, _answer("json", 20_000, 0), seconds=0.1)
        await asyncio.wait_for(rec.done(), 30)
    _warm = True


async def _baseline(spec: RunSpec) -> Baseline:
    """The same run without a fault: the best of two (a fair, conservative yardstick for
    the delay and the CPU overhead of a fault)."""
    key = _baseline_key(spec)
    if key in _BASELINES:
        return _BASELINES[key]
    await _warm_up()
    found: list[Baseline] = []
    for _ in range(2):
        async with ChaosHarness(heartbeat=HEARTBEAT, seed=spec.repeat) as h:
            run = _Run(spec, h, faulty=False)
            cpu0 = await h.server.cpu_time()
            await _stream_all(run)
            cpu1 = await h.server.cpu_time()
            ends = [r.ended_at for r in run.recs if r.ended_at is not None]
            found.append(
                Baseline(
                    total_s=max(ends) - run.t_start,
                    wire_bytes=h.proxy.totals()["downstream"]["sent"],
                    cpu_s=cpu1 - cpu0,
                    conn_bytes=h.proxy.history[0].downstream.sent,
                )
            )
            bad = [r for r in run.recs if r.answer is None or not h.verify_client(r).ok]
            if bad:
                raise RuntimeError(f"baseline of {spec.id} was not exact: {len(bad)} streams")
    base = Baseline(
        total_s=min(b.total_s for b in found),
        wire_bytes=min(b.wire_bytes for b in found),
        cpu_s=min(b.cpu_s for b in found),
        conn_bytes=min(b.conn_bytes for b in found),
    )
    _BASELINES[key] = base
    return base


def memory_guard() -> int:
    """RSS above which a run is stopped: half the machine's memory, at most 8 GB."""
    import psutil

    return min(8 * 2**30, psutil.virtual_memory().total // 2)


def clear_baselines() -> None:
    """Forget cached baselines (e.g. between matrices)."""
    _BASELINES.clear()


async def run_one(
    spec: RunSpec,
    *,
    artefacts: Path | None = None,
    keep_artefacts: bool = False,
    isolate_logs: bool = False,
    clock_origin: float | None = None,
    sampler_sink: list[tuple[float, float, float]] | None = None,
    beside: Callable[[ChaosHarness], Awaitable[object]] | None = None,
) -> RunResult:
    """Run ``spec`` (after its baseline, cached) and return what it measured.

    ``artefacts``: directory for the debugging artefacts of a failed run (all runs with
    ``keep_artefacts``). ``sampler_sink`` receives (seconds since ``clock_origin``, RSS
    MB, log MB) samples for the memory timeline. ``beside``: a coroutine function run
    with the harness while the run streams (e.g. a client of your own on the same
    server), awaited before the run is assessed.
    """
    t_wall = time.monotonic()
    origin = clock_origin if clock_origin is not None else t_wall
    result = RunResult(spec, started_s=t_wall - origin)
    if not spec.scenario_info.covered:
        result.status = "error"
        result.error = f"{spec.scenario} is not covered yet"
        return result
    if spec.condition in KERNEL_CONDITIONS:
        from ..chaos.kernel import kernel_skip_reason

        reason = kernel_skip_reason()
        if reason is not None:
            result.status = "skip"
            result.error = reason
            return result
    try:
        baseline = await _baseline(spec)
        with LogCapture(isolate=isolate_logs) as logs, contextlib.ExitStack() as net:
            topo = await _topology(spec, net)
            async with ChaosHarness(heartbeat=HEARTBEAT, seed=spec.repeat, topology=topo) as h:
                logs.ensure_attached()  # uvicorn dropped its loggers' handlers on start
                run = _Run(spec, h, faulty=True, baseline=baseline)
                cpu0 = await h.server.cpu_time()
                extra = asyncio.ensure_future(beside(h)) if beside is not None else None
                streaming = asyncio.ensure_future(_stream_all(run))
                sampler = ResourceSampler(
                    h.store, limit=memory_guard(), on_limit=lambda _s: streaming.cancel()
                )
                sampler.start()
                error: BaseException | None = None
                try:
                    await streaming
                except TimeoutError as exc:
                    error = exc
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if sampler.tripped is None or (task is not None and task.cancelling()):
                        raise
                    error = MemoryError(
                        f"memory guard: process RSS {sampler.tripped.rss / 2**30:.1f} GB > "
                        f"{memory_guard() / 2**30:.1f} GB; the run was stopped"
                    )
                cpu1 = await h.server.cpu_time()
                await sampler.stop()
                if sampler_sink is not None:
                    sampler_sink.extend(
                        (s.t - origin, s.rss / 2**20, s.log_bytes / 2**20) for s in sampler.samples
                    )
                if extra is not None:
                    try:
                        await asyncio.wait_for(extra, 30)
                    except Exception as exc:
                        run.notes.append(f"the coroutine beside the run failed: {exc!r}")
                await _assess(run, result, baseline, cpu1 - cpu0, sampler, logs)
                if error is not None:
                    result.status = "fail"
                    result.error = f"{type(error).__name__}: {error}".strip(": ")
                result.notes.extend(run.notes)
                if artefacts is not None and (keep_artefacts or not result.passed):
                    result.artefacts = await _write_artefacts(run, result, logs, artefacts)
    except Exception as exc:
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}"
        result.notes.append(traceback.format_exc(limit=6))
        log.exception("run %s failed", spec.id)
    result.wall_s = time.monotonic() - t_wall
    return result


async def _topology(spec: RunSpec, stack: contextlib.ExitStack) -> Topology | None:
    """For a kernel condition: a :class:`~unbroken.chaos.kernel.Topology` (deleted when
    ``stack`` closes), with this thread in its client namespace until then, so the
    proxy and the clients made here live there; the server thread serves from the
    server namespace. None for the other conditions."""
    if spec.condition not in KERNEL_CONDITIONS:
        return None
    from ..chaos.kernel import Topology

    topo = await asyncio.to_thread(Topology().open)
    stack.callback(topo.close)
    stack.enter_context(topo.client.entered())
    return topo


# ------------------------------------------------------------------ assessing a run
def _streams_of(run: _Run) -> list[tuple[StreamRecorder, StreamRecorder | None]]:
    resumed = {r.key.removesuffix("-resumed"): r for r in run.resumed_recs}
    return [(rec, resumed.get(rec.key)) for rec in run.recs]


async def _assess(
    run: _Run,
    result: RunResult,
    base: Baseline,
    cpu: float,
    sampler: ResourceSampler,
    logs: LogCapture | None = None,
) -> None:
    spec, h = run.spec, run.h
    checks: list[Check] = []
    result.streams = len(run.recs)
    t_fault = run.t_fault
    complete = exact = 0
    client_bad: list[Verdict] = []
    log_bad: list[Verdict] = []
    for rec, resumed in _streams_of(run):
        events = rec.events + (resumed.events if resumed is not None else [])
        last = resumed if resumed is not None else rec
        answer = last.answer
        assert rec.expected is not None
        verdict = h.verify_client(_merged(rec, resumed) if resumed is not None else rec)
        log_verdict = await h.verify_log(rec)
        done_ok = answer is not None and answer.status == "completed"
        if resumed is None:
            done_ok = done_ok and answer is not None and answer.complete
        if done_ok:
            complete += 1
        whole = len(events) == len(rec.expected.events) + 1
        if done_ok and verdict.ok and log_verdict.ok and whole:
            exact += 1
        if not verdict.ok:
            client_bad.append(verdict)
        if not log_verdict.ok:
            log_bad.append(log_verdict)
    result.streams_complete = complete
    result.streams_exact = exact
    checks.append(
        Check(
            "every stream complete and exact",
            exact == len(run.recs),
            f"{exact} of {len(run.recs)} streams exact" + _errors(run),
        )
    )
    checks.append(
        Check(
            "client events verified (StateVerifier.verify_answer, end digest)",
            not client_bad,
            "; ".join(v.detail for v in client_bad[:3]) or f"{len(run.recs)} streams ok",
        )
    )
    checks.append(
        Check(
            "server log intact: seqs 1..N, chain, parts, no overflow (verify_buffer_integrity)",
            not log_bad,
            "; ".join(v.detail for v in log_bad[:3]) or f"{len(run.recs)} logs ok",
        )
    )
    result.verdicts = [{"side": "client", **v.to_dict()} for v in client_bad[:5]] + [
        {"side": "log", **v.to_dict()} for v in log_bad[:5]
    ]

    run.client_snapshot = _client_state(run)
    hit = t_fault is not None and any(run.open_at(r) for r in run.recs)
    if not hit:
        result.notes.append("the fault hit after the answer had fully arrived")

    # ---- timings
    m = result.metrics
    m.baseline_s = base.total_s
    m.baseline_wire_bytes = base.wire_bytes
    m.baseline_cpu_s = base.cpu_s
    m.server_cpu_s = cpu
    ends = [r.ended_at for r, _ in _streams_of(run) if r.ended_at is not None]
    if ends and not _gives_up(spec):
        m.total_s = max(ends) - run.t_start
        m.delay_s = m.total_s - base.total_s
    m.wire_bytes = h.proxy.totals()["downstream"]["sent"]
    m.rss_peak_mb = sampler.peak_rss / 2**20
    m.log_peak_mb = sampler.peak_log_bytes / 2**20
    m.drops = sum(1 for w in run.watches for e in w.events if e.kind == "disconnected")
    m.reconnects = sum(
        max(0, sum(1 for e in w.events if e.kind == "connected") - 1) for w in run.watches
    )
    tc5_long = _gives_up(spec)
    if t_fault is not None and hit:
        _timings(run, m, t_fault, tc5_long)
        m.partial_bytes = sum(_bytes_at(r, t_fault) for r in run.recs)

    # ---- bytes re-sent
    episodes = _resend(run)
    if episodes:
        m.bytes_resent = int(sum(e.resent for e in episodes))
        m.bytes_inflight = int(sum(e.inflight for e in episodes))
        m.resent_events = sum(e.resent_events for e in episodes)
        m.resend_limit_bytes = int(sum(e.inflight + FRAME_CAP for e in episodes))
    seq_ok = all(e.position_ok for e in episodes)
    checks.append(
        Check(
            "every resume replays from exactly the seq after the client's (sequence trace)",
            seq_ok,
            f"{len(episodes)} resumes"
            + "".join(f"; {e.describe()}" for e in episodes if not e.position_ok)[:600],
        )
    )

    checks.extend(_scenario_checks(run, result, base, episodes))
    if spec.scenario == "TC4":
        checks.append(await _tc4_log_at_cut(run))
    checks.extend(_condition_checks(run, result))
    if logs is not None:
        checks.append(_logs_check(run, logs))
    result.checks = checks
    result.samples = {k: v for k, v in run.samples.items() if v}

    # ---- roll-ups for the targets
    if tc5_long:
        result.recovered = None
    elif hit:
        result.recovered = (
            exact == len(run.recs) and not run.exhausted and all(r.error is None for r in run.recs)
        )
    dropped = any(ev.kind == "disconnected" for w in run.watches for ev in w.events)
    if spec.condition in _FOUND_CHECKS:
        name = _FOUND_CHECKS[spec.condition][0]
        found = next((c for c in checks if c.name == name), None)
        if found is not None and hit and "stalled nothing" not in found.detail:
            result.timeout_ok = found.ok  # the failure found by unbroken, in time
    elif spec.fault == "blackhole" and hit and not tc5_long and (dropped or not result.exact):
        # (a silent link that dropped nothing, its last bytes already past the proxy,
        # has no timeout to handle; a run that was not exact is always judged)
        result.timeout_ok = _blackhole_found_in_time(run)
    if spec.scenario == "TC5":
        result.timeout_ok = all(c.ok for c in checks if c.name.startswith("TC5"))
    result.status = "pass" if all(c.ok for c in checks) else "fail"


def _logs_check(run: _Run, logs: LogCapture) -> Check:
    """No protocol-error close, exception or ERROR line in the run's logs (server,
    client, proxy, ASGI server, asyncio), each offending line quoted."""
    lines = list(logs.lines)
    findings = scan(lines)
    t0 = run.t_start or (lines[0].t if lines else 0.0)
    detail = "; ".join(f.describe(t0) for f in findings[:3])
    if len(findings) > 3:
        detail += f" (and {len(findings) - 3} more: see client.log and server.log)"
    return Check(
        "logs clean: no protocol-error close, exception or ERROR line (server and client)",
        not findings,
        detail or f"{len(lines)} lines, none wrong",
    )


def _errors(run: _Run) -> str:
    errs = [f"{type(r.error).__name__}: {r.error}" for r in run.recs if r.error is not None]
    errs += [f"{type(r.error).__name__}: {r.error}" for r in run.resumed_recs if r.error]
    if not errs:
        return ""
    return f" ({len(errs)} ended with an error, e.g. {errs[0][:300]})"


def _merged(rec: StreamRecorder, resumed: StreamRecorder) -> StreamRecorder:
    """A recorder holding both clients' events and the second's answer (TC5 'long')."""
    merged = StreamRecorder(resumed.stream, rec.expected, key=rec.key)
    merged.events = rec.events + resumed.events
    merged.answer = resumed.answer
    return merged


def _bytes_at(rec: StreamRecorder, t: float) -> int:
    n = 0
    for ev, at in zip(rec.events, rec.times, strict=False):
        if at > t:
            break
        if ev.kind <= Kind.DATA:
            n += len(ev.body.encode())
    return n


def _timings(run: _Run, m: Metrics, t_fault: float, tc5_long: bool) -> None:
    """Detection from the first fault; reconnection and recovery from the first fault,
    or from when the path came back for a condition that held it down for a set time
    (nothing can reconnect over a path that drops everything)."""
    t_back = t_fault
    if run.spec.condition in PATH_DOWN_CONDITIONS and run.t_restored is not None:
        t_back = run.t_restored
    detections: list[float] = []
    reconnects: list[float] = []
    for w in run.watches:
        d = w.first("disconnected", t_fault - 1e-6)
        if d is None:
            continue
        detections.append(d.at - t_fault)
        c = w.first("connected", max(d.at, t_back))
        if c is not None and not tc5_long:
            reconnects.append(c.at - t_back)
    resumes: list[float] = []
    recoveries: list[float] = []
    for rec in run.recs:
        if not run.open_at(rec):
            continue  # this stream was complete before the fault
        w = run.watches[run.owner.get(id(rec), 0)]
        # every reconnection that got to replay: connected -> first event on it
        for c in (e for e in w.events if e.kind == "connected" and e.at > t_fault):
            if rec.ended_at is not None and c.at > rec.ended_at:
                break
            drop = w.first("disconnected", c.at)
            first = rec.first_event_after(c.at)
            if first is not None and (drop is None or first <= drop.at):
                resumes.append(first - c.at)
            elif first is None:
                res = w.first("resumed", c.at)
                if res is not None and (drop is None or res.at <= drop.at):
                    resumes.append(res.at - c.at)
        ended = rec.ended_at
        # (a stream complete before the path came back had nothing to recover after it)
        if ended is not None and rec.error is None and not tc5_long and ended >= t_back:
            recoveries.append(ended - t_back)
    samples = run.samples
    samples["detection"] = [round(x, 4) for x in detections]
    samples["reconnect"] = [round(x, 4) for x in reconnects]
    samples["resume"] = [round(x, 4) for x in resumes]
    samples["recovery"] = [round(x, 4) for x in recoveries]
    if detections:
        m.detection_s = max(detections)
        m.detection_p50_s = percentile(detections, 0.5)
    if reconnects:
        m.reconnect_s = max(reconnects)
    if resumes:
        m.resume_s = max(resumes)
        m.resume_p50_s = percentile(resumes, 0.5)
    if recoveries:
        m.recovery_s = max(recoveries)
        m.recovery_p50_s = percentile(recoveries, 0.5)


#: how the client says it found a silent link: nothing heard, or its ping unanswered
_SILENCE = re.compile(
    r"(?:no frame|ping unanswered) for ([0-9.]+)s \(limit ([0-9.]+)s(?:, ([0-9.]+)s late)?\)"
)


def _blackhole_found_in_time(run: _Run) -> bool:
    """A silent link must be declared dead by the client's silence timeout (nothing heard,
    or its ping unanswered), no later than its own limit plus one watchdog period (0.25 s)
    and 0.1 s, and that limit must stay
    within ``3 x heartbeat + 2 s`` (the RTT term cannot run away). Time the client's own
    loop was busy (the watchdog ran late: e.g. validating a multi-MB JSON part against
    its schema) is the process's, not the rule's, and is not counted against it."""
    ok = True
    found = False
    for w in run.watches:
        for ev in w.events:
            m = _SILENCE.search(ev.cause) if ev.kind == "disconnected" else None
            if m is not None:
                found = True
                quiet, limit = float(m.group(1)), float(m.group(2))
                late = float(m.group(3) or 0.0)
                ok = ok and quiet - late <= limit + 0.35 and limit <= 3 * HEARTBEAT + 2.0
    return ok and found


@dataclass(slots=True)
class _Episode:
    stream: str
    conn: int
    after: int
    max_sent: int
    first_replayed: int | None
    inflight: float
    resent: float
    resent_events: int

    @property
    def position_ok(self) -> bool:
        return (self.first_replayed is None or self.first_replayed == self.after + 1) and (
            self.after <= self.max_sent
        )

    @property
    def within_limit(self) -> bool:
        return self.resent <= self.inflight + FRAME_CAP

    def describe(self) -> str:
        return (
            f"stream {self.stream[:8]} conn {self.conn}: resume after {self.after}, first "
            f"replayed {self.first_replayed}, server had sent up to {self.max_sent}; "
            f"re-sent {self.resent:,.0f} B for {self.inflight:,.0f} B in flight"
        )


def _resend(run: _Run) -> list[_Episode]:
    """Per stream and reconnection: what the client asked for, what the server re-sent,
    and what had been in flight (from the server's sequence trace)."""
    tap = run.h.tap
    if tap is None:
        return []
    frames = tap.frames()
    ids = {r.stream.id for r in run.recs if r.stream.id}
    by_stream: dict[str, list[Any]] = {s: [] for s in ids}
    for f in frames:
        if f.stream in by_stream and f.kind in ("events", "resume"):
            by_stream[f.stream].append(f)
    out: list[_Episode] = []
    for stream, fs in by_stream.items():
        latest: dict[int, float] = {}  # seq -> bytes of its latest send (prorated)
        max_sent = 0
        conns: list[int] = []
        for f in fs:
            if f.conn not in conns:
                conns.append(f.conn)
        for conn in conns:
            here = [f for f in fs if f.conn == conn]
            resume = next((f for f in here if f.kind == "resume"), None)
            evs = [f for f in here if f.kind == "events"]
            if resume is not None and (max_sent or conn != conns[0]):
                after = resume.seq
                inflight = sum(latest.get(s, 0.0) for s in range(after + 1, max_sent + 1))
                resent = 0.0
                resent_events = 0
                for f in evs:
                    overlap = max(0, min(f.last, max_sent) - f.seq + 1)
                    if overlap:
                        resent += f.nbytes * overlap / f.count
                        resent_events += overlap
                out.append(
                    _Episode(
                        stream,
                        conn,
                        after,
                        max_sent,
                        evs[0].seq if evs else None,
                        inflight,
                        resent,
                        resent_events,
                    )
                )
            for f in evs:
                per = f.nbytes / f.count if f.count else 0.0
                for s in range(f.seq, f.last + 1):
                    latest[s] = per
                max_sent = max(max_sent, f.last)
    return out


def _scenario_checks(
    run: _Run, result: RunResult, base: Baseline, episodes: list[_Episode]
) -> list[Check]:
    spec = run.spec
    sc = spec.scenario
    m = result.metrics
    out: list[Check] = []
    recs = run.recs
    if sc == "TC1":
        allowed, why = _tc1_allowance(run, base)
        ok = m.total_s is not None and m.total_s <= allowed + 5.0
        out.append(
            Check(
                "TC1 total time <= baseline + 5 s",
                ok,
                f"{_s(m.total_s)} vs baseline {base.total_s:.2f} s{why}",
            )
        )
    if sc in ("TC2", "TC4", "TC9"):
        bad = []
        for rec, _ in _streams_of(run):
            if rec.answer is None:
                continue
            for pid, part in rec.answer.parts.items():
                if part.kind != "json":
                    continue
                try:
                    value = part.value
                    if part.schema:
                        jsonschema.validate(value, part.schema)
                    assert rec.expected is not None
                    if value != rec.expected.part_json(pid):
                        bad.append(f"{pid}: differs from the generated document")
                    if part.error:
                        bad.append(f"{pid}: part error {part.error}")
                except (ValueError, jsonschema.ValidationError) as exc:
                    bad.append(f"{pid}: {exc}")
        out.append(
            Check(
                "TC2 final JSON equals the generated document and validates against its schema",
                not bad,
                "; ".join(bad[:3]) or "all JSON parts valid",
            )
        )
    if sc == "TC2":
        snap = (run.client_snapshot or {}).get("streams", {})
        partial = [s.get("json_partial_ok") for s in snap.values()]
        ok = all(p is not False for p in partial)
        out.append(
            Check(
                "TC2 the partial JSON held at the cut parses to a value",
                ok,
                f"partial parse at the cut: {partial}",
            )
        )
    if sc in ("TC3", "TC7"):
        bad = []
        for rec, _ in _streams_of(run):
            assert rec.expected is not None
            want = [p.id for p in rec.expected.parts]
            if rec.answer is None:
                bad.append("no answer")
                continue
            if rec.answer.order != want:
                bad.append(f"order {rec.answer.order} != {want}")
            twice = [p for p, n in rec.part_starts.items() if n != 1]
            if twice:
                bad.append(f"parts started more than once: {twice}")
            for pid in want:
                got = rec.answer.parts.get(pid)
                if got is None or not got.ended or got.text != rec.expected.body(pid):
                    bad.append(f"part {pid} incomplete or different")
        cs: dict[str, Any] = (run.client_snapshot or {}).get("streams", {})
        states: dict[str, str] = next(iter(cs.values())).get("parts", {}) if cs else {}
        out.append(
            Check(
                "TC3 parts tracked: each complete, in order, started once",
                not bad,
                "; ".join(bad[:3])
                or "at the cut: "
                + (", ".join(f"{k} {v}" for k, v in states.items()) or "no snapshot"),
            )
        )
    if sc == "TC3":
        out.append(_tc3_parts_at_cut(run))
    if sc == "TC4":
        snap = run.snapshot or {}
        heads = {k: v.get("head") for k, v in snap.get("streams", {}).items()}
        in_flight = [r for r in recs if run.open_at(r)]
        out.append(
            Check(
                "TC4 several streams mid-stream at the cut, each buffered in the log",
                len(in_flight) >= 2 and len(heads) == len(recs),
                f"{len(in_flight)} of {len(recs)} streams unfinished at the cut; log heads "
                f"at the cut: {sorted(heads.values())}",
            )
        )
    if sc == "TC5":
        out.extend(_tc5_checks(run))
    if sc == "TC6":
        calls = [run.h.book.calls.get(r.key, 0) for r in recs]
        out.append(
            Check("TC6 the agent ran exactly once", calls == [1] * len(recs), f"runs: {calls}")
        )
        at = (run.t_fault - run.t_start) if run.t_fault is not None else None
        out.append(
            Check(
                "TC6 the fault hit within 100 ms of the start",
                at is not None and at <= 0.1,
                f"fault at {_s(at)} after the start",
            )
        )
        if spec.variant == "before_started":
            ok = any("'started' cut" in what for _, what in run.faults)
            retried = sum(1 for w in run.watches for e in w.events if e.kind == "connected") >= 2
            out.append(
                Check(
                    "TC6 'started' was lost on the wire and the start retried",
                    ok and retried,
                    f"cut fired: {ok}; reconnected: {retried}",
                )
            )
    if sc == "TC7":
        out.append(Check("TC7 at least four drops", m.drops >= 4, f"{m.drops} drops"))
    if sc == "TC8":
        over = [e for e in episodes if not e.within_limit]
        out.append(
            Check(
                "TC8 re-sent bytes <= in flight at the cut + one frame",
                not over,
                "; ".join(e.describe() for e in over[:2])
                or f"{len(episodes)} resumes: re-sent {m.bytes_resent or 0:,} B for "
                f"{m.bytes_inflight or 0:,} B in flight",
            )
        )
    if sc == "TC9":
        missing = []
        t_fault = run.t_fault
        if t_fault is not None:
            for rec in recs:
                ci = run.owner.get(id(rec), 0)
                drop = run.watches[ci].first("disconnected", t_fault - 1e-6)
                if drop is None or rec.settled_at is None or rec.settled_at <= drop.at:
                    continue  # it had its whole answer before its connection broke
                resumed = [
                    e for e in run.watches[ci].events if e.kind == "resumed" and e.at > drop.at
                ]
                if not any(e.stream == rec.stream.id for e in resumed):
                    missing.append(rec.stream.id[:8])
        out.append(
            Check(
                "TC9 every interrupted stream was resumed by its own client",
                not missing,
                f"{len(missing)} streams never resumed"
                if missing
                else f"{len(recs)} streams over {len(run.clients)} connections",
            )
        )
    return out


def _tc3_parts_at_cut(run: _Run) -> Check:
    """TC3: what the client held at the cut, part by part: complete parts (exactly the
    generated body) first, then at most one partial part (a prefix of its body: all of
    it when only its ``part_end`` is missing),
    then missing ones, in the generated order; and every part partial or missing then
    complete and identical at the end."""
    name = "TC3 part states at the cut: complete, then one partial, then missing; all whole"
    t = run.t_fault
    rec = run.recs[0] if run.recs else None
    if t is None or rec is None or rec.expected is None or not run.open_at(rec):
        return Check(name, True, "the fault hit after the answer had fully arrived")
    expected = rec.expected
    held = rec.events[: rec.count_at(t)]
    bodies: dict[str, list[str]] = {}
    ended: set[str] = set()
    for e in held:
        if e.kind == Kind.PART_START:
            bodies.setdefault(e.part, [])
        elif e.kind <= Kind.DATA:
            bodies.setdefault(e.part, []).append(e.body)
        elif e.kind == Kind.PART_END:
            ended.add(e.part)
    bad: list[str] = []
    states: list[str] = []
    shown: list[str] = []
    for p in expected.parts:
        want = expected.body(p.id)
        if p.id not in bodies:
            state = "missing"
        else:
            got = "".join(bodies[p.id])
            state = "complete" if p.id in ended else "partial"
            if state == "complete" and got != want:
                bad.append(f"{p.id} complete at the cut but not the generated body")
            # partial: a prefix of its body, possibly all of it (every chunk arrived,
            # its part_end not yet: the full tier's final-moment cuts meet this)
            if state == "partial" and not want.startswith(got):
                bad.append(f"{p.id} partial at the cut but not a prefix of its body")
        states.append(state)
        size = f" {len(''.join(bodies.get(p.id, []))):,}/{len(want):,} chars"
        shown.append(f"{p.id} {state}" + (size if state == "partial" else ""))
    order = "".join(x[0] for x in states)  # c..cp?m..
    if not re.fullmatch(r"c*p?m*", order):
        bad.append(f"states out of order: {', '.join(states)}")
    final = rec.answer
    for p, state in zip(expected.parts, states, strict=True):
        if state == "complete":
            continue
        got_part = final.parts.get(p.id) if final is not None else None
        if got_part is None or not got_part.ended or got_part.text != expected.body(p.id):
            bad.append(f"{p.id} ({state} at the cut) not complete and identical at the end")
    return Check(name, not bad, "; ".join(bad[:3]) or "at the cut: " + ", ".join(shown))


async def _tc4_log_at_cut(run: _Run) -> Check:
    """TC4: every stream's log verified at the cut (StateVerifier then), and the log at
    the cut is a prefix of the final one: the final chain's digest at the cut's head is
    the head digest read at the cut."""
    name = "TC4 every log intact at the cut (verified then) and a prefix of the final log"
    snap = (run.snapshot or {}).get("streams", {})
    if run.t_fault is None or not snap:
        return Check(name, False, "no snapshot at the cut")
    bad: list[str] = []
    for rec in run.recs:
        sid = rec.stream.id
        verdict = run.cut_verdicts.get(sid)
        if verdict is None:
            bad.append(f"{sid[:8]}: not verified at the cut")
        elif not verdict.ok:
            bad.append(f"at the cut: {verdict.detail}")
        info = snap.get(sid)
        if info is None:
            bad.append(f"{sid[:8]}: not in the log at the cut")
            continue
        head = int(info["head"])
        if head:
            now = await run.h.digest_at(sid, head)
            if now is None or now.hex() != info["head_digest"]:
                bad.append(f"{sid[:8]}: the final log differs from the log at the cut at {head}")
    heads = sorted(int(v["head"]) for v in snap.values())
    return Check(name, not bad, "; ".join(bad[:3]) or f"{len(snap)} logs at heads {heads} ok")


def _tc1_allowance(run: _Run, base: Baseline) -> tuple[float, str]:
    """The fault-free time TC1's "+ 5 s" is counted from: the baseline, at the throttled
    rate on a throttled link, plus the time the path was down for a condition that held
    it down (nothing can arrive meanwhile)."""
    spec = run.spec
    allowed, why = base.total_s, ""
    if spec.condition == "throttled":
        allowed = base.total_s / spec.profile_info.throttle
        why = f" (÷ {spec.profile_info.throttle:g}: the throttled rate)"
    if spec.condition in PATH_DOWN_CONDITIONS and run.down_until and run.t_fault:
        down = run.down_until - run.t_fault
        allowed += down
        why += f" (+ {down:.1f} s the path was down)"
    return allowed, why


#: Conditions that hold the path down and that unbroken must find before it comes back:
#: the check's name, and what was lost meanwhile.
_FOUND_CHECKS: dict[str, tuple[str, str]] = {
    "receive_only": (
        "receive-only failure found by unbroken before the direction came back",
        "the client's frames were dropped",
    ),
    "kernel_receive_only": (
        "receive-only failure (kernel) found by unbroken before the path came back",
        "the client's data segments were dropped",
    ),
    "kernel_blackhole": (
        "silent path (kernel) found by unbroken before the path came back",
        "every packet was dropped",
    ),
}


def _condition_checks(run: _Run, result: RunResult) -> list[Check]:
    """What the conditions beyond the seed's five must show: a receive-only failure is
    found by unbroken itself, a long silent outage is ridden out, a throttled link stays
    throttled through the resume."""
    spec = run.spec
    out: list[Check] = []
    t_fault = run.t_fault
    if spec.condition in _FOUND_CHECKS and t_fault is not None and run.down_until:
        end = run.down_until
        late: list[str] = []
        found: list[float] = []
        stalled = 0
        for ci, w in enumerate(run.watches):
            recs = [r for r in run.recs if run.owner.get(id(r), 0) == ci and run.open_at(r)]
            # a stream that stalled: still incomplete when the direction came back
            if not any(r.settled_at is None or r.settled_at > end for r in recs):
                continue
            stalled += 1
            d = w.first("disconnected", t_fault - 1e-6)
            if d is not None and d.at < end:
                found.append(d.at - t_fault)
            else:
                late.append(
                    f"client {ci}: " + ("never" if d is None else f"{d.at - t_fault:.2f} s")
                )
        window = f"{end - t_fault:.1f} s"
        if not stalled:
            detail = (
                "the failure stalled nothing (the rest of every answer fitted in the "
                "server's flow window)"
            )
        elif late:
            detail = f"not found while {_FOUND_CHECKS[spec.condition][1]} ({window}): "
            detail += "; ".join(late[:3])
        else:
            times = ", ".join(f"{x:.2f} s" for x in found[:5])
            detail = f"{stalled} stalled connections found in {times} (the failure lasted {window})"
        out.append(Check(_FOUND_CHECKS[spec.condition][0], not late, detail))
    if spec.condition == "long_outage" and t_fault is not None:
        gave_up = [w.index for w in run.watches if any(e.kind == "exhausted" for e in w.events)]
        back = run.t_restored
        came_back = [
            w.index
            for w in run.watches
            if back is not None and w.first("connected", back) is not None
        ]
        needed = {run.owner.get(id(r), 0) for r in run.recs if run.open_at(r)}
        ok = not gave_up and back is not None and needed <= set(came_back)
        down = (run.down_until or t_fault) - t_fault
        out.append(
            Check(
                "long silent outage ridden out: no client gave up, each reconnected after it",
                ok,
                f"{down:.0f} s silent; gave up: {gave_up or 'none'}; reconnected after it: "
                f"{len(set(came_back) & needed)} of {len(needed)} clients",
            )
        )
    if spec.condition == "kernel_loss":
        dropped = sum(f.dropped() for f in run.kernel)
        out.append(
            Check(
                "the path stayed lossy from the start of the answer to its end, and lost packets",
                run.lossy_at_end and dropped > 0,
                f"{run.loss_percent:g} % loss both ways (nft numgen): {dropped:,} packets "
                "dropped" + ("" if run.lossy_at_end else "; the loss was gone at the end"),
            )
        )
    if spec.condition == "throttled":
        out.append(
            Check(
                "the link stayed throttled from the start of the answer to its end",
                run.throttled_at_end,
                f"{run.throttle_rate / 1000:,.0f} KB/s both ways"
                + ("" if run.throttled_at_end else "; the throttle was gone at the end"),
            )
        )
    return out


def _tc5_checks(run: _Run) -> list[Check]:
    spec = run.spec
    policy = _policy(spec)
    out: list[Check] = []
    watch = run.watches[0]
    client = run.clients[0]
    # the delays used, episode by episode, against the protocol's Backoff with that seed
    rng = random.Random(1000 * spec.repeat)
    used = [e for e in watch.events if e.kind in ("reconnecting", "exhausted")]
    expected: list[float] = []
    got: list[float] = []
    backoff: Backoff | None = None
    for ev in used:
        if ev.kind == "exhausted":
            continue
        if ev.attempt == 1 or backoff is None:
            backoff = Backoff(policy, 0.0, rng)
        want = backoff.next_delay(0.0)
        expected.append(round(want if want is not None else -1.0, 9))
        got.append(round(ev.delay, 9))
    last_schedule = list(client.backoff.schedule) if client.backoff is not None else []
    tail = [e.delay for e in used if e.kind == "reconnecting"][-len(last_schedule) :]
    out.append(
        Check(
            "TC5 backoff delays equal protocol.backoff.Backoff's with the same seed and policy",
            got == expected
            and bool(got)
            and [round(x, 9) for x in last_schedule] == [round(x, 9) for x in tail],
            f"delays {', '.join(f'{d * 1000:.0f} ms' for d in got[-8:])}",
        )
    )
    if _gives_up(spec):
        errors = [r.error for r in run.recs]
        ex = errors[0] if errors else None
        ok = isinstance(ex, ReconnectExhausted)
        detail = f"{type(ex).__name__}: {ex}" if ex is not None else "no error"
        out.append(Check("TC5 ReconnectExhausted after the budget", ok, detail[:300]))
        deadline = policy.deadline if policy.deadline is not None else math.inf
        seen = _episode_seconds(watch.events)
        elapsed = ex.elapsed if isinstance(ex, ReconnectExhausted) else math.nan
        attempts = ex.attempts if isinstance(ex, ReconnectExhausted) else 0
        times = (
            f"elapsed {elapsed:.2f} s (the client's), "
            f"{'—' if seen is None else f'{seen:.2f} s'} (seen: disconnected → exhausted) "
            f"of {deadline:g} s"
        )
        if spec.variant == "long":
            out.append(
                Check(
                    "TC5 max attempts respected, within the deadline",
                    ok
                    and attempts == policy.max_attempts
                    and elapsed <= deadline
                    and seen is not None
                    and seen <= deadline + DEADLINE_SLACK,
                    f"attempts {attempts} of {policy.max_attempts}, {times}",
                )
            )
        else:
            out.append(
                Check(
                    "TC5 gave up at the deadline, never past it, although every attempt "
                    "hung (silent drops)",
                    ok
                    and attempts >= 2
                    and elapsed <= deadline + DEADLINE_SLACK
                    and seen is not None
                    and seen <= deadline + DEADLINE_SLACK,
                    f"{times} (+{DEADLINE_SLACK:g} s allowed for the loop's lateness); "
                    f"{attempts} attempts",
                )
            )
        text = str(ex) if ex is not None else ""
        out.append(
            Check(
                "TC5 the error says what happened and what to do",
                "gave up reconnecting" in text and "cursor" in text,
                text[:200],
            )
        )
        resumed = run.resumed_recs
        ok = bool(resumed) and all(
            r.answer is not None and r.answer.status == "completed" for r in resumed
        )
        out.append(
            Check(
                "TC5 a new client resumed from the saved cursor and completed",
                ok,
                f"{len(resumed)} resumed; from seq "
                + ", ".join(str(r.answer.from_seq) for r in resumed if r.answer),
            )
        )
    else:
        exhausted = any(e.kind == "exhausted" for e in watch.events)
        recovered = all(r.answer is not None and r.error is None for r in run.recs)
        out.append(
            Check(
                "TC5 a shorter outage is ridden out by the same client",
                recovered and not exhausted,
                f"exhausted: {exhausted}; recovered: {recovered}",
            )
        )
    return out


def _episode_seconds(events: list[ConnectionEvent]) -> float | None:
    """Seconds from the ``disconnected`` that began the last reconnect episode (the one
    before its attempt 1) to ``exhausted``, as the client's events saw them."""
    exhausted = next((e for e in events if e.kind == "exhausted"), None)
    if exhausted is None:
        return None
    start: ConnectionEvent | None = None
    last_drop: ConnectionEvent | None = None
    for e in events:
        if e.at > exhausted.at:
            break
        if e.kind == "disconnected":
            last_drop = e
        elif e.kind == "reconnecting" and e.attempt == 1:
            start = last_drop
    if start is None:
        start = last_drop
    return None if start is None else exhausted.at - start.at


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f} s"


# ------------------------------------------------------------------ artefacts
async def _write_artefacts(run: _Run, result: RunResult, logs: LogCapture, root: Path) -> str:
    """Client and server connection logs, the proxy's fault log, the sequence trace, the
    stream-log snapshot at the cut and a timing breakdown, in ``root/<run id>/``."""
    d = root / result.id
    d.mkdir(parents=True, exist_ok=True)
    t0 = run.t_start or (run.faults[0][0] if run.faults else time.monotonic())
    # by where they ran: the server's thread, or this one (the clients and the proxy)
    on_server = [line for line in logs.lines if line.thread == SERVER_THREAD]
    here = [line for line in logs.lines if line.thread != SERVER_THREAD]
    lines = [
        line.format(t0)
        for line in here
        if not line.logger.startswith(("unbroken.server", "unbroken.store", "unbroken.scenarios"))
    ]
    for w in run.watches:
        for ev in w.events:
            fields = {k: v for k, v in _event_dict(ev).items() if v not in ("", 0, None, 0.0)}
            lines.append(f"{ev.at - t0:9.4f} EVENT   client[{w.index}]: {fields}")
    (d / "client.log").write_text("\n".join(sorted(lines, key=_t_of)) + "\n", "utf-8")
    server = [line.format(t0) for line in on_server] + [
        line.format(t0)
        for line in here
        if line.logger.startswith(("unbroken.server", "unbroken.store"))
    ]
    if run.h.tap is not None:
        for c in run.h.tap.connections:
            closed = f"{c.closed - t0:.4f}" if c.closed is not None else "open"
            server.append(
                f"{c.opened - t0:9.4f} CONN    tap: connection {c.id} from {c.client}, "
                f"{len(c.frames)} frames, {c.bytes_out:,} bytes out, closed at {closed}"
            )
    (d / "server.log").write_text("\n".join(sorted(server, key=_t_of)) + "\n", "utf-8")
    (d / "proxy-faults.jsonl").write_text(
        "".join(r.to_json() + "\n" for r in run.h.proxy.records), "utf-8"
    )
    with (d / "sequence.jsonl").open("w", encoding="utf-8") as f:
        if run.h.tap is not None:
            for fr in run.h.tap.frames():
                if fr.kind in ("hb", "pong", "ping"):
                    continue
                row = fr.to_dict()
                row["t"] = round(fr.t - t0, 6)
                f.write(json.dumps({"src": "server", **row}) + "\n")
        for rec in run.recs + run.resumed_recs:
            for seg in _segments(rec, t0):
                f.write(json.dumps({"src": "client", "stream": rec.stream.id, **seg}) + "\n")
    snapshot = {
        "taken_after_fault_s": None
        if run.snapshot is None or run.t_fault is None or "t" not in run.snapshot
        else round(run.snapshot["t"] - run.t_fault, 4),
        "server": run.snapshot,
        "client": run.client_snapshot,
        "log_at_cut": await _log_window(run),
    }
    (d / "snapshot.json").write_text(json.dumps(snapshot, indent=1, default=str), "utf-8")
    timing = {
        "run": result.id,
        "t_start": 0.0,
        "t_started": round(run.t_started - t0, 4),
        "t_fault": None if run.t_fault is None else round(run.t_fault - t0, 4),
        "faults": [{"t": round(t - t0, 4), "what": w} for t, w in run.faults],
        "metrics": result.metrics.to_dict(),
        "streams": [
            {
                "stream": r.stream.id,
                "answer": r.key,
                "ended": None if r.ended_at is None else round(r.ended_at - t0, 4),
                "events": len(r.events),
                "error": None if r.error is None else repr(r.error),
            }
            for r in run.recs + run.resumed_recs
        ],
    }
    (d / "timing.json").write_text(json.dumps(timing, indent=1), "utf-8")
    (d / "verdicts.json").write_text(
        json.dumps(
            {
                "status": result.status,
                "checks": [c.to_dict() for c in result.checks],
                "verdicts": result.verdicts,
                "log_findings": [f.describe(t0) for f in scan(logs.lines)],
                "error": result.error,
                "notes": result.notes,
            },
            indent=1,
        ),
        "utf-8",
    )
    return f"{root.name}/{result.id}"


def _t_of(line: str) -> float:
    try:
        return float(line.split()[0])
    except (ValueError, IndexError):
        return 0.0


def _event_dict(ev: ConnectionEvent) -> dict[str, Any]:
    return {
        "kind": ev.kind,
        "cause": ev.cause,
        "code": ev.code,
        "attempt": ev.attempt,
        "delay": round(ev.delay, 4),
        "stream": ev.stream[:10],
        "from_seq": ev.from_seq,
        "head": ev.head,
        "reason": ev.reason,
    }


def _segments(rec: StreamRecorder, t0: float) -> list[dict[str, Any]]:
    """Contiguous arrivals (no gap > 50 ms) as seq ranges with their times."""
    out: list[dict[str, Any]] = []
    start = 0
    n = len(rec.events)
    for i in range(1, n + 1):
        if (
            i == n
            or rec.times[i] - rec.times[i - 1] > 0.05
            or rec.events[i].seq != rec.events[i - 1].seq + 1
        ):
            out.append(
                {
                    "from": rec.events[start].seq,
                    "to": rec.events[i - 1].seq,
                    "t0": round(rec.times[start] - t0, 6),
                    "t1": round(rec.times[i - 1] - t0, 6),
                }
            )
            start = i
    return out


async def _log_window(run: _Run) -> dict[str, Any]:
    """The stream log as it was at the cut (the log is append-only: its first ``head``
    events then), around the head: 40 events before it and the head's digest."""
    if not run.snapshot or "streams" not in run.snapshot:
        return {}
    out: dict[str, Any] = {}
    h = run.h
    for stream, info in list(run.snapshot["streams"].items())[:8]:
        head = int(info["head"])

        async def window(s: str = stream, hd: int = head) -> list[dict[str, Any]]:
            _, events = await h.store.read_all(s)
            return [
                {
                    "seq": e.seq,
                    "kind": Kind(e.kind).name.lower(),
                    "part": e.part,
                    "bytes": len(e.body),
                }
                for e in events[max(0, hd - 40) : hd]
            ]

        try:
            out[stream] = {"head_at_cut": head, "last_events": await h.server.call(window)}
        except Exception as exc:
            out[stream] = {"error": repr(exc)}
    return out


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
    "REPORT_SCHEMA",
    "Baseline",
    "answers_for",
    "clear_baselines",
    "layout",
    "pace",
    "run_matrix",
    "run_one",
]
