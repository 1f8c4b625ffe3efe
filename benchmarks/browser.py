"""The JS client in real Chromium (issue 14): recovery after fin/rst cuts, where its
time goes, a silent drop found, resume after a 30 s Page Lifecycle freeze, events
decoded and verified per second in the page, the bundle's size.

    python -m benchmarks.browser [--quick]

Two runs of ``tests/browser/measure.py`` (its docstring says what each figure is):
``backlog``, the agent writing as fast as it can (the page reads a backlog; also
the blackhole, end-to-end, decode and freeze figures), and ``live``, the agent
paced so the page keeps up (as with a model's tokens: the usual case). The server,
the fault proxy and Playwright share this process's event loop; the load average is
recorded beside the figures. Needs Debian's chromium, Playwright and the built
bundle (``./dev setup``); without them the result says why and has no figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, figure, meta

#: the parts of a recovery, in order (tests/browser/measure.py's breakdown)
PARTS = [
    "close_to_lost",
    "lost_to_new_socket",
    "connect",
    "hello_welcome",
    "resume",
    "verify",
    "deliver",
]


def run(quick: bool) -> dict[str, Any]:
    from unbroken.scenarios.browser import missing

    res: dict[str, Any] = {
        "benchmark": "browser",
        "meta": meta(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    why = missing()
    if why is not None:
        res.update(skipped=why, figures=[])
        return res
    from tests.browser.measure import main

    cuts = 4 if quick else 100
    res["backlog"] = asyncio.run(main(cuts, 0 if quick else 30.0, 14))
    res["live"] = asyncio.run(main(cuts, 0, 15, only_recovery=True, pace=0.02))
    res["figures"] = figures(res)
    return res


def figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    live = res["live"]["recovery_after_cut"]["all"]
    back = res["backlog"]["recovery_after_cut"]["all"]
    b = res["backlog"]
    own = sum(
        res["live"]["recovery_after_cut"]["breakdown_p50_ms"][k]
        for k in ("close_to_lost", "lost_to_new_socket", "verify", "deliver")
    )
    gz = b["bundle"]["min_gzip_bytes"]
    out = [
        figure("recovery after a cut, page keeping up, p50", live["p50_ms"], 20,
               live["p50_ms"] <= 20, "ms"),
        figure("recovery after a cut, page keeping up, p99", live["p99_ms"], 100,
               live["p99_ms"] <= 100, "ms"),
        figure("recovery after a cut, page behind, p50", back["p50_ms"], None, None, "ms"),
        figure("recovery after a cut, page behind, p99", back["p99_ms"], None, None, "ms"),
        figure("the client's own part of a recovery (p50)", round(own, 2), None, None, "ms"),
        figure("bundle, first load (the page bundle, unbroken.js: every feature), minified + gzip",
               gz, None, None, "bytes"),
        figure("bundle, all files (core + on-demand chunks: v1 codec, JS BLAKE2b), min + gzip",
               b["bundle"].get("total_min_gzip_bytes", gz), None, None, "bytes"),
    ]  # fmt: skip
    apps = b["bundle"].get("apps", {})
    core = next((v["gzip"] for k, v in apps.items() if k.startswith("core:")), None)
    if core is not None:
        out.append(figure("bundle, a minimal app on unbroken-client/core (esbuild), min + gzip",
                          core, 12_000, core <= 12_000, "bytes"))  # fmt: skip
    full = next((v["gzip"] for k, v in apps.items() if k.startswith("full:")), None)
    if full is not None:
        out.append(figure("bundle, the same app on unbroken-client (every feature), min + gzip",
                          full, None, None, "bytes"))  # fmt: skip
    if "blackhole_found" in b:
        p50 = b["blackhole_found"]["p50_ms"]
        out.append(figure("silent drop found, p50", p50, 1500, p50 <= 1500, "ms"))
        for key, label in (("decode_verify_in_page", "v1"), ("decode_verify_in_page_v2", "v2")):
            rate = max(r["per_second"] for r in b[key])
            out.append(
                figure(f"events decoded and verified per second in the page ({label})", rate,
                       500_000, rate >= 500_000, "events/s")
            )  # fmt: skip
    if "resume_after_freeze" in b:
        ms = max(b["resume_after_freeze"]["resume_to_first_event_ms"])
        out.append(figure("resume after a 30 s freeze → first new event", ms, 300, ms <= 300, "ms"))
    return out


def chart(res: dict[str, Any], path: Path) -> None:
    if not res.get("figures"):
        return
    from benchmarks.common import pyplot

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    rows = [("page keeping up", res["live"]), ("page behind a backlog", res["backlog"])]
    for y, (_, r) in enumerate(rows):
        left = 0.0
        for i, k in enumerate(PARTS):
            w = r["recovery_after_cut"]["breakdown_p50_ms"].get(k, 0.0)
            a.barh(y, w, left=left, color=f"C{i}", label=k if y == 0 else None)
            left += w
    a.set_yticks(range(len(rows)), [label for label, _ in rows])
    a.set(xlabel="ms (medians of the cuts)", title="Where a recovery in the page goes")
    a.axvline(20, color="k", linestyle=":", linewidth=1)
    a.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    labels, p50, p99 = [], [], []
    for label, r in rows:
        s = r["recovery_after_cut"]["all"]
        labels.append(label.replace("page ", ""))
        p50.append(s["p50_ms"])
        p99.append(s["p99_ms"])
    x = range(len(labels))
    b.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    b.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    b.set_xticks(list(x), labels)
    b.set(ylabel="ms", yscale="log", title="Recovery after a cut (aim 20 / 100 ms)")
    b.axhline(20, color="k", linestyle=":", linewidth=1)
    b.axhline(100, color="k", linestyle="--", linewidth=1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = parser.parse_args(argv)
    res = run(args.quick)
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    stem = "browser.quick" if args.quick else "browser"
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    chart(res, RESULTS / f"{stem}.png")
    for f in res["figures"]:
        print(f"{f['name']}: {f['value']} {f['unit']}" + (f" (aim {f['aim']})" if f["aim"] else ""))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
