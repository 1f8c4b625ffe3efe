"""Every ``chaos run``'s results, appended to a SQLite history (stdlib :mod:`sqlite3`):
one row per matrix run, one per scenario in it (completion, recovery p95, CPU overhead),
and the whole ``results.json`` (compressed), so any earlier run can be the baseline of a
later one (``--baseline RUN_ID``) and ``chaos trend`` can show the scenarios over time.

The file is ``<out>/history.sqlite`` unless ``--history PATH`` says otherwise; several
output folders can share one history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .catalog import scenario_order
from .results import Results, RunResult, pooled_samples
from .targets import percentile

# The regression thresholds (the report's, re-exported by report/regression.py).
#: A percentile is a regression when it is this much slower, relatively...
SLOWER_RATIO = 1.25
#: ...and absolutely (shared machines jitter by tens of milliseconds).
SLOWER_ABS = 0.1
#: A scenario's CPU overhead (server CPU with faults over fault-free, in %) regresses when
#: it rises by more than this many points; informational (the machine sets it more than
#: the code), so it fails a run only with ``--strict-targets``.
CPU_MORE_PTS = 25.0

#: Bumped when the tables change shape.
HISTORY_SCHEMA = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    started TEXT NOT NULL,
    recorded TEXT NOT NULL,
    tier TEXT NOT NULL,
    command TEXT NOT NULL,
    duration_s REAL NOT NULL,
    interrupted INTEGER NOT NULL,
    service TEXT NOT NULL,
    runs INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    results BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS scenarios (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    scenario TEXT NOT NULL,
    runs INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    streams INTEGER NOT NULL,
    streams_exact INTEGER NOT NULL,
    completion REAL,
    recovery_p95_s REAL,
    cpu_overhead REAL,
    PRIMARY KEY (run_id, scenario)
);
"""


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    """One scenario of one matrix run, as the trend shows it."""

    run_id: str
    started: str
    scenario: str
    runs: int
    failed: int
    streams: int
    streams_exact: int
    completion: float | None
    """Exact streams, percent of streams."""
    recovery_p95_s: float | None
    cpu_overhead: float | None
    """Server CPU with the faults over the fault-free runs', minus one, percent."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """One matrix run in the history."""

    run_id: str
    seq: int
    started: str
    tier: str
    command: str
    runs: int
    passed: int


#: (runs, failed, streams, exact streams, completion %, recovery p95 s, CPU overhead %)
Summary = tuple[int, int, int, int, float | None, float | None, float | None]


def summarise(runs: list[RunResult]) -> dict[str, Summary]:
    """Per scenario: (runs, failed, streams, exact streams, completion %, recovery p95 s,
    CPU overhead %). Skipped runs are left out."""
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        if not r.skipped:
            groups.setdefault(r.spec.scenario, []).append(r)
    out: dict[str, Summary] = {}
    for sid in sorted(groups, key=scenario_order):
        rs = groups[sid]
        streams = sum(r.streams for r in rs)
        exact = sum(r.streams_exact for r in rs)
        denominator = sum(max(r.streams, 1) for r in rs)
        completion = 100.0 * exact / denominator if denominator else None
        samples = pooled_samples(rs, "recovery")
        p95 = percentile(samples, 0.95) if samples else None
        measured = [
            r for r in rs if r.metrics.server_cpu_s is not None and r.metrics.baseline_cpu_s
        ]
        cpu: float | None = None
        if measured:
            fault = sum(r.metrics.server_cpu_s or 0.0 for r in measured)
            base = sum(r.metrics.baseline_cpu_s or 0.0 for r in measured)
            cpu = 100.0 * (fault / base - 1.0) if base > 0 else None
        failed = sum(1 for r in rs if r.failed)
        out[sid] = (len(rs), failed, streams, exact, completion, p95, cpu)
    return out


class History:
    """A SQLite history of matrix runs (``with History(path) as h``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> History:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=10.0)
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(_TABLES)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(HISTORY_SCHEMA),))
                db.commit()
            elif row[0] != str(HISTORY_SCHEMA):
                db.close()
                raise ConfigError(
                    f"{self.path}: history schema {row[0]}, this unbroken writes "
                    f"{HISTORY_SCHEMA}: give another --history file"
                )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not a usable history: {exc}") from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        self.open()
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.db as db:
            yield db

    # ---------------------------------------------------------------- writing
    def append(self, results: Results, *, run_id: str | None = None) -> str:
        """Append a matrix run; returns its id (``YYYYmmddTHHMMSS-xxxx`` unless given)."""
        run_id = run_id or new_run_id(results.started)
        blob = zlib.compress(json.dumps(results.to_dict(), ensure_ascii=False).encode(), 6)
        now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        rows = results.runs
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    results.started or now,
                    now,
                    results.tier,
                    results.command,
                    results.duration_s,
                    int(results.interrupted),
                    results.service,
                    sum(1 for r in rows if not r.skipped),
                    sum(1 for r in rows if r.passed),
                    blob,
                ),
            )
            db.executemany(
                "INSERT INTO scenarios VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, sid, *values) for sid, values in summarise(rows).items()],
            )
        return run_id

    # ---------------------------------------------------------------- reading
    def runs(self) -> list[RunRow]:
        """Every matrix run, oldest first."""
        return [
            RunRow(*row)
            for row in self.db.execute(
                "SELECT run_id, seq, started, tier, command, runs, passed FROM runs ORDER BY seq"
            )
        ]

    def results(self, run_id: str) -> Results:
        """A run's whole results (``latest`` or ``previous``: the last, the one before)."""
        rows = self.runs()
        if run_id in ("latest", "previous"):
            k = 1 if run_id == "latest" else 2
            if len(rows) < k:
                raise ConfigError(f"{self.path} holds {len(rows)} runs: no {run_id} run")
            run_id = rows[-k].run_id
        found = self.db.execute("SELECT results FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None:
            known = ", ".join(r.run_id for r in rows[-5:]) or "none"
            raise ConfigError(
                f"no run {run_id!r} in the history {self.path} (latest: {known}; "
                "`unbroken chaos trend` lists them)"
            )
        return Results.from_dict(json.loads(zlib.decompress(found[0])))

    def last_id(self) -> str | None:
        rows = self.runs()
        return rows[-1].run_id if rows else None

    def scenario_rows(self, scenarios: list[str] | None = None) -> list[ScenarioRow]:
        """Per scenario per run, oldest run first."""
        rows = self.db.execute(
            "SELECT s.run_id, r.started, s.scenario, s.runs, s.failed, s.streams, "
            "s.streams_exact, s.completion, s.recovery_p95_s, s.cpu_overhead "
            "FROM scenarios s JOIN runs r USING (run_id) ORDER BY r.seq"
        ).fetchall()
        out = [ScenarioRow(*row) for row in rows]
        if scenarios:
            wanted = set(scenarios)
            out = [r for r in out if r.scenario in wanted]
        return out


def new_run_id(started: str = "") -> str:
    """``YYYYmmddTHHMMSS-xxxx``: when it started, and four random hex digits."""
    try:
        when = dt.datetime.fromisoformat(started) if started else dt.datetime.now()
    except ValueError:
        when = dt.datetime.now()
    return f"{when:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def changes(before: ScenarioRow, after: ScenarioRow) -> list[str]:
    """What regressed from ``before`` to ``after`` (one scenario, two runs), by the
    report's thresholds: fewer exact streams; recovery p95 slower by more than 25 % and
    100 ms; CPU overhead up by more than 25 points (informational, marked so)."""
    out = []
    if (
        before.completion is not None
        and after.completion is not None
        and after.completion < before.completion - 1e-9
    ):
        out.append(f"completion {before.completion:.1f} → {after.completion:.1f} %")
    a, b = before.recovery_p95_s, after.recovery_p95_s
    if a is not None and b is not None and b > a * SLOWER_RATIO and b - a > SLOWER_ABS:
        out.append(f"recovery p95 {a * 1000:.0f} → {b * 1000:.0f} ms")
    c, d = before.cpu_overhead, after.cpu_overhead
    if c is not None and d is not None and d - c > CPU_MORE_PTS:
        out.append(f"CPU overhead {c:+.0f} → {d:+.0f} % (informational)")
    return out


__all__ = [
    "CPU_MORE_PTS",
    "HISTORY_SCHEMA",
    "SLOWER_ABS",
    "SLOWER_RATIO",
    "History",
    "RunRow",
    "ScenarioRow",
    "changes",
    "new_run_id",
    "summarise",
]
