"""One ``/metrics`` for all the workers of ``unbroken serve --workers N``.

The workers share one port, so a scrape reaches one of them. Each worker listens
on a Unix socket of its own in a directory the supervisor made for this serve
(``w<index>-<pid>.sock``) and answers a connection with its own figures (the
Prometheus text of its registry). The worker a scrape reaches asks every other
worker at once, adds their figures to its own and answers with the sum:
counters, histograms and gauges add up (open connections, live streams, log
bytes are per-worker shares of the total), the loop lag is the worst worker's.

A worker that dies takes its gauges with it; its counters stay in the sum (a
counter never goes back): every worker writes its figures to ``<pid>.prom``
every second and whenever it answers, and the supervisor renames that file to
``dead-<pid>.prom`` when it reaps the worker (counts of its last second may be
missing). The directory is made fresh at start-up and removed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

#: how long a scrape waits for a sibling worker's figures
PULL_TIMEOUT: Final = 2.0
#: how often each worker keeps its figures on disk (for the sum after its death)
SNAPSHOT_EVERY: Final = 1.0
#: gauges summed as the worst worker's, not added up
MAX_GAUGES: Final = frozenset(
    {"unbroken_event_loop_lag_seconds", "process_start_time_seconds", "process_max_fds"}
)
#: sample types a dead worker keeps in the sum
_KEPT: Final = frozenset({"counter", "histogram", "summary"})


def retire(directory: str | Path, pid: int) -> None:
    """The supervisor reaped worker ``pid``: its socket goes, its last figures stay
    as ``dead-<pid>.prom`` (counters only are read from it)."""
    d = Path(directory)
    for sock in d.glob(f"w*-{pid}.sock"):
        with contextlib.suppress(OSError):
            sock.unlink()
    with contextlib.suppress(OSError):
        os.replace(d / f"{pid}.prom", d / f"dead-{pid}.prom")


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(texts: Iterable[str], retired: Iterable[str] = ()) -> tuple[bytes, int]:
    """Sum Prometheus text expositions (``retired``: counters and histograms only);
    the merged exposition and how many live texts it holds."""
    from prometheus_client.core import Metric

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    live = 0

    def add(text: str, kept_only: bool) -> None:
        for fam in text_string_to_metric_families(text):
            if kept_only and fam.type not in _KEPT:
                continue
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            sums = values[fam.name]
            worst = fam.name in MAX_GAUGES
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if worst:
                    sums[key] = max(sums.get(key, s.value), s.value)
                else:
                    sums[key] = sums.get(key, 0.0) + s.value

    for text in texts:
        add(text, False)
        live += 1
    for text in retired:
        add(text, True)
    out = []
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
        out.append(fam)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(out))
    return generate_latest(registry), live


class WorkerMetrics:
    """This worker's part in the summed ``/metrics`` (see the module docstring)."""

    def __init__(self, directory: str | Path, index: int, registry: CollectorRegistry) -> None:
        self.dir = Path(directory)
        self.index = index
        self.pid = os.getpid()
        self.registry = registry
        self.sock = self.dir / f"w{index}-{self.pid}.sock"
        self.snapshot = self.dir / f"{self.pid}.prom"
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None

    def own(self) -> bytes:
        """This worker's figures, also kept on disk for the sum after its death."""
        data = generate_latest(self.registry)
        tmp = self.snapshot.with_suffix(".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.snapshot)
        except OSError as exc:  # the directory went (the server is stopping)
            log.debug("metrics snapshot not written: %r", exc)
        return data

    async def start(self) -> None:
        """Listen for siblings' pulls; keep a snapshot every second."""
        with contextlib.suppress(OSError):
            self.sock.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.sock))
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            self.sock.unlink()

    async def _keep(self) -> None:
        while True:
            self.own()
            await asyncio.sleep(SNAPSHOT_EVERY)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self.own())
            await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _pull(self, sock: Path) -> str | None:
        """A sibling's figures, or ``None`` if it does not answer (dead, stuck)."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that comes as
        # the connection opens or the read ends (the scrape, cancelled, would go on)
        try:
            async with asyncio.timeout(PULL_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(sock))
        except (OSError, TimeoutError):
            return None
        try:
            async with asyncio.timeout(PULL_TIMEOUT):
                data = await reader.read()
            return data.decode()
        except (OSError, TimeoutError, UnicodeDecodeError):
            return None
        finally:
            writer.close()

    async def exposition(self) -> tuple[bytes, int]:
        """The sum over every worker (this one, live siblings, dead ones' counters)
        and how many live workers it holds."""
        siblings = sorted(p for p in self.dir.glob("w*.sock") if p != self.sock)
        pulled = await asyncio.gather(*(self._pull(p) for p in siblings))
        texts = [self.own().decode()]
        retired: list[str] = []
        unreaped: set[str] = set()
        for sock, text in zip(siblings, pulled, strict=True):
            if text is not None:
                texts.append(text)
                continue
            # not answering: dead and not reaped yet (or stuck): its counters from its
            # last snapshot, unless the supervisor already retired it
            pid = sock.stem.rpartition("-")[2]
            with contextlib.suppress(OSError):
                retired.append((self.dir / f"{pid}.prom").read_text())
                unreaped.add(pid)
        for dead in sorted(self.dir.glob("dead-*.prom")):
            if dead.stem[5:] in unreaped:  # retired while this scrape read it: once only
                continue
            with contextlib.suppress(OSError):
                retired.append(dead.read_text())
        return merge(texts, retired)
