"""Print the figures of the latest full results as a Markdown table (for docs/benchmarks.md).

python -m benchmarks.report
"""

from __future__ import annotations

import json
import math
from typing import Any

from benchmarks.__main__ import BENCHMARKS, paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "—" if v is None else str(v)


def table() -> str:
    lines = [
        "| benchmark | figure | value | aim | met | load avg (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for name in BENCHMARKS:
        js, _, _ = paths(name, quick=False)
        if not js.exists():
            lines.append(f"| {name} | not run | | | | |")
            continue
        res = json.loads(js.read_text())
        load = res.get("load_average_before")
        load_s = _fmt(load[0]) if isinstance(load, list) else _fmt(load)
        for f in res.get("figures", []):
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            value = f"{_fmt(f['value'])} {f.get('unit', '')}".strip()
            lines.append(
                f"| {name} | {f['name']} | {value} | {_fmt(f['aim'])} | {met} | {load_s} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
