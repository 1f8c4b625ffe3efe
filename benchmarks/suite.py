"""Adapters that run the benchmark modules owned elsewhere (codec, proxy, server,
recovery) from ``python -m benchmarks``, plus their charts. Those modules are
imported and called, never changed here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import figure, finish, meta
from benchmarks.common import pyplot as _plt


# ------------------------------------------------------------------ codec
def run_codec(quick: bool) -> dict[str, Any]:
    from benchmarks import codec

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "codec.json"
        args = ["--out", str(out), "--repeats", "5" if quick else "40"]
        if quick:
            args += ["--events", str(64 * 128)]
        codec.main(args)
        res: dict[str, Any] = json.loads(out.read_text())
    res["load_average_before"] = res.get("load_average_1m_before_after", [None])[0]
    batched = res["results"][1]
    res["figures"] = [
        figure(
            "codec encode+digest, 64 events/frame",
            batched["encode_events_per_s"],
            res["aims"]["encode_events_per_s_batched"],
            res["met"]["encode_events_per_s_batched"],
            "events/s",
        ),
        figure(
            "codec decode+verify, 64 events/frame",
            batched["decode_events_per_s"],
            res["aims"]["decode_events_per_s_batched"],
            res["met"]["decode_events_per_s_batched"],
            "events/s",
        ),
    ]
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def chart_codec(res: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = res["results"]
    labels = [f"{r['events_per_frame']}/frame" for r in rows]
    x = range(len(rows))
    a.bar([i - 0.2 for i in x], [r["encode_events_per_s"] for r in rows], 0.4, label="encode")
    a.bar([i + 0.2 for i in x], [r["decode_events_per_s"] for r in rows], 0.4, label="decode")
    a.set_xticks(list(x), labels)
    a.set(ylabel="events/s (one core)", title="Codec: encode+digest, decode+verify")
    a.legend()
    wb = res["wire_ratio_by_events_per_frame"]
    b.plot([int(k) for k in wb], list(wb.values()), "o-")
    b.axhline(1.25, color="red", ls=":", lw=0.8, label="aim 1.25")
    b.set(xscale="log", yscale="log", xlabel="events per frame", ylabel="wire ÷ payload")
    b.set_title("Framing overhead by batch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ proxy
def run_proxy(quick: bool) -> dict[str, Any]:
    from benchmarks import proxy

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "proxy.json"
        args = ["--out", str(out)]
        if quick:
            args += ["--megabytes", "20", "--runs", "1", "--round-trips", "600"]
        res: dict[str, Any] = {**meta(), **proxy.main(args)}
    res["figures"] = [
        figure(
            "fault proxy throughput ÷ direct",
            res["throughput_ratio_proxy_vs_direct"],
            None,
            None,
            "ratio",
        ),
        figure("fault proxy added latency p50", res["latency_added_us"]["p50"], None, None, "µs"),
    ]
    return finish(res)


def chart_proxy(res: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    t = {k: v for k, v in res["throughput_mb_s"].items() if k != "all_runs"}
    a.bar(list(t), list(t.values()))
    a.set(ylabel="MB/s", title="Throughput through the proxy")
    a.tick_params(axis="x", labelrotation=20, labelsize=7)
    lat = res["latency_round_trip"]
    names = list(lat)
    b.bar([i - 0.2 for i in range(len(names))], [lat[n]["p50_us"] for n in names], 0.4, label="p50")
    b.bar([i + 0.2 for i in range(len(names))], [lat[n]["p99_us"] for n in names], 0.4, label="p99")
    b.set_xticks(range(len(names)), names, rotation=20, fontsize=7)
    b.set(ylabel="round trip, µs", title="Latency through the proxy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ server (throughput, RSS)
def run_server(quick: bool) -> dict[str, Any]:
    from benchmarks import server

    if quick:
        # server.py's own --quick still takes over a minute: call its parts, smaller
        async def parts() -> dict[str, Any]:
            return {
                **meta(),
                "throughput": await server.throughput(10_000, 1),
            }

        res: dict[str, Any] = asyncio.run(parts())
    else:
        ns = argparse.Namespace(quick=False, tokens=server.TEN_MB, repeats=3)
        res = asyncio.run(server.main(ns))
    t = res["throughput"]
    mem = res.get("memory")
    res["figures"] = [
        figure(
            "throughput behind ÷ bare (verifying client)",
            round(t["ratio_behind_vs_bare"], 2),
            5.0,
            t["ratio_behind_vs_bare"] >= 5,
            "×",
        ),
        figure(
            "throughput behind, delivered (raw client)",
            round(t["behind_catch_up_raw"]["tokens_per_s"]),
            1_000_000,
            t["behind_catch_up_raw"]["tokens_per_s"] >= 1_000_000,
            "tokens/s",
        ),
        figure(
            "throughput behind, decoded + verified",
            round(t["behind_catch_up"]["tokens_per_s"]),
            1_000_000,
            t["behind_catch_up"]["tokens_per_s"] >= 1_000_000,
            "tokens/s",
        ),
        figure(
            "throughput live ÷ bare",
            round(t["ratio_live_vs_bare"], 2),
            0.8,
            t["ratio_live_vs_bare"] >= 0.8,
            "×",
        ),
    ]
    if mem is not None:  # not measured in --quick
        res["figures"] += [
            figure(
                "RSS per idle connection",
                round(mem["rss_per_idle_connection_kb"], 1),
                25.0,
                mem["rss_per_idle_connection_kb"] <= 25,
                "KB",
            ),
            figure(
                "RSS per running stream",
                round(mem["rss_per_running_stream_kb"], 1),
                None,
                None,
                "KB",
            ),
            figure(
                "RSS per MB of text in the log",
                round(mem["rss_per_mb_of_text"], 2),
                1.5,
                mem["rss_per_mb_of_text"] <= 1.5,
                "MB/MB",
            ),
        ]
    return res


def chart_server(res: dict[str, Any], path: Path) -> None:
    plt = _plt()
    t = res["throughput"]
    names = [k for k, v in t.items() if isinstance(v, dict) and "tokens_per_s" in v]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(names, [t[n]["tokens_per_s"] for n in names])
    ax.set_xscale("log")
    ax.axvline(1_000_000, color="red", ls=":", lw=0.8, label="aim 1M tokens/s")
    ax.set(xlabel="tokens/s delivered (20-byte tokens, one stream)", title="Throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ recovery (in-process aborts)
def run_recovery(quick: bool) -> dict[str, Any]:
    from benchmarks import recovery

    cuts, every = (20, 2000) if quick else (200, 2000)
    res = meta()
    modes = []
    for mode in ("live", "behind"):
        tokens = cuts * (every + 15000) * 2 + 10000
        modes.append(asyncio.run(recovery.measure(cuts, every, tokens, mode)))
    res.update(benchmark="recovery_in_process", modes=modes)
    res["figures"] = [
        figure(
            f"recovery, in-process server abort ({m['mode']}) p50 / p99",
            f"{m['recovery_ms']['p50']:.1f} / {m['recovery_ms']['p99']:.1f}",
            "≤ 10 / ≤ 50",
            m["met"],
            "ms",
        )
        for m in modes
    ]
    return finish(res)


def chart_recovery(res: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    phases = ("detect_ms", "reconnect_ms", "resume_ms", "recovery_ms")
    for k, m in enumerate(res["modes"]):
        xs = [i + (k - 0.5) * 0.35 for i in range(len(phases))]
        ax.bar(xs, [m[p]["p50"] for p in phases], 0.35, label=f"{m['mode']} p50")
        ax.scatter(xs, [m[p]["p99"] for p in phases], marker="_", s=300, label=f"{m['mode']} p99")
    ax.set_xticks(range(len(phases)), [p[:-3] for p in phases])
    ax.set(ylabel="ms after the cut", title="Recovery after in-process server aborts")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
