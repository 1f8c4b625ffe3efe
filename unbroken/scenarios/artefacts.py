"""A run's debugging artefacts, in ``<root>/<run id>/``: the client's and the server's
connection logs, the proxy's fault log, the sequence trace, the stream log at the cut
and a timing breakdown (see docs: debugging a failed run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..client import ConnectionEvent
from ..protocol.events import Kind
from .context import RunState
from .harness import SERVER_THREAD, LogCapture, StreamRecorder
from .logscan import scan
from .run_result import RunResult


async def write_artefacts(run: RunState, result: RunResult, logs: LogCapture, root: Path) -> str:
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
        ]
        + [
            {
                "stream": f.stream_id,
                "answer": f.key,
                "ended": None if f.ended_at is None else round(f.ended_at - t0, 4),
                "client": "other (its own report below)",
                "status": f.status,
                "digest": f.digest,
                "error": f.error,
                "part_chars": {k: len(v) for k, v in f.parts.items()},
                "report": f.report,
            }
            for f in run.foreign
        ],
    }
    (d / "timing.json").write_text(json.dumps(timing, indent=1, default=str), "utf-8")
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


async def _log_window(run: RunState) -> dict[str, Any]:
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
