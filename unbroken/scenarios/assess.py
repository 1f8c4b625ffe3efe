"""Judges a finished run: the generic checks every run must pass (every stream complete
and exact, the client's events and the server's log verified, every resume from the
right seq, the condition's own promises, clean logs), then the case's checks; and its
timings (detection, reconnection, resume, recovery) and the bytes re-sent. Nothing here
knows a scenario: what a case must show is its :meth:`.cases.Case.checks`."""

from __future__ import annotations

import re
from typing import Any

from ..chaos import Verdict
from ..client.response import parse_partial_json
from ..protocol.events import Kind
from .cases import Case
from .catalog import PATH_DOWN_CONDITIONS
from .context import HEARTBEAT, Baseline, RunState
from .harness import LogCapture, ResourceSampler, StreamRecorder
from .logscan import scan
from .run_result import Check, Metrics, RunResult
from .sequence import FRAME_CAP, resend_episodes
from .targets import percentile


def client_state(run: RunState) -> dict[str, Any]:
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


async def assess(
    run: RunState,
    case: Case,
    result: RunResult,
    base: Baseline | None,
    cpu: float,
    sampler: ResourceSampler,
    logs: LogCapture | None = None,
) -> None:
    """Fill ``result`` (checks, metrics, samples, roll-ups, status) from ``run``."""
    spec, h = run.spec, run.h
    checks: list[Check] = []
    result.streams = len(run.recs) + len(run.foreign)
    t_fault = run.t_fault
    complete = exact = 0
    client_bad: list[Verdict] = []
    log_bad: list[Verdict] = []
    for rec, resumed in run.streams():
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
    foreign_checks: list[Check] = []
    if run.foreign:
        f_complete, f_exact, foreign_checks = await _foreign(run, log_bad)
        complete += f_complete
        exact += f_exact
    result.streams_complete = complete
    result.streams_exact = exact
    checks.append(
        Check(
            "every stream complete and exact",
            exact == result.streams,
            f"{exact} of {result.streams} streams exact" + _errors(run),
        )
    )
    if run.recs or not run.foreign:
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
            "; ".join(v.detail for v in log_bad[:3]) or f"{result.streams} logs ok",
        )
    )
    checks.extend(foreign_checks)
    result.verdicts = [{"side": "client", **v.to_dict()} for v in client_bad[:5]] + [
        {"side": "log", **v.to_dict()} for v in log_bad[:5]
    ]

    run.client_snapshot = client_state(run)
    hit = t_fault is not None and (
        any(run.open_at(r) for r in run.recs) or any(f.open_at(t_fault) for f in run.foreign)
    )
    if not hit:
        result.notes.append("the fault hit after the answer had fully arrived")

    # ---- timings
    m = result.metrics
    if base is not None:
        m.baseline_s = base.total_s
        m.baseline_wire_bytes = base.wire_bytes
        m.baseline_cpu_s = base.cpu_s
    m.server_cpu_s = cpu
    ends = [r.ended_at for r, _ in run.streams() if r.ended_at is not None]
    ends += [f.ended_at for f in run.foreign if f.ended_at is not None]
    gives_up = case.gives_up(spec)
    if ends and not gives_up:
        m.total_s = max(ends) - run.t_start
        m.delay_s = m.total_s - base.total_s if base is not None else None
    m.wire_bytes = h.proxy.totals()["downstream"]["sent"]
    m.rss_peak_mb = sampler.peak_rss / 2**20
    m.log_peak_mb = sampler.peak_log_bytes / 2**20
    m.drops = sum(1 for w in run.watches for e in w.events if e.kind == "disconnected")
    m.reconnects = sum(
        max(0, sum(1 for e in w.events if e.kind == "connected") - 1) for w in run.watches
    )
    if t_fault is not None and hit:
        _timings(run, m, t_fault, gives_up)
        m.partial_bytes = sum(_bytes_at(r, t_fault) for r in run.recs)

    # ---- bytes re-sent
    ids = [r.stream.id for r in run.recs] + [f.stream_id for f in run.foreign]
    episodes = resend_episodes(h.tap, ids)
    run.episodes = episodes
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

    own = await case.checks(run, result)
    checks.extend(own)
    checks.extend(_condition_checks(run, result))
    if logs is not None:
        checks.append(_logs_check(run, logs, case.expected_closes(spec)))
    result.checks = checks
    result.samples = {k: v for k, v in run.samples.items() if v}

    # ---- roll-ups for the targets
    if gives_up:
        result.recovered = None
    elif hit:
        result.recovered = (
            exact == result.streams
            and not run.exhausted
            and all(r.error is None for r in run.recs)
            and all(f.error is None for f in run.foreign)
        )
    dropped = any(ev.kind == "disconnected" for w in run.watches for ev in w.events)
    if spec.condition in _FOUND_CHECKS:
        name = _FOUND_CHECKS[spec.condition][0]
        found = next((c for c in checks if c.name == name), None)
        if found is not None and hit and "stalled nothing" not in found.detail:
            result.timeout_ok = found.ok  # the failure found by unbroken, in time
    elif spec.fault == "blackhole" and hit and not gives_up and (dropped or not result.exact):
        # (a silent link that dropped nothing, its last bytes already past the proxy,
        # has no timeout to handle; a run that was not exact is always judged)
        result.timeout_ok = _blackhole_found_in_time(run)
    judged = case.timeout_ok(run, own)
    if judged is not None:
        result.timeout_ok = judged
    result.status = "pass" if all(c.ok for c in checks) else "fail"


async def _foreign(run: RunState, log_bad: list[Verdict]) -> tuple[int, int, list[Check]]:
    """The streams a client other than the Python one consumed (a browser page): each
    server log verified (into ``log_bad``), the client's parts against the generated
    answer, the end digest its own verifier checked against the server log's, and the
    agent run once. Returns (complete, exact, checks)."""
    h = run.h
    complete = exact = 0
    digest_bad: list[str] = []
    reran: list[str] = []
    for f in run.foreign:
        log_verdict = await h.verify_stream_log(f.stream_id, f.expected)
        if not log_verdict.ok:
            log_bad.append(log_verdict)
        head = await h.log_head(f.stream_id)
        server = await h.digest_at(f.stream_id, head) if head else None
        same = server is not None and f.digest == server.hex()
        if not same:
            digest_bad.append(
                f"{f.key}: client {f.digest[:16] or 'none'}, "
                f"log {server.hex()[:16] if server else 'none'}"
            )
        want = {p.id: f.expected.body(p.id) for p in f.expected.parts}
        want = {k: v for k, v in want.items() if v}
        got = {k: v for k, v in f.parts.items() if v}
        # (a client that picked the stream up from a saved cursor, e.g. a reloaded tab,
        # holds the earlier events from before: its parts, not ``complete``, show it)
        done_ok = f.status == "completed" and f.error is None
        if got != want:
            differ = sorted(k for k in want.keys() | got.keys() if got.get(k) != want.get(k))
            run.notes.append(f"{f.key}: the client's parts differ: {', '.join(differ)}")
        complete += done_ok
        exact += done_ok and same and log_verdict.ok and got == want
        calls = h.book.calls[f.key]
        if calls != 1:
            reran.append(f"{f.key}: {calls} runs")
    n = len(run.foreign)
    return (
        complete,
        exact,
        [
            Check(
                "the client's verified end digest equals the server log's (a client of "
                "another language)",
                not digest_bad,
                "; ".join(digest_bad[:3]) or f"{n} streams: the same digest",
            ),
            Check(
                "the agent ran once per stream",
                not reran,
                "; ".join(reran[:3]) or f"{n} streams, each agent run once",
            ),
        ],
    )


def _logs_check(run: RunState, logs: LogCapture, allowed: frozenset[int] = frozenset()) -> Check:
    """No protocol-error close, exception or ERROR line in the run's logs (server,
    client, proxy, ASGI server, asyncio), each offending line quoted (``allowed``: close
    codes the case provokes on purpose)."""
    lines = list(logs.lines)
    findings = scan(lines, allowed)
    t0 = run.t_start or (lines[0].t if lines else 0.0)
    detail = "; ".join(f.describe(t0) for f in findings[:3])
    if len(findings) > 3:
        detail += f" (and {len(findings) - 3} more: see client.log and server.log)"
    return Check(
        "logs clean: no protocol-error close, exception or ERROR line (server and client)",
        not findings,
        detail or f"{len(lines)} lines, none wrong",
    )


def _errors(run: RunState) -> str:
    errs = [f"{type(r.error).__name__}: {r.error}" for r in run.recs if r.error is not None]
    errs += [f"{type(r.error).__name__}: {r.error}" for r in run.resumed_recs if r.error]
    errs += [f.error for f in run.foreign if f.error]
    if not errs:
        return ""
    return f" ({len(errs)} ended with an error, e.g. {errs[0][:300]})"


def _merged(rec: StreamRecorder, resumed: StreamRecorder) -> StreamRecorder:
    """A recorder holding both clients' events and the second's answer (a client that
    gave up, then a new one that resumed)."""
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


def _timings(run: RunState, m: Metrics, t_fault: float, gives_up: bool) -> None:
    """Detection from the first fault; reconnection and recovery from the first fault,
    or from when the path came back for a condition that held it down for a set time
    (nothing can reconnect over a path that drops everything)."""
    t_back = t_fault
    if run.spec.condition in PATH_DOWN_CONDITIONS and run.t_restored is not None:
        t_back = run.t_restored
    if run.held_until is not None:
        t_back = max(t_back, run.held_until)
    detections: list[float] = []
    reconnects: list[float] = []
    for w in run.watches:
        d = w.first("disconnected", t_fault - 1e-6)
        if d is None:
            continue
        detections.append(d.at - t_fault)
        c = w.first("connected", max(d.at, t_back))
        if c is not None and not gives_up:
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
        if ended is not None and rec.error is None and not gives_up and ended >= t_back:
            recoveries.append(ended - t_back)
    for f in run.foreign:
        end = f.ended_at
        if f.open_at(t_fault) and end is not None and f.error is None and end >= t_back:
            recoveries.append(end - t_back)
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


def _blackhole_found_in_time(run: RunState) -> bool:
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


def _condition_checks(run: RunState, result: RunResult) -> list[Check]:
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
