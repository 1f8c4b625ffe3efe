"""Chaos against your own service: the scenarios' faults played against your agents.

The service is your :class:`~unbroken.server.Unbroken` app, served on loopback behind
the fault proxy (:class:`Service` with ``app=``), or a service already running at a
``ws://`` URL with the proxy put in front of it (``url=``). The streams are your agents
with inputs you name (:class:`Call`). No expected text is needed: the fault-free run of
the same agent and input is the reference (:func:`reference_run`), and a stream is exact
when the client verified its digest chain and end digest, its events (seqs, kinds,
parts, bytes) equal the reference's, and, for an app served here, the server's log of
it verifies with the same end digest (:func:`judge`).

A scenario runs against your service when its faults are all on the network path
(its case's ``foreign_app`` is None; see docs/how-to/chaos-your-app.md for which);
the others are reported skipped with the reason. Used by ``unbroken chaos run
--app/--url`` and the pytest plugin's ``run_scenario`` fixture (with a ``chaos_app``
fixture of yours).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from ..chaos import StateVerifier
from ..chaos.verifier import EventLogReader
from ..errors import ConfigError
from ..protocol.events import Event, payload
from ..server import Unbroken
from .artefacts import write_artefacts
from .cases import CASES, case_for
from .catalog import KERNEL_CONDITIONS, SCENARIO_BY_ID, RunSpec, select
from .context import Baseline, RunState
from .harness import ChaosHarness, LogCapture, ResourceSampler, StreamRecorder
from .run import AgentStreams, _stream_all
from .run_result import Check, Metrics, RunResult
from .runner import _thin


# ------------------------------------------------------------------ what is tested
@dataclass(frozen=True, slots=True)
class Service:
    """The service under test: your app (served here) or a URL (already running)."""

    app: Unbroken | None = None
    url: str | None = None
    """``ws://host:port/path`` of a running service (the proxy goes in front of it)."""
    path: str = "/ws"
    """Where an app served here answers WebSockets."""
    token: str | None = None
    """The clients' token, for a service that requires authentication."""

    def __post_init__(self) -> None:
        if (self.app is None) == (self.url is None):
            raise ConfigError("name the service under test: an app or a url (one of them)")

    def harness(self, **options: Any) -> ChaosHarness:
        """A :class:`ChaosHarness` in front of this service."""
        if self.app is not None:
            return ChaosHarness(app=self.app, path=self.path, **options)
        return ChaosHarness(url=self.url, **options)

    @property
    def where(self) -> str:
        """How reports name it."""
        if self.url is not None:
            return self.url
        return f"your app (served here at {self.path})"


@dataclass(frozen=True, slots=True)
class Call:
    """One of your agents and its input: what a stream runs."""

    agent: str
    input: Any = None


EventKey = tuple[int, int, str, bytes]
"""(seq, kind, part, payload bytes) of one event: what exactness compares."""


def fingerprint(events: Iterable[Event]) -> list[EventKey]:
    """What exactness compares of each event."""
    return [(e.seq, int(e.kind), e.part, bytes(payload(e))) for e in events]


@dataclass(frozen=True, slots=True)
class Reference:
    """The fault-free run of a :class:`Call`: its events, time and bytes on the wire."""

    call: Call
    events: tuple[EventKey, ...]
    seconds: float
    conn_bytes: int
    """Bytes the connection carried to the client (handshake and welcome included)."""
    repeatable: bool = True
    """Its events are compared (False: the agent's answer differs from run to run, so
    a stream is judged by its digest chain alone)."""


async def reference_run(
    service: Service, call: Call, *, repeatable: bool = True, limit: float = 300.0
) -> Reference:
    """Run ``call`` without a fault (twice when ``repeatable``, to check it answers the
    same; each within ``limit`` seconds); the reference its faulted runs are judged
    against."""
    async with service.harness() as h:
        return await reference_in(h, call, repeatable=repeatable, token=service.token, limit=limit)


async def reference_in(
    h: ChaosHarness,
    call: Call,
    *,
    repeatable: bool = True,
    token: str | None = None,
    limit: float = 300.0,
) -> Reference:
    """:func:`reference_run` through a harness already running (the proxy without a
    fault): an app is served by one server at a time, so a test whose harness serves it
    takes its reference here."""
    seen: list[tuple[list[EventKey], float, int]] = []
    for _ in range(2 if repeatable else 1):
        async with h.client(token=token) as client:
            conn = h.proxy.history[-1]
            t0 = time.monotonic()
            rec = await h.stream(client, call.agent, call.input)
            await asyncio.wait_for(rec.done(), limit)
            if rec.error is not None or rec.answer is None or rec.answer.status != "completed":
                why = rec.error or (rec.answer.status if rec.answer is not None else "no end")
                raise ConfigError(
                    f"the fault-free run of agent {call.agent!r} did not complete ({why}): "
                    "chaos needs an agent that answers without faults first"
                )
            end = rec.ended_at if rec.ended_at is not None else time.monotonic()
            seen.append((fingerprint(rec.events), end - t0, conn.downstream.sent))
    if repeatable and seen[0][0] != seen[1][0]:
        raise ConfigError(
            f"agent {call.agent!r} answered the same input differently in two fault-free "
            "runs: its answer is not repeatable, so it cannot be compared byte for byte; "
            "judge each stream by its digest chain alone (chaos run --any-answer; "
            "run_scenario(..., same_answer=False); repeatable=False here)"
        )
    return Reference(
        call,
        tuple(seen[0][0]),
        min(s[1] for s in seen),
        min(s[2] for s in seen),
        repeatable,
    )


# ------------------------------------------------------------------ judging a stream
@dataclass(frozen=True, slots=True)
class Judgement:
    """Whether one stream came through a fault exactly, and why not."""

    complete: bool
    """It ended ``completed``, its digest chain and end digest verified by the client."""
    exact: bool
    """Complete, and its events equal the reference's (and the server's log agrees)."""
    detail: str


def _first_difference(got: Sequence[EventKey], want: Sequence[EventKey]) -> str:
    for a, b in zip(got, want, strict=False):
        if a != b:
            return f"event {b[0]} differs from the fault-free run's"
    return f"{len(got)} events, the fault-free run had {len(want)}"


async def judge(
    h: ChaosHarness,
    rec: StreamRecorder,
    reference: Reference | None,
    *,
    resumed: StreamRecorder | None = None,
) -> Judgement:
    """Judge the stream ``rec`` (and ``resumed``: a new client that picked it up from
    the first one's saved cursor). Exact when: no error and status ``completed`` (the
    client checked every event against the digest chain and the end digest); seqs
    1..N once each; the events equal ``reference``'s (unless it is not repeatable);
    for an app served here, the server's log of the stream verifies and ends with the
    digest the client verified."""
    last = resumed if resumed is not None else rec
    events = list(rec.events)
    if resumed is not None:
        cut = resumed.events[0].seq if resumed.events else rec.last_seq + 1
        events = [e for e in events if e.seq < cut] + list(resumed.events)
    answer = last.answer
    if last.error is not None or answer is None:
        err = last.error
        return Judgement(False, False, f"{type(err).__name__}: {err}" if err else "no end")
    if answer.status != "completed":
        return Judgement(False, False, f"ended {answer.status}: {answer.error}")
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        return Judgement(True, False, "events missing or repeated (seqs not 1..N once each)")
    if reference is not None and reference.repeatable:
        got = fingerprint(events)
        if got != list(reference.events):
            return Judgement(True, False, _first_difference(got, reference.events))
    log = h.stream_log
    if log is not None:
        sid = last.stream.id
        if hasattr(log, "read_all"):  # the built-in stores: verify the log event by event
            verifier = StateVerifier(log=cast(EventLogReader, log))
            verdict = await h.server.call(
                lambda: verifier.buffer_integrity_verdict(sid, require_end=True)
            )
            if not verdict.ok:
                return Judgement(True, False, f"the server's log: {verdict.detail}")

        async def head() -> str:
            meta = await log.meta(sid)
            return meta.digest.hex() if meta is not None else ""

        logged = await h.server.call(head)
        if logged != answer.digest:
            return Judgement(True, False, "the end digest differs from the server's log's")
    how = "equal to the fault-free run's" if reference and reference.repeatable else "verified"
    return Judgement(True, True, f"{len(events)} events, digest chain {how}")


# ------------------------------------------------------------------ which runs
def skip_reason(scenario: str) -> str | None:
    """Why ``scenario`` does not run against your service (None: it does)."""
    record = SCENARIO_BY_ID.get(scenario)
    if record is None or not record.covered:
        return f"{scenario} is not covered yet"
    return case_for(scenario).foreign_app


def user_matrix(tier: Literal["quick", "full"] = "quick") -> list[RunSpec]:
    """The runs against your service: each scenario's runs of the tier whose faults are
    on the network path, one per (timing, condition, fault, variant) (the answer's size
    is your agent's); kernel-level conditions left out (they need the server in a
    network namespace). A scenario that does not apply contributes one run, reported
    skipped with its reason."""
    out: list[RunSpec] = []
    seen: set[tuple[str, str, str, str, str]] = set()
    for case in sorted(CASES.values(), key=lambda c: c.number):
        if case.id not in SCENARIO_BY_ID:
            continue
        rows = case.quick_rows() if tier == "quick" else case.full_rows()
        if case.foreign_app is not None:
            out.extend(rows[:1])
            continue
        for spec in rows:
            key = (spec.scenario, spec.timing, spec.condition, spec.fault, spec.variant)
            if spec.condition in KERNEL_CONDITIONS or key in seen:
                continue
            seen.add(key)
            out.append(spec)
    return out


def select_user_runs(
    tier: Literal["quick", "full"] = "quick",
    *,
    scenarios: Iterable[str] | None = None,
    timings: Iterable[str] | None = None,
    conditions: Iterable[str] | None = None,
    faults: Iterable[str] | None = None,
    repeat: int = 1,
) -> list[RunSpec]:
    """:func:`user_matrix` filtered like the built-in matrix (no sizes: the answer is
    your agent's)."""
    return select(
        user_matrix(tier),
        scenarios=scenarios,
        timings=timings,
        conditions=conditions,
        faults=faults,
        repeat=repeat,
    )


# ------------------------------------------------------------------ one run
def _baseline(refs: Sequence[Reference], spec: RunSpec) -> Baseline:
    n_clients, per_client = case_for(spec.scenario).layout(spec)
    per_stream = [refs[i % len(refs)].conn_bytes for i in range(n_clients * per_client)]
    return Baseline(
        total_s=max(r.seconds for r in refs),
        wire_bytes=sum(per_stream),
        cpu_s=0.0,
        conn_bytes=sum(per_stream[:per_client]),
    )


def _samples(run: RunState) -> dict[str, list[float]]:
    """Per connection: reconnect (fault, or path back, to connected again); per
    stream open at the fault: resume (connected again to its next event) and recovery
    (fault to its last event)."""
    out: dict[str, list[float]] = {"reconnect": [], "resume": [], "recovery": []}
    t = run.t_fault
    if t is None:
        return out
    since = run.t_restored or run.held_until or t
    back: dict[int, float] = {}
    for watch in run.watches:
        drop = watch.first("disconnected", t - 1e-6)
        if drop is None:
            continue
        again = watch.first("connected", max(drop.at, since))
        if again is not None:
            back[watch.index] = again.at
            out["reconnect"].append(again.at - since)
    for rec, resumed in run.streams():
        if not run.open_at(rec) or resumed is not None:
            continue
        ci = run.owner.get(id(rec), 0)
        if ci in back:
            nxt = rec.first_event_after(back[ci])
            if nxt is not None:
                out["resume"].append(nxt - back[ci])
        if rec.ended_at is not None and rec.error is None:
            out["recovery"].append(rec.ended_at - since)
    return out


async def run_user_spec(
    service: Service,
    refs: Sequence[Reference],
    spec: RunSpec,
    *,
    clock_origin: float | None = None,
    artefacts: Path | None = None,
    keep_artefacts: bool = False,
    isolate_logs: bool = False,
    sampler_sink: list[tuple[float, float, float]] | None = None,
) -> RunResult:
    """Play ``spec``'s faults against ``service``, its streams the references' calls
    (in rotation), and judge every stream against its reference. ``artefacts``: where
    a failed run's debugging files go (every run's with ``keep_artefacts``): the
    client's and (an app served here) the server's logs, the proxy's faults, the
    sequence trace, a timing breakdown. ``sampler_sink`` receives (seconds since
    ``clock_origin``, RSS MB, log MB) samples (an app served here whose log counts its
    bytes, as the built-in stores do)."""
    t_wall = time.monotonic()
    result = RunResult(spec, started_s=t_wall - (clock_origin or t_wall))
    reason = skip_reason(spec.scenario)
    if reason is None and spec.condition in KERNEL_CONDITIONS:
        reason = "kernel-level conditions need the server in a network namespace"
    if reason is not None:
        result.status, result.error = "skip", reason
        return result
    if not refs:
        raise ConfigError("no reference run: name at least one agent and input")
    streams = AgentStreams(
        calls=[(r.call.agent, r.call.input) for r in refs],
        events=[len(r.events) for r in refs],
        seconds=max(r.seconds for r in refs),
        token=service.token,
    )
    baseline = _baseline(refs, spec)
    try:
        with LogCapture(isolate=isolate_logs) as logs:
            async with service.harness(seed=spec.repeat) as h:
                logs.ensure_attached()  # uvicorn dropped its loggers' handlers on start
                run = RunState(spec, h, faulty=True, baseline=baseline)
                log = h.stream_log
                sampler = ResourceSampler(log) if hasattr(log, "total_bytes") else None
                if sampler is not None:
                    sampler.start()
                error: BaseException | None = None
                try:
                    await _stream_all(run, streams)
                except TimeoutError as exc:
                    error = exc
                finally:
                    if sampler is not None:
                        await sampler.stop()
                await _assess(run, refs, result)
                if sampler is not None:
                    result.metrics.log_peak_mb = sampler.peak_log_bytes / 2**20
                    result.metrics.rss_peak_mb = sampler.peak_rss / 2**20
                    if sampler_sink is not None:
                        origin = clock_origin if clock_origin is not None else t_wall
                        sampler_sink.extend(
                            (x.t - origin, x.rss / 2**20, x.log_bytes / 2**20)
                            for x in sampler.samples
                        )
                if error is not None:
                    result.status = "fail"
                    result.error = f"{type(error).__name__}: {error}".strip(": ")
                result.notes.extend(run.notes)
                if artefacts is not None and (keep_artefacts or not result.passed):
                    result.artefacts = await write_artefacts(run, result, logs, artefacts)
    except Exception as exc:
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}"
        result.notes.append(traceback.format_exc(limit=6))
    result.wall_s = time.monotonic() - t_wall
    return result


async def _assess(run: RunState, refs: Sequence[Reference], result: RunResult) -> None:
    case = case_for(run.spec.scenario)
    per_client = case.layout(run.spec)[1]
    judged: list[tuple[StreamRecorder, Judgement]] = []
    for rec, resumed in run.streams():
        ci = run.owner.get(id(rec), 0)
        k = int(rec.key.rsplit("-", 1)[-1]) if "-" in rec.key else 0
        ref = refs[(ci * per_client + k) % len(refs)]
        judged.append((rec, await judge(run.h, rec, ref, resumed=resumed)))
    result.streams = len(judged)
    result.streams_complete = sum(1 for _, j in judged if j.complete)
    result.streams_exact = sum(1 for _, j in judged if j.exact)
    bad = [(rec, j) for rec, j in judged if not j.exact]
    result.checks.append(
        Check(
            "every stream complete and exact (digest chain, fault-free run's events)",
            not bad and bool(judged),
            "; ".join(f"{rec.key}: {j.detail}" for rec, j in bad[:5])
            if bad
            else f"{len(judged)} streams; {judged[0][1].detail}"
            if judged
            else "no stream ran",
        )
    )
    hit = run.t_fault is not None and any(run.open_at(rec) for rec in run.recs)
    result.checks.append(
        Check(
            "the fault hit while the answer streamed",
            hit,
            "; ".join(what for _, what in run.faults[:3])
            if hit
            else "every stream had ended before the fault: the answer is too short for "
            f"this scenario (it takes {run.baseline.total_s if run.baseline else 0:.2f} s "
            f"without faults; starting the run's {len(run.recs)} streams took "
            f"{run.t_started - run.t_start:.2f} s): give the agent an input whose answer "
            "takes longer",
        )
    )
    gave_up = case.gives_up(run.spec)
    if gave_up:
        result.checks.append(
            Check(
                "the client gave up with the stream's cursor, a new client resumed it",
                bool(run.exhausted) and len(run.resumed_recs) == len(run.exhausted),
                f"{len(run.exhausted)} gave up, {len(run.resumed_recs)} resumed",
            )
        )
    samples = _samples(run)
    result.samples = {k: v for k, v in samples.items() if v}
    drops = sum(1 for w in run.watches for e in w.events if e.kind == "disconnected")
    result.metrics = Metrics(
        reconnect_s=max(samples["reconnect"]) if samples["reconnect"] else None,
        resume_s=max(samples["resume"]) if samples["resume"] else None,
        recovery_s=max(samples["recovery"]) if samples["recovery"] else None,
        baseline_s=run.baseline.total_s if run.baseline is not None else None,
        drops=drops,
        reconnects=sum(1 for w in run.watches for e in w.events if e.kind == "resumed"),
    )
    result.recovered = None if gave_up else (not bad and bool(judged))
    result.status = "pass" if all(c.ok for c in result.checks) else "fail"


# ------------------------------------------------------------------ many runs
ProgressHook = Callable[[RunSpec, RunResult | None], None]


@dataclass
class UserRuns:
    """What :func:`run_user_matrix` did."""

    results: list[RunResult] = field(default_factory=list)
    seconds: float = 0.0
    memory: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since the start, RSS MB, log MB) samples (an app served here)."""


async def run_user_matrix(
    service: Service,
    calls: Sequence[Call],
    specs: Sequence[RunSpec],
    *,
    repeatable: bool = True,
    on_progress: ProgressHook | None = None,
    stop: Callable[[], bool] | None = None,
    out_dir: Path | None = None,
    keep_artefacts: bool = False,
) -> UserRuns:
    """The references (one per call, fault-free), then every run of ``specs``; failed
    runs' artefacts in ``out_dir/artefacts`` (every run's with ``keep_artefacts``)."""
    origin = time.monotonic()
    refs = [await reference_run(service, c, repeatable=repeatable) for c in calls]
    out = UserRuns()
    for spec in specs:
        if stop is not None and stop():
            break
        if on_progress is not None:
            on_progress(spec, None)
        result = await run_user_spec(
            service,
            refs,
            spec,
            clock_origin=origin,
            artefacts=out_dir / "artefacts" if out_dir is not None else None,
            keep_artefacts=keep_artefacts,
            isolate_logs=True,
            sampler_sink=out.memory,
        )
        out.results.append(result)
        if on_progress is not None:
            on_progress(spec, result)
    out.seconds = time.monotonic() - origin
    out.memory = _thin(out.memory, 4000)
    return out


def load_app(target: str, app_dir: str = ".") -> Unbroken:
    """Import ``module:attribute`` (as ``unbroken serve`` does): your :class:`Unbroken`
    app."""
    from ..server.cli import load_target

    obj = load_target(target, app_dir)
    if isinstance(obj, Unbroken):
        return obj
    if callable(obj) and not isinstance(obj, type):
        with contextlib.suppress(TypeError):
            made = obj()
            if isinstance(made, Unbroken):
                return made
    raise ConfigError(
        f"{target} is not an Unbroken app (or a function returning one): chaos serves "
        "it behind the fault proxy; for an app mounted in another framework, run it and "
        "use --url ws://host:port/path"
    )


__all__ = [
    "Call",
    "Judgement",
    "Reference",
    "Service",
    "UserRuns",
    "fingerprint",
    "judge",
    "load_app",
    "reference_in",
    "reference_run",
    "run_user_matrix",
    "run_user_spec",
    "select_user_runs",
    "skip_reason",
    "user_matrix",
]
