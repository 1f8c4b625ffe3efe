"""Kernel-level faults on a netns link: how fast one-way failures are found, and what a
reconnect costs under 20 % packet loss. Needs root (see docs/reference/kernel-faults.md).

A real ``unbroken serve unbroken.chaos.kernel.app:app`` process (library defaults:
heartbeat 0.4 s, 1 MiB flow window) in a server namespace; the unbroken ``Client``
(defaults) in this process, in a client namespace; the path between them through a
router namespace whose nft ``forward`` chain makes the faults.

(a) **Detection** of a one-way failure, ≥ 10 runs per condition, a fresh connection per
run, the fault installed once the stream is flowing:

* ``receive-only (data)``: the client's TCP segments that carry data are dropped, bare
  ACKs pass (``faults.drop_data("upstream")``): the server's answer still arrives, the
  server hears nothing. Issue 12's bug 2;
* ``receive-only (all packets)``: every client packet is dropped (``blackhole
  ("upstream")``): TCP's ACKs too, so the server's TCP stalls once its congestion window
  is in flight;
* ``send-only (all packets)``: every server packet is dropped (``blackhole("downstream")``);
* ``send-only (data)``: the server's data segments are dropped, its bare ACKs pass.

Each at two agent paces: ``fast`` (1 MB/s: the 1 MiB window fills in about a second)
and ``paced`` (10 KB/s, a model's pace: the window never fills during a run). Timed from
the moment ``nft`` returned (the rule is in the kernel) to the client's
``disconnected`` event, and to the server's ``close conn=…`` log line for that
connection (read as the server wrote it). A side that has not noticed within
``HOLD`` seconds is reported as not detected; then the fault is removed, the client must
resume, and the run ends.

(b) **Reconnect under 20 % loss** (both directions, nft ``numgen``), ≥ 20 runs: the
stream is flowing, the loss is switched on, and the client's socket is aborted on the
client's side with ``ss -K`` (so detection is immediate and what is timed is the
reconnect itself: SYN, WebSocket upgrade, hello/welcome, resume, all under loss). Timed
from the abort to ``connected``, to ``resumed`` and to the first event the client did not
hold; then the loss stays on until the answer ends, which must be exact (end digest and
every part against the answer computed without streaming). Also run without loss, as
the baseline.

    python -m benchmarks.netns_faults [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, figure, finish, meta, progress, pyplot, summary
from unbroken.chaos.kernel import Fault, NamespacedProcess, Topology, kernel_skip_reason
from unbroken.chaos.kernel.app import AnswerSpec, exactness, serve_app
from unbroken.client import Client, ConnectionEvent, Stream

PORT = 8000
HOLD = 8.0  # s a one-way fault is held at most, waiting for both sides to notice
SERVER_HOLD = 40.0  # s, for the few runs that wait for the server alone
SERVER_CONDITIONS = ("receive-only (all packets)", "send-only (all packets)", "send-only (data)")
AIM_DETECT_S = 1.5  # issue 12: within the same bound as a blackhole

CONDITIONS: dict[str, tuple[str, str]] = {
    # name -> (RouterFaults method, direction)
    "receive-only (data)": ("drop_data", "upstream"),
    "receive-only (all packets)": ("blackhole", "upstream"),
    "send-only (all packets)": ("blackhole", "downstream"),
    "send-only (data)": ("drop_data", "downstream"),
}
PACES: dict[str, AnswerSpec] = {
    # long enough to be still running when the fault comes and while it is held
    "fast": AnswerSpec(size=50_000_000, seconds=50.0, seed=21),
    "paced": AnswerSpec(size=500_000, seconds=50.0, seed=22),
}
LOSS_SPEC = AnswerSpec(size=200_000, seconds=2.0, seed=23, kind="multipart")


class Run:
    """One client stream: its connection events, and when its events arrived."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self.seq = 0
        self.marks: list[tuple[float, int]] = []  # (time, seq) of each event
        self.changed = asyncio.Event()
        self.stream: Stream | None = None
        self.task: asyncio.Task[None] | None = None

    def on_event(self, ev: ConnectionEvent) -> None:
        self.events.append(ev)
        self.changed.set()

    def consume(self, stream: Stream) -> None:
        self.stream = stream

        async def body() -> None:
            with contextlib.suppress(Exception):
                async for ev in stream:
                    self.seq = ev.seq
                    self.marks.append((time.monotonic(), ev.seq))
                    self.changed.set()
            self.changed.set()

        self.task = asyncio.get_running_loop().create_task(body())

    async def until(self, check: Any, limit: float) -> bool:
        """Wait (on events, no polling) until ``check()``; False after ``limit`` s."""
        try:
            async with asyncio.timeout(limit):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def first(self, kind: str, after: float) -> ConnectionEvent | None:
        return next((e for e in self.events if e.kind == kind and e.at >= after), None)

    async def event(self, kind: str, after: float, limit: float) -> ConnectionEvent | None:
        await self.until(lambda: self.first(kind, after) is not None, limit)
        return self.first(kind, after)

    def first_seq_after(self, seq: int, after: float) -> float | None:
        return next((t for t, s in self.marks if t >= after and s > seq), None)


def install(topo: Topology, condition: str) -> Fault:
    method, direction = CONDITIONS[condition]
    fault: Fault = getattr(topo.faults, method)(direction)
    return fault


def last_connection(server: NamespacedProcess, client_address: str) -> str | None:
    """The id of the server's newest connection from ``client_address``."""
    rx = re.compile(rf"connect conn=(\S+) client={re.escape(client_address)}:\d+")
    ids = [m.group(1) for _, line in list(server.lines) if (m := rx.search(line))]
    return ids[-1] if ids else None


async def detection_run(
    topo: Topology,
    server: NamespacedProcess,
    condition: str,
    pace: str,
    server_hold: float = HOLD,
) -> dict[str, Any]:
    """One fault on a flowing stream; held until both sides noticed, or until ``HOLD``
    s (client) and ``server_hold`` s (server) have passed."""
    spec = PACES[pace]
    run = Run()
    out: dict[str, Any] = {"condition": condition, "pace": pace, "server_hold": server_hold}
    async with Client(topo.server_url(PORT), on_event=run.on_event) as client:
        st = await client.start("answer", spec.to_input())
        run.consume(st)
        await run.until(lambda: run.seq >= 20, 15)
        # the connection the fault will hit: the newest one (not a previous attempt's)
        conn = last_connection(server, topo.addresses.client)
        out["reconnects_before_fault"] = sum(1 for e in run.events if e.kind == "disconnected")
        fault = install(topo, condition)
        t0 = fault.installed_at
        out["install_ms"] = round((fault.installed_at - fault.requested_at) * 1000, 2)

        async def server_side() -> tuple[float, str] | None:
            if conn is None:
                return None
            try:
                t, m = await server.await_line(
                    rf"close conn={conn} (code=\d+ reason=.*)", server_hold, after=t0
                )
            except TimeoutError:
                return None
            return t, m.group(1)

        server_wait = asyncio.ensure_future(server_side())
        lost = await run.event("disconnected", t0, HOLD)
        seen = await server_wait
        out["dropped_packets"] = fault.dropped()
        held = run.seq
        fault.remove()
        healed = fault.removed_at or time.monotonic()
        out["client_s"] = None if lost is None else round(lost.at - t0, 3)
        out["client_cause"] = None if lost is None else lost.cause
        out["server_s"] = None if seen is None else round(seen[0] - t0, 3)
        out["server_close"] = None if seen is None else seen[1]
        # healed: the stream must flow again (after a resume, if the client left)
        await run.until(lambda: run.first_seq_after(held, healed) is not None, 30)
        first = run.first_seq_after(held, healed)
        out["flowing_again_s"] = None if first is None else round(first - healed, 3)
        out["resumed"] = run.first("resumed", t0) is not None
        with contextlib.suppress(Exception):
            await st.cancel()
    return out


async def loss_run(topo: Topology, percent: float) -> dict[str, Any]:
    run = Run()
    out: dict[str, Any] = {"loss_percent": percent}
    async with Client(topo.server_url(PORT), on_event=run.on_event) as client:
        st = await client.start("answer", LOSS_SPEC.to_input())
        run.consume(st)
        await run.until(lambda: run.seq >= 10, 15)
        fault = topo.faults.loss(percent, "both") if percent else None
        held = run.seq
        t_kill = time.monotonic()
        out["aborted"] = topo.faults.reset(PORT, side="client")
        connected = await run.event("connected", t_kill, 60)
        resumed = await run.event("resumed", t_kill, 60)
        # the first event the client did not hold when its socket was aborted
        if resumed is not None:
            held = resumed.from_seq
        await run.until(lambda: run.first_seq_after(held, t_kill) is not None, 60)
        first = run.first_seq_after(held, t_kill)
        out["connect_s"] = None if connected is None else round(connected.at - t_kill, 3)
        out["resume_s"] = None if resumed is None else round(resumed.at - t_kill, 3)
        out["first_event_s"] = None if first is None else round(first - t_kill, 3)
        try:
            answer = await asyncio.wait_for(st.wait(), 120)
        except Exception as exc:  # reported, not raised: the run is a sample
            out["exact"] = False
            out["problems"] = [f"{type(exc).__name__}: {exc}"]
        else:
            assert st.cursor is not None
            problems = exactness(LOSS_SPEC, answer, st.cursor.epoch)
            out["exact"] = not problems
            out["problems"] = problems
        out["answer_s"] = round(time.monotonic() - t_kill, 3)
        out["disconnects_after_abort"] = sum(
            1 for e in run.events if e.kind == "disconnected" and e.at >= t_kill
        )
        out["attempts"] = sum(1 for e in run.events if e.kind == "reconnecting" and e.at >= t_kill)
        # after the forced one: a live but lossy link declared dead
        out["later_disconnect_causes"] = [
            e.cause for e in run.events if e.kind == "disconnected" and e.at >= t_kill
        ][1:]
        if fault is not None:
            out["dropped_packets"] = fault.dropped()
            fault.remove()
    return out


def _stats(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    s: dict[str, Any] = summary(got, 3)
    s["missed"] = len(values) - len(got)
    return s


async def measure(
    topo: Topology,
    server: NamespacedProcess,
    runs: int,
    loss_runs: int,
    base_runs: int,
    server_runs: int,
) -> dict[str, Any]:
    # (condition, pace, runs, how long the fault is held for the server)
    plan: list[tuple[str, str, int, float]] = [
        (c, p, runs, HOLD) for p in PACES for c in CONDITIONS if not (p == "paced" and "(all" in c)
    ]
    # where the server did not notice within HOLD: how long it takes it alone
    plan += [(c, "fast", server_runs, SERVER_HOLD) for c in SERVER_CONDITIONS]
    total = sum(n for *_, n, _ in plan) + loss_runs + base_runs
    done = 0
    detection: list[dict[str, Any]] = []
    for condition, pace, n, hold in plan:
        for _ in range(n):
            progress(done, total)
            detection.append(await detection_run(topo, server, condition, pace, hold))
            done += 1
    losses: list[dict[str, Any]] = []
    for percent, n in ((20.0, loss_runs), (0.0, base_runs)):
        for _ in range(n):
            progress(done, total)
            losses.append(await loss_run(topo, percent))
            topo.faults.heal()
            done += 1
    progress(total, total)
    out: dict[str, Any] = {"detection_runs": detection, "loss_runs": losses, "detection": {}}
    for condition, pace, n, hold in plan:
        if not n:
            continue
        rows = [
            r
            for r in detection
            if r["condition"] == condition and r["pace"] == pace and r["server_hold"] == hold
        ]
        closes = Counter(
            (r["server_close"] or "").split(" reason=")[0] for r in rows if r["server_close"]
        )
        key = f"{condition}, {pace}" + (f", held {hold:g} s" if hold != HOLD else "")
        out["detection"][key] = {
            "client_s": _stats([r["client_s"] for r in rows]),
            "server_s": _stats([r["server_s"] for r in rows]),
            "server_hold_s": hold,
            "server_closes": dict(closes),
            "flowing_again_s": _stats([r["flowing_again_s"] for r in rows]),
            "resumed": sum(1 for r in rows if r["resumed"]),
            "runs": len(rows),
        }
    out["reconnect"] = {}
    for percent in (20.0, 0.0):
        rows = [r for r in losses if r["loss_percent"] == percent]
        if not rows:
            continue
        out["reconnect"][f"{percent:g} %"] = {
            key: _stats([r[key] for r in rows])
            for key in ("connect_s", "resume_s", "first_event_s", "answer_s")
        } | {
            "runs": len(rows),
            "exact": sum(1 for r in rows if r["exact"]),
            "disconnects_after_abort": sum(r["disconnects_after_abort"] for r in rows),
            "spurious_disconnects": sum(len(r["later_disconnect_causes"]) for r in rows),
        }
    return out


def run(quick: bool = False) -> dict[str, Any]:
    res = meta()
    res.update(benchmark="netns_faults", hold_s=HOLD, commit=_commit())
    reason = kernel_skip_reason()
    if reason is not None:
        res.update(skipped=reason, figures=[])
        return finish(res)
    runs, loss_runs, base_runs, server_runs = (2, 4, 2, 0) if quick else (10, 20, 10, 3)
    res.update(
        setup="unbroken serve (defaults) in a server netns; Client (defaults) in a client "
        "netns; faults in a router netns's nft forward chain; offloads off",
        paces={k: v.to_input() for k, v in PACES.items()},
        loss_answer=LOSS_SPEC.to_input(),
    )
    with Topology() as topo:
        server = serve_app(topo, PORT)
        with topo.client.entered():
            res.update(asyncio.run(measure(topo, server, runs, loss_runs, base_runs, server_runs)))
        server.stop()
        res["server_errors"] = [
            line for _, line in server.lines if "ERROR" in line or "Traceback" in line
        ][:20]
    res["figures"] = figures(res)
    return finish(res)


def _commit() -> str:
    """The commit measured (``UNBROKEN_COMMIT`` when run from an export without git)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return os.environ.get("UNBROKEN_COMMIT") or found.stdout.strip() or "unknown"


def _pair(s: dict[str, Any], hold: float = HOLD) -> str:
    if not s.get("n"):
        return f"not detected in {hold:g} s ({s['missed']} runs)"
    tail = f" ({s['missed']} not detected in {hold:g} s)" if s["missed"] else ""
    return f"{s['p50']:.2f} / {s['max']:.2f}{tail}"


def figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, d in res["detection"].items():
        c, s = d["client_s"], d["server_s"]
        met = bool(c.get("n")) and c["missed"] == 0 and c["max"] <= AIM_DETECT_S
        rows.append(
            figure(
                f"{name}: fault → client disconnected p50 / max ({d['runs']} runs)",
                _pair(c),
                f"≤ {AIM_DETECT_S}",
                met,
                "s",
            )
        )
        rows.append(figure(f"{name}: fault → server close p50 / max", _pair(s), None, None, "s"))
    for name, d in res["reconnect"].items():
        r = d["resume_s"]
        rows.append(
            figure(
                f"{name} loss: client abort → resumed p50 / max ({d['runs']} runs)",
                _pair(r),
                None,
                None,
                "s",
            )
        )
        rows.append(
            figure(
                f"{name} loss: later disconnects of a live link (silence limit)",
                d["spurious_disconnects"],
                0,
                d["spurious_disconnects"] == 0,
            )
        )
        rows.append(
            figure(
                f"{name} loss: answers exact",
                f"{d['exact']} / {d['runs']}",
                "all",
                d["exact"] == d["runs"],
            )
        )
    return rows


def chart(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    if res.get("skipped"):
        a.text(0.5, 0.5, res["skipped"], ha="center", wrap=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    names = list(res["detection"])
    colors = {"client_s": "tab:blue", "server_s": "tab:orange"}
    for k, side in enumerate(("client_s", "server_s")):
        ys = [i + (k - 0.5) * 0.38 for i in range(len(names))]
        for y, name in zip(ys, names, strict=True):
            st, hold = res["detection"][name][side], res["detection"][name]["server_hold_s"]
            if st.get("n"):
                a.barh(y, st["p50"], 0.38, color=colors[side])
                a.plot([st["max"]] * 2, [y - 0.19, y + 0.19], color="k", lw=1.5)
            if st["missed"]:
                limit = HOLD if side == "client_s" else hold
                a.barh(y, limit, 0.38, color="none", edgecolor=colors[side], hatch="//")
                note = f"{st['missed']} not within {limit:g} s"
                a.text(limit * 1.05, y, note, va="center", fontsize=7)
    a.axvline(AIM_DETECT_S, color="red", ls=":", lw=0.8)
    a.set_xscale("log")
    a.set_xlim(0.5, 150)
    a.set_yticks(range(len(names)), names, fontsize=7)
    a.invert_yaxis()
    a.set(xlabel="s after the nft rule (bar p50, | max, hatched: not detected)")
    a.set_title("one-way failure → client disconnected (blue) / server close (orange)")
    keys = ("connect_s", "resume_s", "first_event_s")
    runs = res["loss_runs"]
    for k, percent in enumerate((20.0, 0.0)):
        rows = [r for r in runs if r["loss_percent"] == percent]
        for i, key in enumerate(keys):
            vals = [r[key] for r in rows if r[key] is not None]
            x = i + (k - 0.5) * 0.38
            label = f"{percent:g} % loss ({len(rows)} runs)" if i == 0 else None
            b.scatter([x] * len(vals), vals, s=12, alpha=0.7, color=f"C{k}", label=label)
            if vals:
                b.plot([x - 0.15, x + 0.15], [sorted(vals)[len(vals) // 2]] * 2, color="k")
    b.set_xticks(range(len(keys)), ["connected", "resumed", "first new event"])
    b.set_yscale("log")
    b.set_ylim(0.005, 10)
    b.set(ylabel="s after the client's socket was aborted (— p50)")
    b.set_title("reconnect under loss (ss -K on the client)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 runs per condition (smoke)")
    ap.add_argument("--chart", action="store_true", help="only redraw the chart from the JSON")
    args = ap.parse_args()
    quick = args.quick
    if args.chart:
        out = RESULTS / ("netns_faults.quick.json" if quick else "netns_faults.json")
        chart(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    t0 = time.monotonic()
    res = run(quick)
    res["seconds"] = round(time.monotonic() - t0, 1)
    out = RESULTS / ("netns_faults.quick.json" if quick else "netns_faults.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    chart(res, out.with_suffix(".png"))
    for f in res["figures"]:
        print(f"{f['name']}: {f['value']} {f['unit']}  (aim {f['aim']}, met {f['met']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
