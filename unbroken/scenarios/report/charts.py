"""The report's charts: matplotlib figures rendered to inline SVG (no files, no network)."""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..catalog import TARGET_BY_ID, covered, scenario_order
from ..results import Results, RunResult, pooled_samples

_PALETTE = {
    "TC1": "#4c72b0",
    "TC2": "#dd8452",
    "TC3": "#55a868",
    "TC4": "#c44e52",
    "TC5": "#8172b3",
    "TC6": "#937860",
    "TC7": "#da8bc3",
    "TC8": "#8c8c8c",
    "TC9": "#ccb974",
}


#: How to get the charts when matplotlib is missing (the ``report`` extra).
INSTALL_HINT = "pip install 'unbroken[report]'"


def unavailable() -> str | None:
    """Why charts cannot be drawn (matplotlib, the ``report`` extra, is not importable),
    with how to get them; None when they can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed (the report extra): {INSTALL_HINT}"
    return None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "figure.dpi": 100,
        }
    )
    return plt


def _tight(fig: Any) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny matrices leave little room: not a problem
        fig.tight_layout()


def _horizontal() -> dict[str, Any]:
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    svg = buf.getvalue()
    svg = svg[svg.find("<svg") :]
    # responsive: drop fixed size, keep the viewBox
    return re.sub(r'(<svg[^>]*?) width="[^"]+" height="[^"]+"', r"\1", svg, count=1)


def _by_scenario(runs: Iterable[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        out[r.spec.scenario].append(r)
    return out


def recovery_distribution(runs: Iterable[RunResult]) -> str:
    """Reconnect, resume and complete-recovery times per scenario, with the targets."""
    plt = _plt()
    groups = _by_scenario(runs)
    sids = [s for s in covered() if s in groups]
    panels = (
        ("reconnect", "reconnection (fault → connected)", TARGET_BY_ID["reconnect"].threshold),
        ("resume", "resume (connected → first event)", TARGET_BY_ID["resume"].threshold),
        ("recovery", "complete recovery (fault → end)", TARGET_BY_ID["recovery"].threshold),
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.42 * max(4, len(sids)) + 1.0), sharey=True)
    for ax, (key, title, target) in zip(axes, panels, strict=True):
        data = [[max(v, 1e-4) for v in pooled_samples(groups[s], key)] for s in sids]
        pos = list(range(len(sids)))[::-1]
        nonempty = [(d, p) for d, p in zip(data, pos, strict=True) if d]
        if nonempty:
            ax.boxplot(
                [d for d, _ in nonempty],
                positions=[p for _, p in nonempty],
                **_horizontal(),
                widths=0.6,
                showfliers=False,
                medianprops={"color": "#222"},
                boxprops={"color": "#555"},
                whiskerprops={"color": "#555"},
                capprops={"color": "#555"},
            )
            for (d, p), sid in zip(
                nonempty, [s for s, d in zip(sids, data, strict=True) if d], strict=True
            ):
                jitter = [p + ((i * 37) % 11 - 5) / 30 for i in range(len(d))]
                ax.scatter(d, jitter, s=6, alpha=0.35, color=_PALETTE.get(sid, "#333"), lw=0)
        ax.axvline(target, color="#c0392b", ls="--", lw=1.2)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, max(10.0, target * 2))
        ax.set_title(f"{title}\ntarget < {target:g} s (dashed)")
        ax.set_xlabel("seconds (log)")
        ax.grid(axis="x", alpha=0.25)
    axes[0].set_yticks(list(range(len(sids)))[::-1])
    axes[0].set_yticklabels(sids)
    _tight(fig)
    return _svg(fig)


def completion(runs: Iterable[RunResult]) -> str:
    """Exact streams per scenario (%), against the 99.95 % completion target."""
    plt = _plt()
    groups = _by_scenario(runs)
    sids = [s for s in covered() if s in groups]
    rates, labels = [], []
    for s in sids:
        group = groups[s]
        streams = sum(max(r.streams, 1) for r in group)
        exact = sum(r.streams_exact for r in group)
        rates.append(100.0 * exact / streams if streams else 0.0)
        labels.append(f"{exact:,}/{streams:,}")
    fig, ax = plt.subplots(figsize=(5.4, 0.42 * max(4, len(sids)) + 1.0))
    lo = min([99.0, *[r - 0.5 for r in rates]])
    pos = list(range(len(sids)))[::-1]
    colors = ["#2e8b57" if r >= 99.95 else "#c0392b" for r in rates]
    ax.barh(pos, [r - lo for r in rates], left=lo, color=colors, height=0.6)
    for p, r, lab in zip(pos, rates, labels, strict=True):
        ax.text(
            lo + 0.02 * (100 - lo),
            p,
            f"{r:.2f} %  ({lab} streams)",
            va="center",
            color="white",
            fontsize=8,
            fontweight="bold",
        )
    ax.axvline(99.95, color="#c0392b", ls="--", lw=1.2)
    ax.text(99.95, len(sids) - 0.45, "target 99.95 %", color="#c0392b", fontsize=8, ha="right")
    ax.set_xlim(lo, 100.0)
    ax.set_yticks(pos)
    ax.set_yticklabels(sids)
    ax.set_xlabel("streams complete and exact (%)")
    ax.set_title("completion rate per scenario")
    _tight(fig)
    return _svg(fig)


def resent(runs: Iterable[RunResult]) -> str:
    """Bytes the server re-sent after each resume against what was in flight at the cut;
    the shaded band is the allowance of one frame (TC8's bound)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    xs_all: list[float] = []
    for sid, group in sorted(_by_scenario(runs).items(), key=lambda kv: scenario_order(kv[0])):
        pts = [
            (r.metrics.bytes_inflight, r.metrics.bytes_resent)
            for r in group
            if r.metrics.bytes_inflight is not None and r.metrics.bytes_resent is not None
        ]
        if not pts:
            continue
        x = [max(1.0, float(a)) for a, _ in pts]
        y = [max(1.0, float(b)) for _, b in pts]
        xs_all.extend(x)
        big = sid == "TC8"
        ax.scatter(
            x,
            y,
            s=26 if big else 12,
            alpha=0.8 if big else 0.5,
            label=sid,
            color=_PALETTE.get(sid, "#333"),
            marker="D" if big else "o",
            lw=0,
        )
    top = max([1e4, *xs_all]) * 3
    frame = 256 * 1024
    grid = [10 ** (k / 10) for k in range(0, int(10 * math.log10(top)) + 1)]
    ax.plot(grid, grid, color="#555", lw=1, label="re-sent = in flight")
    ax.plot(
        grid,
        [v + frame for v in grid],
        color="#c0392b",
        lw=1.2,
        ls="--",
        label="bound: in flight + one frame",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1, top)
    ax.set_ylim(1, top * 1.5)
    ax.set_xlabel("bytes in flight at the cut (per run)")
    ax.set_ylabel("bytes re-sent after resume")
    ax.set_title("re-sent bytes vs bytes in flight")
    ax.legend(fontsize=7, ncol=2, loc="upper left", frameon=False)
    ax.grid(alpha=0.2)
    _tight(fig)
    return _svg(fig)


def memory(samples: Sequence[tuple[float, float, float]]) -> str:
    """Process RSS and the stream log's bytes over the whole matrix (``samples``:
    :attr:`Results.memory <unbroken.scenarios.results.Results.memory>`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 2.8))
    if samples:
        t = [m[0] for m in samples]
        ax.plot(
            t,
            [m[1] for m in samples],
            color="#4c72b0",
            lw=1,
            label="process RSS (server + proxy + clients)",
        )
        ax.fill_between(
            t,
            [m[2] for m in samples],
            color="#dd8452",
            alpha=0.5,
            lw=0,
            label="stream log (buffered answers)",
        )
    ax.axhline(TARGET_BY_ID["memory"].threshold, color="#c0392b", ls="--", lw=1.2)
    ax.text(
        0,
        TARGET_BY_ID["memory"].threshold,
        " buffer target 50 MB",
        color="#c0392b",
        fontsize=8,
        va="bottom",
    )
    ax.set_xlabel("seconds since the matrix started")
    ax.set_ylabel("MB")
    ax.set_title("memory over the run" if samples else "memory over the run: not sampled")
    if samples:
        ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.grid(alpha=0.2)
    _tight(fig)
    return _svg(fig)


def all_charts(results: Results) -> dict[str, str]:
    """Every chart by name (SVG text)."""
    return {
        "recovery": recovery_distribution(results.runs),
        "completion": completion(results.runs),
        "resent": resent(results.runs),
        "memory": memory(results.memory),
    }


def trend_chart(rows: Sequence[Any], order: dict[str, int]) -> str:
    """Completion, recovery p95 and CPU overhead per scenario over the history's runs
    (``rows``: :class:`~unbroken.scenarios.history.ScenarioRow`; ``order``: run id → its
    place in the history), as an SVG document."""
    plt = _plt()
    panels = (
        ("completion", "exact streams (%)", 1.0),
        ("recovery_p95_s", "recovery p95 (ms)", 1000.0),
        ("cpu_overhead", "CPU overhead (%)", 1.0),
    )
    runs = sorted({r.run_id for r in rows}, key=lambda rid: order.get(rid, 0))
    x_of = {rid: i for i, rid in enumerate(runs)}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    series: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        series[r.scenario].append(r)
    for ax, (attr, title, scale) in zip(axes, panels, strict=True):
        for sid in sorted(series, key=scenario_order):
            pts = [
                (x_of[r.run_id], getattr(r, attr) * scale)
                for r in series[sid]
                if getattr(r, attr) is not None
            ]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    ms=3,
                    lw=1.2,
                    label=sid,
                    color=_PALETTE.get(sid),
                )
        ax.set_title(title)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([rid.split("-")[0][4:13] for rid in runs], rotation=45, fontsize=7)
    axes[0].legend(fontsize=7, ncol=2)
    _tight(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
