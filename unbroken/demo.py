"""``unbroken demo``: a ~1 MB multi-part answer streamed through a fault proxy that
cuts the link three times (FIN, RST, a silent blackhole); the client recovers each
time and ends with exactly the bytes of a fault-free run, proved by the digest."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from .chaos import FaultProxy, StreamingResponseSimulator
from .chaos.generators import GeneratedAnswer
from .client import Client, ConnectionEvent, DataChunk, JsonFragment, TextDelta
from .protocol.backoff import BackoffPolicy
from .server import Output, Request, Unbroken
from .testing import serve

CutMode = Literal["fin", "rst", "blackhole"]
DEFAULT_CUTS: tuple[tuple[float, CutMode], ...] = ((0.2, "fin"), (0.45, "rst"), (0.7, "blackhole"))


@dataclass(slots=True)
class CutReport:
    """One injected fault and what the client made of it."""

    mode: str
    at_fraction: float
    cut_at: float
    detected: float | None = None  # seconds from cut to the client noticing
    resumed: float | None = None  # seconds from cut to the stream resumed
    first_event: float | None = None  # seconds from cut to the first new event


@dataclass(slots=True)
class DemoResult:
    """What the demo measured; ``exact`` is the verdict."""

    exact: bool
    digest: str
    expected_digest: str
    payload_bytes: int
    seconds: float
    cuts: list[CutReport] = field(default_factory=list)
    parts_ok: dict[str, bool] = field(default_factory=dict)


def demo_answer(size: int, seed: int) -> GeneratedAnswer:
    """The demo's answer: long text, a JSON report with a schema, a chart, a table, an image."""
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "score": {"type": "number"},
                    },
                    "required": ["id", "name", "score"],
                },
            },
        },
        "required": ["title", "rows"],
    }
    return StreamingResponseSimulator(seed).multipart_answer(
        [
            {"type": "text", "size": int(size * 0.6), "chunk_size": 48},
            {"type": "json", "schema": schema, "target_size": int(size * 0.15), "chunk_size": 96},
            {"type": "chart", "points": max(10, size // 4000), "series": 3},
            {"type": "table", "rows": max(10, size // 2000), "columns": 6},
            {"type": "image", "size": int(size * 0.12)},
        ]
    )


async def run_demo(
    *,
    size: int = 1_000_000,
    seconds: float = 6.0,
    seed: int = 7,
    cuts: tuple[tuple[float, CutMode], ...] = DEFAULT_CUTS,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo; returns its :class:`DemoResult` (also drawn live on ``console``)."""
    console = console or Console()
    answer = demo_answer(size, seed)
    events = answer.events
    pace = seconds / max(1, len(events) // 64)

    app = Unbroken(allow_anonymous=True, heartbeat=0.25)

    @app.agent("report")
    async def report(_req: Request, out: Output) -> None:
        for i, ev in enumerate(events):
            await out.emit(ev)
            if i % 64 == 63 and pace > 0:
                await asyncio.sleep(pace)  # an agent's pace, not synchronisation

    reports: list[CutReport] = []
    pending: list[CutReport] = []

    def on_event(ev: ConnectionEvent) -> None:
        for r in pending:
            if ev.kind == "disconnected" and r.detected is None:
                r.detected = ev.at - r.cut_at
            elif ev.kind == "resumed" and r.resumed is None and r.detected is not None:
                r.resumed = ev.at - r.cut_at

    total = answer.body_bytes
    progress = Progress(
        TextColumn("[bold]answer"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("bytes", total=total)

    def table() -> Table:
        t = Table(title="faults injected", expand=False)
        for col in ("fault", "at", "detected after", "resumed after", "first new event after"):
            t.add_column(col)
        for r in reports:
            t.add_row(
                r.mode,
                f"{r.at_fraction:.0%}",
                _ms(r.detected),
                _ms(r.resumed),
                _ms(r.first_event),
            )
        return t

    logging.getLogger("unbroken").setLevel(logging.WARNING)
    started = time.monotonic()
    received = 0
    next_cut = 0
    policy = BackoffPolicy(base=0.05, cap=1.0, max_attempts=20, deadline=30)
    async with serve(app) as srv, FaultProxy(upstream=("127.0.0.1", srv.port)) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}{srv.path}"
        with Live(Group(progress, table()), console=console, refresh_per_second=8) as live:
            async with Client(url, policy=policy, on_event=on_event, ping_every=0.5) as client:
                st = await client.start("report", {"size": size})
                async for ev in st:
                    if isinstance(ev, TextDelta):
                        received += len(ev.text.encode())
                    elif isinstance(ev, DataChunk):
                        received += len(ev.body.encode())
                    elif isinstance(ev, JsonFragment):
                        received += len(ev.fragment.encode())
                    for r in pending:
                        if r.first_event is None and r.resumed is not None:
                            r.first_event = time.monotonic() - r.cut_at
                    pending[:] = [r for r in pending if r.first_event is None]
                    if next_cut < len(cuts) and received >= cuts[next_cut][0] * total:
                        fraction, mode = cuts[next_cut]
                        next_cut += 1
                        r = CutReport(mode, fraction, time.monotonic())
                        reports.append(r)
                        pending.append(r)
                        await proxy.cut_all(mode, reason=f"demo cut at {fraction:.0%}")
                    progress.update(task, completed=received)
                    live.update(Group(progress, table()))
                result = await st.wait()
            live.update(Group(progress, table()))
    expected = answer.expected_digest(st.id, app.store.epoch)
    parts_ok = {p: result.parts[p].text == answer.body(p) for p in answer.bodies}
    return DemoResult(
        exact=result.digest == expected and all(parts_ok.values()) and result.complete,
        digest=result.digest,
        expected_digest=expected,
        payload_bytes=total,
        seconds=time.monotonic() - started,
        cuts=reports,
        parts_ok=parts_ok,
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms"


def print_verdict(result: DemoResult, console: Console) -> None:
    """The last lines of the demo: the proof."""
    console.print()
    for part, ok in result.parts_ok.items():
        console.print(f"  part [bold]{part}[/]: {'[green]identical' if ok else '[red]DIFFERENT'}")
    console.print(f"  received digest  {result.digest}")
    console.print(f"  expected digest  {result.expected_digest}")
    if result.exact:
        console.print(
            f"[bold green]EXACT[/]: {result.payload_bytes:,} bytes in {result.seconds:.1f}s "
            f"through {len(result.cuts)} cuts, every byte verified by the digest chain"
        )
    else:
        console.print("[bold red]NOT EXACT[/]: the answer differs from a fault-free run")
