"""Shedding slow readers under load: how many are shed, how fast they come back, exactness.

A real server (uvicorn, this process) with ``AdmissionLimits(shed_after=…)`` serves
``STREAMS`` paced answers at once (``CHUNK``-byte chunks every ``GAP`` s: 20 KB/s
each, 16 KiB flow window), one :class:`unbroken.Client` (one connection) per
answer. ``SLOW`` of them read through the project's fault proxy, whose downstream
link is held at ``SLOW_RATE`` (half the answer's pace; ``--slow-rate``): they fall
behind their window. Once every slow reader is behind, the server is put under sustained pressure
through the real RSS path (its ``max_rss`` lowered below its RSS, as the integration
test does: forcing a busy event loop would need far more load than a shared 2-core
machine should carry) for ``PRESSURE`` seconds, then released; the slow links stay
slow throughout, so a reader that comes back falls behind again and may be shed again.

Reported: readers shed (distinct, and sheds in all; of them fast readers: aim 0), the
sheds per round against the cap (``shed_fraction`` of the connections a second), each
shed reader's time from its close 4008 to its resume (aim: no sooner than the
server's ``retry_after_ms``), the answers exact (aim: all), and every agent ran once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, figure, finish, meta, pyplot, summary

STREAMS, SLOW = 60, 12
CHUNK, GAP = 1000, 0.05  # 20 KB/s per answer
SLOW_RATE = 10_000.0  # bytes/s downstream for the slow readers (half the pace)
RETRY_AFTER, SHED_AFTER, SHED_FRACTION = 1.0, 0.5, 0.05
NEVER = 1 << 40


class _ShedLines(logging.Handler):
    """The server's ``shed slow reader … retry_after_ms=N`` lines (their waits)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.waits: list[float] = []
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("shed slow reader"):
            m = re.search(r"retry_after_ms=(\d+)", msg)
            if m:
                self.waits.append(int(m.group(1)) / 1000)
                self.at.append(time.monotonic())


def _chunk(i: int) -> str:
    return f"{i:06d}".ljust(CHUNK, ".")


async def measure(seconds: float, pressure: float, slow_rate: float) -> dict[str, Any]:
    from unbroken import BackoffPolicy, Client
    from unbroken.chaos import FaultProxy
    from unbroken.chaos.toxics import Bandwidth
    from unbroken.server import Output, Request, Unbroken
    from unbroken.server.admission import SLOW_READER, AdmissionLimits
    from unbroken.testing import serve

    chunks = int(seconds / GAP)
    limits = AdmissionLimits(
        max_runs=None,
        max_runs_per_principal=None,
        max_loop_lag=None,  # the pressure is the RSS one (below); not the machine's load
        max_rss=NEVER,
        retry_after=RETRY_AFTER,
        shed_after=SHED_AFTER,
        shed_fraction=SHED_FRACTION,
    )
    app = Unbroken(allow_anonymous=True, admission=limits, window=16 * 1024)
    calls: dict[str, int] = {}
    written: dict[str, int] = {}

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        calls[req.input] = calls.get(req.input, 0) + 1
        t0 = time.monotonic()
        for i in range(chunks):
            delay = t0 + i * GAP - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await out.text(_chunk(i))
            written[req.input] = i + 1

    lines = _ShedLines()
    server_log = logging.getLogger("unbroken.server.connection")
    server_log.addHandler(lines)
    for name in ("unbroken", "uvicorn"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server_log.setLevel(logging.WARNING)
    server_log.propagate = False
    want = "".join(_chunk(i) for i in range(chunks))
    policy = BackoffPolicy(max_attempts=None, deadline=None)
    try:
        async with serve(app) as srv, FaultProxy(f"127.0.0.1:{srv.port}") as proxy:
            proxy.add_toxic(Bandwidth(rate=slow_rate), stream="downstream", name="slow")
            via = srv.url.replace(f"127.0.0.1:{srv.port}", proxy.listen)
            names = [f"slow{i}" if i < SLOW else f"fast{i}" for i in range(STREAMS)]
            clients = {
                n: Client(via if n.startswith("slow") else srv.url, policy=policy) for n in names
            }
            for c in clients.values():
                await c.__aenter__()
            gate = app.hub.gate
            try:
                streams = await asyncio.gather(*(c.start("paced", n) for n, c in clients.items()))
                t0 = time.monotonic()
                # every slow reader behind its window, then sustained pressure (RSS)
                async with asyncio.timeout(30):
                    while (  # noqa: ASYNC110 - polled under a timeout
                        sum(r.behind() >= SLOW_READER for r in app.connections) < SLOW
                    ):
                        await asyncio.sleep(0.02)
                behind_at = time.monotonic() - t0
                gate.max_rss = 1
                await asyncio.sleep(pressure + SHED_AFTER)
                gate.max_rss = NEVER
                answers = await asyncio.wait_for(asyncio.gather(*(s.wait() for s in streams)), 120)
                done = time.monotonic() - t0
            finally:
                for c in clients.values():
                    await c.__aexit__(None, None, None)
    finally:
        server_log.removeHandler(lines)
        server_log.propagate = True
    # per slow reader's lost connection: lost -> resumed, and the delay before its
    # reconnect, split by how it saw the end (4008: the shed's close and its error
    # arrived; else: the link went silent first, its close queued behind the data)
    back: dict[str, list[float]] = {"4008": [], "other": []}
    floor_ok = True
    shed_by: dict[str, int] = {}
    codes: dict[str, int] = {}
    least = min(lines.waits or [RETRY_AFTER])
    # each shed (the server's time and retry_after) matched to the client that read it
    # (its 4008 carries that retry_after): how long the news took on the slow link,
    # and its next attempt against shed time + retry_after
    unmatched = list(zip(lines.at, lines.waits, strict=True))
    learned: list[float] = []
    margins: list[float] = []
    shed_back: list[float] = []
    overloaded: dict[str, int] = {}  # reader -> its 4008s
    for n, c in clients.items():
        h = c.history
        for i, e in enumerate(h):
            if e.kind != "disconnected":
                continue
            codes[str(e.code)] = codes.get(str(e.code), 0) + 1
            shed_by[n] = shed_by.get(n, 0) + 1
            key = "4008" if e.code == 4008 else "other"
            nxt = [x for x in h[i + 1 :] if x.kind == "resumed"]
            again = [x for x in h[i + 1 :] if x.kind == "reconnecting"]
            if nxt:
                back[key].append(nxt[0].at - e.at)
            if key == "4008" and again and again[0].delay < least - 1e-3:
                floor_ok = False
            match = [
                (at, w)
                for at, w in unmatched
                if e.retry_after is not None and abs(w - e.retry_after) < 1e-3 and at <= e.at
            ]
            if key == "4008":
                overloaded[n] = overloaded.get(n, 0) + 1
            if key == "4008" and match:
                shed_at, wait = match[0]
                unmatched.remove(match[0])
                learned.append(e.at - shed_at)
                if again:
                    margins.append(again[0].at + again[0].delay - (shed_at + wait))
                if nxt:
                    shed_back.append(nxt[0].at - shed_at)
    exact = sum(a.text == want for a in answers)
    return {
        "streams": STREAMS,
        "slow_readers": SLOW,
        "answer_s": seconds,
        "pressure_s": pressure,
        "slow_behind_after_s": round(behind_at, 2),
        "sheds": gate.shed_total,
        "readers_shed": len(shed_by),
        "fast_readers_shed": sum(1 for n in shed_by if n.startswith("fast")),
        # how the clients saw their connections end (4008: the shed's close arrived;
        # a shed reader's close waits behind what is queued for it on the slow link)
        "disconnect_codes": codes,
        "sheds_per_reader": summary(list(shed_by.values()), 1),
        "cap_per_round": max(1, int(STREAMS * SHED_FRACTION)),
        "rounds": len({round(a) for a in lines.at}),
        "retry_after_s": summary(lines.waits, 3),
        "shed_to_resumed_s": summary(back["4008"], 3),
        "silent_to_resumed_s": summary(back["other"], 3),
        "reconnect_after_retry_after": floor_ok,
        # of the sheds, how many the client learned (read 4008 + that retry_after)
        "sheds_learned": len(learned),
        # a reader that read 4008 more than once was shed again after it came back
        "re_sheds": sum(k - 1 for k in overloaded.values()),
        # server shed -> the client saw its 4008 (the events ahead of it on the link)
        "shed_to_learned_s": summary(learned, 3),
        # server shed -> resumed; and next attempt - (shed + retry_after): aim >= 0
        "server_shed_to_resumed_s": summary(shed_back, 3),
        "attempt_minus_retry_after_s": summary(margins, 3),
        "attempt_no_sooner_than_shed_plus_retry_after": bool(margins) and min(margins) >= -1e-3,
        "exact": exact,
        "agents_ran_once": all(v == 1 for v in calls.values()) and len(calls) == STREAMS,
        "agents_to_the_end": all(v == chunks for v in written.values()),
        "all_done_s": round(done, 2),
    }


def run(quick: bool = False, slow_rate: float = SLOW_RATE) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "shedding",
        **meta(),
        "chunk_bytes": CHUNK,
        "gap_s": GAP,
        "slow_rate": slow_rate,
        "retry_after": RETRY_AFTER,
        "shed_after": SHED_AFTER,
        "shed_fraction": SHED_FRACTION,
    }
    result.update(asyncio.run(measure(4.0 if quick else 8.0, 2.0 if quick else 4.0, slow_rate)))
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    ok = result["exact"] == STREAMS
    fast, floor = result["fast_readers_shed"], result["reconnect_after_retry_after"]
    ran = result["agents_ran_once"] and result["agents_to_the_end"]
    shed = f"{result['readers_shed']} / {result['sheds']}"
    result["figures"] = [
        figure("readers shed (distinct / sheds)", shed, "-", None),
        figure("fast readers shed", fast, 0, fast == 0),
        figure("shed -> resumed p50", result["shed_to_resumed_s"].get("p50"), "-", None, "s"),
        figure("reconnect no sooner than retry_after_ms", floor, True, floor),
        figure(
            "sheds learned (4008 + retry_after read)",
            f"{result['sheds_learned']}/{result['sheds']}",
            f"{result['sheds']}/{result['sheds']}",
            result["sheds_learned"] == result["sheds"],
        ),
        figure(
            "next attempt >= shed + retry_after",
            result["attempt_no_sooner_than_shed_plus_retry_after"],
            True,
            result["attempt_no_sooner_than_shed_plus_retry_after"],
        ),
        figure("answers exact", f"{result['exact']}/{STREAMS}", f"{STREAMS}/{STREAMS}", ok),
        figure("agents ran once, to the end", ran, True, ran),
    ]
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    s = result["shed_to_resumed_s"]
    keys = [k for k in ("p50", "p95", "max") if k in s]
    ax.bar(keys, [s[k] for k in keys])
    ax.axhline(result["retry_after"], color="grey", linestyle="--", label="retry_after base")
    ax.set(ylabel="close 4008 -> resumed, s")
    ax.legend()
    fig.suptitle(
        f"shedding: {result['readers_shed']} readers shed ({result['sheds']} sheds), "
        f"{result['exact']}/{result['streams']} exact"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--slow-rate", type=float, default=SLOW_RATE, help="slow link, bytes/s")
    args = ap.parse_args()
    result = run(args.quick, args.slow_rate)
    name = "shedding.quick" if args.quick else "shedding"
    if args.slow_rate != SLOW_RATE:
        name += f".{args.slow_rate / 1000:g}kbs"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, RESULTS / f"{name}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "figures"}, indent=1))


if __name__ == "__main__":
    main()
