"""Run every benchmark: ``python -m benchmarks [--quick] [names…]``.

Each benchmark runs in a child process of its own (fresh memory, event loop and
sockets) and writes ``benchmarks/results/<name>.json`` and ``<name>.png`` (for the
modules run through ``benchmarks/suite.py``, ``suite_<name>.*``, so the files their
own command writes are left alone); with
``--quick`` (small sizes: a smoke run, figures not meaningful) the files are
``<name>.quick.json`` / ``.png`` so the full results are kept. All traffic stays
on 127.0.0.1. The child's output goes to ``benchmarks/results/<name>[.quick].log``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.common import RESULTS, ROOT

# name → (run, chart), as "module:function"; run(quick) -> dict, chart(result, png path)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "codec": ("benchmarks.suite:run_codec", "benchmarks.suite:chart_codec"),
    "proxy": ("benchmarks.suite:run_proxy", "benchmarks.suite:chart_proxy"),
    "server": ("benchmarks.suite:run_server", "benchmarks.suite:chart_server"),
    "recovery": ("benchmarks.suite:run_recovery", "benchmarks.suite:chart_recovery"),
    "concurrency": ("benchmarks.concurrency:run", "benchmarks.concurrency:chart"),
    "faults": ("benchmarks.faults:run", "benchmarks.faults:chart"),
    "memory": ("benchmarks.memory:run", "benchmarks.memory:chart"),
    "overhead": ("benchmarks.overhead:run", "benchmarks.overhead:chart"),
    "tc9": ("benchmarks.tc9:run", "benchmarks.tc9:chart"),
    "wire": ("benchmarks.wire:run", "benchmarks.wire:chart"),
    "append": ("benchmarks.append:run", "benchmarks.append:chart"),
    "redis": ("benchmarks.redis:run", "benchmarks.redis:chart"),
    "netns_faults": ("benchmarks.netns_faults:run", "benchmarks.netns_faults:chart"),
    "overload": ("benchmarks.overload:run", "benchmarks.overload:chart"),
    "degradation": ("benchmarks.degradation:run", "benchmarks.degradation:chart"),
    "shedding": ("benchmarks.shedding:run", "benchmarks.shedding:chart"),
    "auth": ("benchmarks.auth:run", "benchmarks.auth:chart"),
    "scale": ("benchmarks.scale:run", "benchmarks.scale:chart"),
    "browser": ("benchmarks.browser:run", "benchmarks.browser:chart"),
    "metrics": ("benchmarks.metrics:run", "benchmarks.metrics:chart"),
}
# a benchmark's child is killed after this many seconds
LIMIT = {"quick": 110.0, "full": 1800.0}


def _load(spec: str) -> Any:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def paths(name: str, quick: bool) -> tuple[Path, Path, Path]:
    # modules run through benchmarks/suite.py keep their own CLI's <name>.json untouched
    stem = f"suite_{name}" if BENCHMARKS[name][0].startswith("benchmarks.suite:") else name
    stem = f"{stem}.quick" if quick else stem
    return RESULTS / f"{stem}.json", RESULTS / f"{stem}.png", RESULTS / f"{stem}.log"


def child(name: str, quick: bool) -> int:
    """Run one benchmark in this process: JSON, then the chart."""
    run, chart = (_load(s) for s in BENCHMARKS[name])
    t0 = time.monotonic()
    result: dict[str, Any] = run(quick)
    result.setdefault("benchmark", name)
    result["quick"] = quick
    result["seconds"] = round(time.monotonic() - t0, 1)
    result.setdefault("load_average_after", [round(x, 2) for x in os.getloadavg()])
    js, png, _ = paths(name, quick)
    js.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(result, indent=2, default=str, allow_nan=True) + "\n")
    chart(result, png)
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "—" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}"
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes in all")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.quick)
    console = Console()
    if args.list:
        for name, (run, _) in BENCHMARKS.items():
            console.print(f"{name:12} {run}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    limit = LIMIT["quick" if args.quick else "full"]
    status: dict[str, str] = {}
    started = time.monotonic()
    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.completed:>3.0f}/{task.total:<3.0f}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
    )
    with Progress(*columns, console=console) as bar:
        tasks = {n: bar.add_task(n, total=1, state="waiting") for n in names}
        for name in names:
            task = tasks[name]
            bar.update(task, state="running")
            js, _, log = paths(name, args.quick)
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "benchmarks", "--child", name]
            cmd += ["--quick"] if args.quick else []
            t0 = time.monotonic()
            with log.open("w") as logf:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=logf, text=True, bufsize=1
                )
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("@progress "):
                        done, total = (int(x) for x in line.split()[1:3])
                        bar.update(task, completed=done, total=max(1, total))
                    else:
                        logf.write(line)
                    if time.monotonic() - t0 > limit:
                        proc.kill()
                        break
                try:
                    rc = proc.wait(max(1.0, limit - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
            took = time.monotonic() - t0
            ok = rc == 0 and js.exists() and js.stat().st_mtime >= time.time() - took - 1
            status[name] = f"ok {took:.0f} s" if ok else f"FAILED (exit {rc}; see {log.name})"
            bar.update(task, completed=bar.tasks[task].total, state=status[name])

    table = Table(title=f"figures ({'quick: smoke sizes' if args.quick else 'full run'})")
    for col in ("benchmark", "figure", "value", "aim", "met"):
        table.add_column(col)
    for name in names:
        js, _, _ = paths(name, args.quick)
        if not status[name].startswith("ok"):
            table.add_row(name, status[name], "", "", "")
            continue
        for f in json.loads(js.read_text()).get("figures", []):
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[f["met"]]
            value = f"{_fmt(f['value'])} {f.get('unit', '')}".strip()
            table.add_row(name, f["name"], value, _fmt(f["aim"]), met)
    console.print(table)
    total = time.monotonic() - started
    failed = [n for n in names if not status[n].startswith("ok")]
    console.print(
        f"{len(names) - len(failed)}/{len(names)} benchmarks ran in {total:.0f} s; "
        f"results in {RESULTS.relative_to(ROOT)}/"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
