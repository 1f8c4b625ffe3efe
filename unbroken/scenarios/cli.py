"""``unbroken chaos run`` and ``unbroken chaos report``: the reliability scenarios as a
matrix, progress (a live table on a terminal, one line per run otherwise),
``results.json`` and a self-contained ``report.html``.

Registered in :mod:`unbroken.cli`; heavy imports happen inside the commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shlex
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from .catalog import RunSpec
    from .dashboard import Dashboard
    from .report import Outcome
    from .results import Results, RunResult
    from .user_app import Call, Service

ProgressHook = Callable[["RunSpec", "RunResult | None"], None]
MatrixRunner = Callable[
    [ProgressHook, Callable[[], bool]],
    Awaitable[tuple[list["RunResult"], list[tuple[float, float, float]], float]],
]

chaos_app = typer.Typer(
    name="chaos",
    help="Run the reliability scenarios against a real server, fault proxy and client.",
    no_args_is_help=True,
    add_completion=False,
)

_LIST = "comma-separated or repeated"


@dataclass(frozen=True, slots=True)
class _Live:
    """``--dashboard``: serve the run's live page (on ``port``; 0: a free one)."""

    enabled: bool
    port: int = 0


def _tier_help() -> str:
    """The ``--quick/--full`` help, with each tier's size counted from the matrix."""
    from .catalog import full_matrix, quick_matrix

    return (
        "Quick tier (every scenario under the five core network conditions with small "
        "answers, plus "
        f"a sample of larger answers and other conditions: {len(quick_matrix())} runs) or "
        f"the full crossed matrix ({len(full_matrix()):,} runs, 1,000 streams in TC9). "
        "In the quick tier, a size, timing, condition or fault you name that it has no "
        "run with comes from the full matrix."
    )


def _names_help(kind: str) -> str:
    from .catalog import CONDITIONS, FAULTS

    names = list(CONDITIONS) if kind == "conditions" else list(FAULTS)
    return f"{', '.join(names)} ({_LIST})."


@chaos_app.command("run")
def run_command(
    scenarios: Annotated[
        list[str] | None,
        typer.Option("--scenarios", "-s", help=f"Scenarios, e.g. TC1,TC8 or 1,8 ({_LIST})."),
    ] = None,
    sizes: Annotated[
        list[str] | None, typer.Option(help=f"small, medium, large, xlarge ({_LIST}).")
    ] = None,
    timings: Annotated[
        list[str] | None,
        typer.Option(help=f"immediate, early, mid, late, final; TC8: p10..p95 ({_LIST})."),
    ] = None,
    conditions: Annotated[
        list[str] | None,
        typer.Option(help=_names_help("conditions")),
    ] = None,
    faults: Annotated[list[str] | None, typer.Option(help=_names_help("faults"))] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Run the selection N times.")] = 1,
    out: Annotated[
        Path, typer.Option(help="Directory for results.json, report.html and artefacts/.")
    ] = Path("chaos-results"),
    baseline: Annotated[
        str | None,
        typer.Option(
            help="An earlier run: its results.json, or its id in the history (or 'latest'): "
            "report regressions, exit 1 on any."
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            help="The SQLite history this run is appended to (default: OUT/history.sqlite); "
            "regressions against its previous run are flagged."
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve a live dashboard of the run on 127.0.0.1 (its URL is printed).",
        ),
    ] = False,
    dashboard_port: Annotated[
        int, typer.Option(min=0, max=65535, help="The dashboard's port (0: a free one).")
    ] = 0,
    quick: Annotated[
        bool,
        typer.Option("--quick/--full", help=_tier_help()),
    ] = True,
    keep_artefacts: Annotated[
        bool, typer.Option(help="Keep debugging artefacts of every run, not only failed ones.")
    ] = False,
    list_runs: Annotated[bool, typer.Option("--list", help="Print the runs and exit.")] = False,
    strict_targets: Annotated[
        bool,
        typer.Option(
            help="Fail on a missed informational target too (CPU overhead, which a shared "
            "or busy machine sets more than the code); by default it is reported only."
        ),
    ] = False,
    app_target: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="Your own app, module:attribute (an Unbroken app, or a function returning "
            "one): served here behind the fault proxy; the scenarios run your agents "
            "(--agent, --input).",
            rich_help_panel="Your own service",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="A running service, ws://host:port/path: the fault proxy is put in front "
            "of it; the scenarios run your agents (--agent, --input).",
            rich_help_panel="Your own service",
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="The agent to run.", rich_help_panel="Your own service"),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="The agent's input as JSON (repeat for several: the streams take them in "
            "turn). Default: null.",
            rich_help_panel="Your own service",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="The clients' token, for a service that requires one.",
            rich_help_panel="Your own service",
        ),
    ] = None,
    path: Annotated[
        str,
        typer.Option(help="Where --app answers WebSockets.", rich_help_panel="Your own service"),
    ] = "/ws",
    app_dir: Annotated[
        str,
        typer.Option(help="Directory to import --app from.", rich_help_panel="Your own service"),
    ] = ".",
    same_answer: Annotated[
        bool,
        typer.Option(
            "--same-answer/--any-answer",
            help="Compare each stream with the fault-free run's events byte for byte (the "
            "agent answers an input the same every time), or judge it by its digest chain "
            "alone (an agent whose answer varies, e.g. a sampled model).",
            rich_help_panel="Your own service",
        ),
    ] = True,
) -> None:
    """Run the matrix, write results.json and report.html (exit 1: a failed run, a
    missed target or a regression). With --app or --url: against your own service."""
    from rich.console import Console

    from ..errors import ConfigError
    from .catalog import full_matrix, quick_matrix, select, select_filled

    console = Console()
    tier: Literal["quick", "full"] = "quick" if quick else "full"
    history_path = history or out / "history.sqlite"
    live = _Live(dashboard, dashboard_port)
    if app_target is not None or url is not None:
        _run_service(
            console,
            tier,
            app_target=app_target,
            url=url,
            agent=agent,
            inputs=inputs,
            token=token,
            path=path,
            app_dir=app_dir,
            same_answer=same_answer,
            filters={
                "scenarios": scenarios,
                "timings": timings,
                "conditions": conditions,
                "faults": faults,
            },
            sizes=sizes,
            repeat=repeat,
            out=out,
            baseline=baseline,
            list_runs=list_runs,
            strict_targets=strict_targets,
            keep_artefacts=keep_artefacts,
            history=history_path,
            live=live,
        )
    if agent is not None or inputs:
        console.print("[red]error:[/] --agent and --input name your agent: give --app or --url")
        raise typer.Exit(2)
    filters = {
        "scenarios": scenarios,
        "sizes": sizes,
        "timings": timings,
        "conditions": conditions,
        "faults": faults,
    }
    filled: list[str] = []
    try:
        if tier == "quick":
            specs, filled = select_filled(quick_matrix(), full_matrix(), **filters, repeat=repeat)
        else:
            specs = select(full_matrix(), **filters, repeat=repeat)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if not specs:
        console.print("[red]error:[/] the selection is empty")
        raise typer.Exit(2)
    if filled:
        console.print(
            f"the quick tier has no run with {', '.join(filled)}: "
            "those runs come from the full matrix"
        )
    if list_runs:
        for spec in specs:
            console.print(spec.id)
        console.print(f"{len(specs)} runs")
        raise typer.Exit(0)
    base = _read_baseline(baseline, console, history_path)
    command = _command(tier, scenarios, sizes, timings, conditions, faults, repeat, out, baseline)
    if strict_targets:
        command += " --strict-targets"
    if history is not None:
        command += f" --history {shlex.quote(str(history))}"
    results = _run(specs, tier, out, keep_artefacts, command, console, dash=live)
    previous = _append_history(results, history_path, console)
    outcome = _finish(
        results,
        out,
        base,
        console,
        strict_targets=strict_targets,
        previous=previous,
        baseline_name=_baseline_name(baseline),
    )
    raise typer.Exit(0 if outcome.ok else 1)


@chaos_app.command("report")
def report_command(
    results_file: Annotated[Path, typer.Argument(help="A results.json from `chaos run`.")],
    baseline: Annotated[
        str | None,
        typer.Option(
            help="An earlier run to compare with: its results.json, or its id in the history."
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(help="The history a run id is looked up in (default: beside the results)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the page (default: beside the results).")
    ] = None,
    strict_targets: Annotated[
        bool,
        typer.Option(help="Fail on a missed informational target too (CPU overhead)."),
    ] = False,
) -> None:
    """Rebuild report.html from a results.json (exit 1: a failure or regression)."""
    from rich.console import Console

    from .results import Results

    console = Console()
    try:
        results = Results.read(results_file)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/] cannot read {results_file}: {exc}")
        raise typer.Exit(2) from None
    base = _read_baseline(baseline, console, history or results_file.with_name("history.sqlite"))
    path = out or results_file.with_name("report.html")
    outcome = _finish(
        results,
        path.parent,
        base,
        console,
        report=path,
        write_results=False,
        strict_targets=strict_targets,
        baseline_name=_baseline_name(baseline),
    )
    raise typer.Exit(0 if outcome.ok else 1)


@chaos_app.command("trend")
def trend_command(
    history: Annotated[Path, typer.Option(help="The history `chaos run` appended to.")] = Path(
        "chaos-results/history.sqlite"
    ),
    scenarios: Annotated[
        list[str] | None,
        typer.Option("--scenarios", "-s", help=f"Scenarios, e.g. TC1,TC8 or 1,8 ({_LIST})."),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="Show the last N runs.")] = 20,
    chart: Annotated[
        Path | None,
        typer.Option(help="Where to write the chart (default: trend.svg beside the history)."),
    ] = None,
) -> None:
    """Completion rate, recovery p95 and CPU overhead per scenario over the runs in the
    history, each run's regressions against the one before flagged (exit 1: the latest
    run regressed)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..errors import ConfigError
    from .history import History, ScenarioRow, changes
    from .report.charts import unavailable

    console = Console()
    if not history.is_file():
        console.print(f"[red]error:[/] no history at {history} (`chaos run` writes one)")
        raise typer.Exit(2)
    wanted = [_scenario_id(x) for raw in scenarios or [] for x in raw.split(",") if x.strip()]
    try:
        with History(history) as h:
            runs = h.runs()[-last:]
            rows = h.scenario_rows(wanted or None)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    shown = {r.run_id for r in runs}
    order = {r.run_id: r.seq for r in runs}
    t = Table(title=f"trend: {len(runs)} runs in {history}")
    for col in (
        "scenario",
        "run",
        "started",
        "runs",
        "completion",
        "recovery p95",
        "CPU",
        "vs previous",
    ):
        t.add_column(col)
    latest_regressed = False
    by_scenario: dict[str, list[ScenarioRow]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for sid, series in by_scenario.items():
        prev: ScenarioRow | None = None
        for row in series:
            flags: list[str] = changes(prev, row) if prev is not None else []
            prev = row
            if row.run_id not in shown:
                continue
            failing = [f for f in flags if "informational" not in f]
            if failing and runs and row.run_id == runs[-1].run_id:
                latest_regressed = True
            t.add_row(
                sid,
                row.run_id,
                row.started[:16].replace("T", " "),
                f"{row.runs - row.failed}/{row.runs}",
                "—" if row.completion is None else f"{row.completion:.1f} %",
                "—" if row.recovery_p95_s is None else f"{row.recovery_p95_s * 1000:.0f} ms",
                "—" if row.cpu_overhead is None else f"{row.cpu_overhead:+.0f} %",
                "[red]" + escape("; ".join(flags)) + "[/]" if failing else escape("; ".join(flags)),
            )
        t.add_section()
    console.print(t)
    why = unavailable()
    if why is not None:
        console.print(f"[yellow]no chart[/]: {escape(why)}", highlight=False, soft_wrap=True)
    elif rows:
        from .report.charts import trend_chart

        path = chart or history.with_name("trend.svg")
        path.write_text(trend_chart([r for r in rows if r.run_id in shown], order), "utf-8")
        console.print(f"chart: {path}", highlight=False)
    if latest_regressed:
        console.print("[bold red]the latest run regressed against the one before")
    raise typer.Exit(1 if latest_regressed else 0)


def _scenario_id(raw: str) -> str:
    raw = raw.strip().upper()
    return f"TC{raw}" if raw.isdigit() else raw


# ------------------------------------------------------------------ your own service
def _run_service(
    console: Console,
    tier: Literal["quick", "full"],
    *,
    app_target: str | None,
    url: str | None,
    agent: str | None,
    inputs: list[str] | None,
    token: str | None,
    path: str,
    app_dir: str,
    same_answer: bool,
    filters: dict[str, list[str] | None],
    sizes: list[str] | None,
    repeat: int,
    out: Path,
    baseline: str | None,
    list_runs: bool,
    strict_targets: bool,
    keep_artefacts: bool = False,
    history: Path | None = None,
    live: _Live | None = None,
) -> None:
    """``chaos run --app/--url``: the scenarios whose faults are on the network path,
    against your agents; exits."""
    from ..errors import ConfigError
    from .user_app import Call, Service, load_app, select_user_runs

    def fail(message: str) -> typer.Exit:
        console.print(f"[red]error:[/] {message}", highlight=False)
        return typer.Exit(2)

    if app_target is not None and url is not None:
        raise fail("give --app or --url, not both")
    if agent is None:
        raise fail("name the agent to run: --agent NAME (and its input: --input JSON)")
    if sizes:
        raise fail("--sizes does not apply to your service: the answer's size is your agent's")
    try:
        given: list[Any] = [json.loads(raw) for raw in inputs] if inputs else [None]
    except json.JSONDecodeError as exc:
        raise fail(f"--input must be JSON: {exc}") from None
    calls = [Call(agent, value) for value in given]
    try:
        specs = select_user_runs(tier, **filters, repeat=repeat)
        service = (
            Service(app=load_app(app_target, app_dir), path=path, token=token)
            if app_target is not None
            else Service(url=url, token=token)
        )
        if url is not None:
            from .harness.chaos import _upstream

            _upstream(url)  # a clear error before anything runs
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not specs:
        raise fail("the selection is empty")
    if list_runs:
        for spec in specs:
            console.print(spec.id)
        console.print(f"{len(specs)} runs")
        raise typer.Exit(0)
    history_path = history or out / "history.sqlite"
    base = _read_baseline(baseline, console, history_path)
    args = ["unbroken", "chaos", "run", f"--{tier}"]
    args += ["--app", app_target] if app_target is not None else ["--url", str(url)]
    args += ["--agent", agent]
    for raw in inputs or []:
        args += ["--input", raw]
    if app_target is not None and path != "/ws":
        args += ["--path", path]
    if not same_answer:
        args.append("--any-answer")
    for name, values in filters.items():
        if values:
            args += [f"--{name}", ",".join(values)]
    if repeat != 1:
        args += ["--repeat", str(repeat)]
    args += ["--out", str(out)]
    if strict_targets:
        args.append("--strict-targets")
    described = (
        f"{service.where}: agent {agent!r}, "
        + (f"{len(calls)} inputs" if len(calls) > 1 else f"input {json.dumps(given[0])}")
        + ("" if same_answer else " (judged by the digest chain alone)")
    )
    console.print(f"against {described}", highlight=False)
    try:
        results = _run(
            specs,
            tier,
            out,
            keep_artefacts,
            shlex.join(args),
            console,
            runner=_service_runner(service, calls, same_answer, specs, out, keep_artefacts),
            dash=live,
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None
    results.service = described
    results.write(out / "results.json")
    previous = _append_history(results, history_path, console)
    outcome = _finish(
        results,
        out,
        base,
        console,
        strict_targets=strict_targets,
        previous=previous,
        baseline_name=_baseline_name(baseline),
    )
    if live is not None:
        raise typer.Exit(0 if outcome.ok else 1)


def _service_runner(
    service: Service,
    calls: list[Call],
    same_answer: bool,
    specs: list[RunSpec],
    out: Path,
    keep_artefacts: bool,
) -> MatrixRunner:
    from .user_app import run_user_matrix

    async def runner(
        on_progress: ProgressHook, stop: Callable[[], bool]
    ) -> tuple[list[RunResult], list[tuple[float, float, float]], float]:
        done = await run_user_matrix(
            service,
            calls,
            specs,
            repeatable=same_answer,
            on_progress=on_progress,
            stop=stop,
            out_dir=out,
            keep_artefacts=keep_artefacts,
        )
        return done.results, done.memory, done.seconds

    return runner


# ------------------------------------------------------------------ helpers
def _read_baseline(value: str | None, console: Console, history: Path) -> Results | None:
    """``--baseline``: a results.json, else a run id (or ``latest``) in the history."""
    from ..errors import ConfigError
    from .history import History
    from .results import Results

    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        try:
            return Results.read(path)
        except (OSError, ValueError) as exc:
            console.print(f"[red]error:[/] cannot read the baseline {path}: {exc}")
            raise typer.Exit(2) from None
    if not history.is_file():
        console.print(
            f"[red]error:[/] the baseline {value!r} is neither a results.json nor a run in "
            f"a history ({history} does not exist; --history names another)",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        with History(history) as h:
            return h.results(value)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _baseline_name(value: str | None) -> str:
    if value is None:
        return "the baseline"
    return f"the baseline {Path(value).name if Path(value).is_file() else value}"


def _append_history(results: Results, path: Path, console: Console) -> tuple[str, Results] | None:
    """Append the run to the history; returns the previous run there (id, results), if
    any. A history that cannot be written is reported, never fatal to the run."""
    from ..errors import ConfigError
    from .history import History

    try:
        with History(path) as h:
            last = h.last_id()
            previous = (last, h.results(last)) if last is not None else None
            run_id = h.append(results)
    except (ConfigError, OSError) as exc:
        console.print(f"[yellow]history not written[/]: {exc}", highlight=False)
        return None
    console.print(f"history: {path} (run {run_id})", highlight=False)
    return previous


def _command(
    tier: str,
    scenarios: list[str] | None,
    sizes: list[str] | None,
    timings: list[str] | None,
    conditions: list[str] | None,
    faults: list[str] | None,
    repeat: int,
    out: Path,
    baseline: str | None,
) -> str:
    args = ["unbroken", "chaos", "run", f"--{tier}"]
    for name, values in (
        ("--scenarios", scenarios),
        ("--sizes", sizes),
        ("--timings", timings),
        ("--conditions", conditions),
        ("--faults", faults),
    ):
        if values:
            args += [name, ",".join(values)]
    if repeat != 1:
        args += ["--repeat", str(repeat)]
    args += ["--out", str(out)]
    if baseline is not None:
        args += ["--baseline", baseline]
    return shlex.join(args)


def _run(
    specs: list[RunSpec],
    tier: str,
    out: Path,
    keep_artefacts: bool,
    command: str,
    console: Console,
    *,
    runner: MatrixRunner | None = None,
    dash: _Live | None = None,
) -> Results:
    from collections import Counter

    from rich.console import Group
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from .catalog import scenario_order
    from .results import Results, machine_info
    from .runner import run_matrix

    out.mkdir(parents=True, exist_ok=True)
    results = Results(
        tier=tier,
        command=command,
        started=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        machine=machine_info(),
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("starting", total=len(specs))
    totals = Counter(s.scenario for s in specs)
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    worst: dict[str, float] = {}
    current: list[str] = [""]

    def table() -> Table:
        t = Table(expand=False, title=f"{tier} tier: {len(specs)} runs → {out}")
        for col in ("scenario", "done", "failed", "worst recovery", "now"):
            t.add_column(col)
        for sid in sorted(totals, key=scenario_order):
            bad = failed[sid]
            t.add_row(
                sid,
                f"{done[sid]}/{totals[sid]}",
                f"[red]{bad}[/]" if bad else "[green]0[/]",
                f"{worst[sid] * 1000:.0f} ms" if sid in worst else "—",
                current[0] if current[0].startswith(sid + "-") else "",
            )
        return t

    # a terminal gets a live table; a log (CI, a pipe) one plain line per run
    terminal = console.is_terminal
    live = (
        Live(Group(progress, table()), console=console, refresh_per_second=2) if terminal else None
    )
    if not terminal:
        runs = f"{len(specs)} run{'s' if len(specs) != 1 else ''}"
        console.print(f"{tier} tier: {runs} → {out}", highlight=False)

    boards: list[Dashboard] = []

    def on_progress(spec: RunSpec, result: RunResult | None) -> None:
        for board in boards:
            if result is None:
                board.started(spec)
            else:
                board.done(result)
        if result is None:
            current[0] = spec.id
            progress.update(task, description=spec.id)
        else:
            results.runs.append(result)
            done[spec.scenario] += 1
            n = len(results.runs)
            if result.skipped:
                line = f"[yellow]SKIP[/] {spec.id}: {result.error}"
            elif not result.passed:
                failed[spec.scenario] += 1
                line = (
                    f"[red]FAIL[/] {spec.id}: "
                    + "; ".join(c.name for c in result.failed_checks())
                    + (f" {result.error}" if result.error else "")
                )
            else:
                line = f"[green]PASS[/] {spec.id}" if not terminal else ""
            if line and not terminal:
                line = f"[{n}/{len(specs)}] {line} ({result.wall_s:.1f} s)"
            if line:
                progress.console.print(line, highlight=False)
            if result.metrics.recovery_s is not None:
                worst[spec.scenario] = max(worst.get(spec.scenario, 0.0), result.metrics.recovery_s)
            results.duration_s = result.started_s + result.wall_s
            progress.advance(task)
            results.write(out / "results.json")
        if live is not None:
            live.update(Group(progress, table()))

    async def main() -> tuple[list[RunResult], list[tuple[float, float, float]], float]:
        # Ctrl-C: finish the current run, then write what ran; again: stop now
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        presses = [0]

        def on_sigint() -> None:
            presses[0] += 1
            if presses[0] == 1:
                progress.console.print(
                    "[yellow]interrupted: finishing the current run (Ctrl-C again: stop now)"
                )
            elif task is not None:
                task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        async with contextlib.AsyncExitStack() as stack:
            if dash is not None and dash.enabled:
                await _serve_dashboard(stack, boards, specs, tier, out, dash.port, progress.console)
            try:
                if runner is not None:
                    found = await runner(on_progress, lambda: presses[0] > 0)
                else:
                    found = await run_matrix(
                        specs,
                        out_dir=out,
                        keep_artefacts=keep_artefacts,
                        on_progress=on_progress,
                        stop=lambda: presses[0] > 0,
                    )
                for board in boards:
                    board.finished(presses[0] == 0 and not any(r.failed for r in results.runs))
                return found
            finally:
                results.interrupted = presses[0] > 0
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signal.SIGINT)

    with live if live is not None else contextlib.nullcontext():
        try:
            _, memory, seconds = asyncio.run(main())
            results.memory, results.duration_s = memory, seconds
        except (KeyboardInterrupt, asyncio.CancelledError):
            results.interrupted = True
    if results.interrupted:
        console.print(f"[yellow]interrupted after {len(results.runs)} of {len(specs)} runs")
    results.write(out / "results.json")
    return results


async def _serve_dashboard(
    stack: contextlib.AsyncExitStack,
    boards: list[Dashboard],
    specs: list[RunSpec],
    tier: str,
    out: Path,
    port: int,
    console: Console,
) -> None:
    """Serve the live dashboard until ``stack`` closes; its URL is printed."""
    from . import context
    from .dashboard import Dashboard

    board = Dashboard(specs, tier=tier, out=out, port=port)
    try:
        url = await stack.enter_async_context(board.serving())
    except OSError as exc:
        console.print(f"[yellow]no dashboard[/]: cannot listen on port {port}: {exc}")
        return
    boards.append(board)
    context.fault_listeners.append(board.fault)
    stack.callback(context.fault_listeners.remove, board.fault)
    console.print(f"dashboard: {url}", highlight=False, soft_wrap=True)


def _finish(
    results: Results,
    out: Path,
    baseline: Results | None,
    console: Console,
    *,
    report: Path | None = None,
    write_results: bool = True,
    strict_targets: bool = False,
    previous: tuple[str, Results] | None = None,
    baseline_name: str = "the baseline",
) -> Outcome:
    from rich.markup import escape
    from rich.table import Table

    from .report import write_report
    from .report.charts import unavailable

    path = report or out / "report.html"
    outcome, _ = write_report(
        results,
        path,
        baseline,
        strict_targets=strict_targets,
        previous=previous,
        baseline_name=baseline_name,
    )
    t = Table(title="targets")
    for col in ("target", "asked for", "measured", ""):
        t.add_column(col)
    for e in outcome.evaluations:
        if e in outcome.informational_missed:
            mark = "[yellow]missed (informational)"
        else:
            mark = "[green]met" if e.met else ("[red]missed" if e.met is False else "[dim]no data")
        t.add_row(e.target.label, e.target.seed_text, e.shown(), mark)
    console.print(t)
    if outcome.informational_missed:
        console.print(
            "[yellow]informational[/]: "
            + ", ".join(e.target.label for e in outcome.informational_missed)
            + " missed; not a failure (--strict-targets makes it one)"
        )
    runs = results.runs
    skipped = [r for r in runs if r.skipped]
    if skipped:
        console.print(f"[yellow]{len(skipped)} runs skipped[/]: {skipped[0].error}")
    console.print(
        f"{sum(1 for r in runs if r.passed)}/{len(runs) - len(skipped)} runs passed, "
        f"{sum(r.streams_exact for r in runs):,}/{sum(r.streams for r in runs):,} streams "
        f"exact in {results.duration_s / 60:.1f} min"
    )
    for c in outcome.regressions:
        console.print(
            f"[red]regression[/] against {baseline_name}: {c.scenario} {c.metric}: "
            f"{_shown(c.before, c.unit)} → {_shown(c.after, c.unit)}",
            highlight=False,
        )
    if previous is not None:
        regs = outcome.previous_regressions
        console.print(
            f"against the previous run {previous[0]}: "
            + (
                f"[yellow]{len(regs)} regression{'s' if len(regs) != 1 else ''}[/]"
                if regs
                else "no regression"
            )
            + (" (flagged, not failing)" if regs else ""),
            highlight=False,
        )
        for c in regs:
            console.print(
                f"[yellow]regression[/] against the previous run: {c.scenario} {c.metric}: "
                f"{_shown(c.before, c.unit)} → {_shown(c.after, c.unit)}",
                highlight=False,
            )
    if write_results:
        console.print(f"results: {out / 'results.json'}")
    console.print(f"report:  {path}")
    why = unavailable()
    if why is not None:
        console.print(
            f"[yellow]no charts in the report[/]: {escape(why)}, then "
            f"unbroken chaos report {path.parent / 'results.json'}",
            highlight=False,
            soft_wrap=True,
        )
    console.print("[bold green]OK" if outcome.ok else "[bold red]NOT OK")
    return outcome


def _shown(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "s":
        return f"{v * 1000:.0f} ms"
    if unit == "%":
        return f"{v:.1f} %"
    return f"{v:g} {unit}"
