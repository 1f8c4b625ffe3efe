"""Degradation: wire bytes per payload byte and token latency vs link rate, adaptive
delivery on vs off.

One paced answer (``RATE`` tokens/s of ``TOKEN_BYTES`` bytes: 16 KB/s of payload,
TC12's pace) streams through the project's fault proxy, whose downstream link is
held at a fixed rate by its ``bandwidth`` toxic: 1 MB/s, 200 KB/s, 50 KB/s, 20 KB/s.
The server (in this process, real uvicorn) runs with ``Unbroken(adaptive=True)``
(the default: each stream's flow window follows its link, with longer coalescing
while the link is the bottleneck) and ``adaptive=False`` (the window stays 1 MiB).
Per cell: the wire bytes the proxy sent downstream divided by the payload bytes the
client received (the text; every digest verified by the client), and the latency of
each token from its production to its arrival (p50/p99), reconnects (aim: none).

At 20 KB/s the link is slower than the answer plus its framing: latency grows over
the answer whatever the server does; what adaptive delivery changes is how many
bytes the link has to carry (and so how far behind the reader falls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, figure, finish, meta, progress, pyplot, summary

RATE = 400.0  # tokens/s
TOKEN_BYTES = 40  # 16 KB/s of payload
LINK_RATES = (1_000_000.0, 200_000.0, 50_000.0, 20_000.0)
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "stream",
    "resume",
    "digest",
    "token",
    "agent",
    "answer",
    "network",
    "proxy",
    "server",
    "client",
    "window",
    "frame",
]


def _token(rng: random.Random, now: float) -> str:
    """``@`` + the production time (14 chars) + words up to ``TOKEN_BYTES``."""
    head = f"@{now:014.6f}"
    body = ""
    while len(head) + len(body) < TOKEN_BYTES:
        body += " " + rng.choice(_WORDS)
    return (head + body)[:TOKEN_BYTES]


def build_app(adaptive: bool) -> Any:
    from unbroken.server import Output, Request, Unbroken
    from unbroken.store.base import Retention
    from unbroken.store.memory import MemoryStore

    app = Unbroken(
        MemoryStore(Retention(max_total_bytes=1 << 30)),
        allow_anonymous=True,
        adaptive=adaptive,
    )

    @app.agent("paced")
    async def paced(req: Request, out: Output) -> None:
        rng = random.Random(7)
        n, interval = int(req.input["n"]), 1.0 / float(req.input["rate"])
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await out.text(_token(rng, time.monotonic()))

    return app


async def cell(link_rate: float, adaptive: bool, seconds: float) -> dict[str, Any]:
    """One answer through a link held at ``link_rate`` bytes/s."""
    from unbroken import BackoffPolicy, Client
    from unbroken.chaos import FaultProxy
    from unbroken.chaos.toxics import Bandwidth
    from unbroken.client import ConnectionEvent
    from unbroken.testing import serve

    n = int(RATE * seconds)
    reconnects = 0

    def on_event(ev: ConnectionEvent) -> None:
        nonlocal reconnects
        reconnects += ev.kind == "disconnected"

    lat: list[float] = []
    payload = 0
    async with (
        serve(build_app(adaptive)) as srv,
        FaultProxy(upstream=(srv.host, srv.port), seed=1) as proxy,
    ):
        proxy.add_toxic(Bandwidth(rate=link_rate), stream="downstream", name="bw")
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        policy = BackoffPolicy(max_attempts=20)
        async with Client(url, policy=policy, on_event=on_event, open_timeout=10.0) as client:
            t0 = time.monotonic()
            st = await client.start("paced", {"n": n, "rate": RATE})
            async for ev in st:
                text = getattr(ev, "text", None)
                if not text:
                    continue
                now = time.monotonic()
                payload += len(text.encode())
                for tok in text.split("@")[1:]:
                    lat.append((now - float(tok[:14])) * 1000)
            answer = await st.wait()
            took = time.monotonic() - t0
        wire = proxy.totals()["downstream"]["sent"]
    exact = answer.status == "completed" and len(lat) == n
    return {
        "link_rate_kbs": link_rate / 1000,
        "adaptive": adaptive,
        "tokens": n,
        "payload_bytes": payload,
        "wire_bytes": wire,
        "wire_per_payload": round(wire / payload, 3) if payload else None,
        "latency_ms": summary(lat, 1),
        "answer_s": round(took, 2),
        "reconnects": reconnects,
        "exact": exact,
    }


def run(quick: bool = False, seconds: float | None = None) -> dict[str, Any]:
    seconds = seconds or (3.0 if quick else 10.0)
    result: dict[str, Any] = {
        "benchmark": "degradation",
        **meta(),
        "tokens_per_s": RATE,
        "token_bytes": TOKEN_BYTES,
        "answer_s": seconds,
        "cells": [],
    }
    todo = [(r, a) for r in LINK_RATES for a in (True, False)]
    for i, (rate, adaptive) in enumerate(todo):
        result["cells"].append(asyncio.run(cell(rate, adaptive, seconds)))
        result["cells"][-1]["load_average"] = [round(x, 2) for x in __import__("os").getloadavg()]
        progress(i + 1, len(todo))
    by = {(c["link_rate_kbs"], c["adaptive"]): c for c in result["cells"]}
    slow = LINK_RATES[-1] / 1000
    on, off = by[(slow, True)], by[(slow, False)]
    result["figures"] = [
        figure(
            f"wire/payload at {slow:.0f} KB/s, adaptive on vs off",
            f"{on['wire_per_payload']} vs {off['wire_per_payload']}",
            "on < off",
            (on["wire_per_payload"] or 0) < (off["wire_per_payload"] or 0),
        ),
        figure(
            f"p99 latency at {slow:.0f} KB/s, adaptive on vs off",
            f"{on['latency_ms'].get('p99')} vs {off['latency_ms'].get('p99')}",
            "-",
            None,
            "ms",
        ),
        figure(
            "every answer exact, no reconnect",
            all(c["exact"] and not c["reconnects"] for c in result["cells"]),
            True,
            all(c["exact"] and not c["reconnects"] for c in result["cells"]),
        ),
    ]
    return finish(result)


def chart(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for adaptive, style in ((True, "o-"), (False, "s--")):
        cells = [c for c in result["cells"] if c["adaptive"] is adaptive]
        xs = [c["link_rate_kbs"] for c in cells]
        label = "adaptive on" if adaptive else "adaptive off"
        ax.plot(xs, [c["wire_per_payload"] for c in cells], style, label=label)
        ax2.plot(xs, [c["latency_ms"].get("p99") for c in cells], style, label=label)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("link rate, KB/s")
        a.legend()
    ax.set_ylabel("wire bytes per payload byte")
    ax2.set_ylabel("token latency p99, ms")
    ax2.set_yscale("log")
    fig.suptitle(
        f"degradation: {result['tokens_per_s']:.0f} tokens/s x {result['token_bytes']} B "
        "through the fault proxy's bandwidth toxic"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None, help="answer length (10 s)")
    args = ap.parse_args()
    result = run(args.quick, args.seconds)
    name = "degradation.quick" if args.quick else "degradation"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, RESULTS / f"{name}.png")
    print(json.dumps(result["figures"], indent=1))
    for c in result["cells"]:
        print(
            f"{c['link_rate_kbs']:>6.0f} KB/s adaptive={c['adaptive']!s:5} "
            f"wire/payload {c['wire_per_payload']} p50/p99 {c['latency_ms'].get('p50')}/"
            f"{c['latency_ms'].get('p99')} ms reconnects {c['reconnects']} exact {c['exact']}"
        )


if __name__ == "__main__":
    main()
