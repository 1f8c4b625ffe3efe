"""Bounded logs under a flood: :class:`FloodFilter` lets a bounded number of records
of each kind through per interval and reports how many it held back.

A flood of identical errors (a scan of bad frames, a storm of refused connections,
asyncio's ``socket.accept() out of system resource`` at the descriptor limit: about
16,000 tracebacks a second) must not fill the disk or starve the event loop on
formatting. A *kind* is a logger, a level and a message template (``record.msg``
before ``%`` formatting), so ``protocol error conn=%s ...`` is one kind whatever the
connection. Per kind and per ``interval`` seconds, the first ``burst`` records pass;
the rest are counted and reported once: appended to the next record of that kind
that passes (``[suppressed 1234 similar in 10.0 s]``), or, when the flood stopped,
as one summary line logged ``interval`` seconds after the first suppression (only
when an event loop runs in the logging thread: it times the summary).

``unbroken serve`` puts one on its log handlers (records of WARNING and above) and
routes the ``asyncio`` logger through them. In your own logging setup::

    handler.addFilter(FloodFilter(burst=20, interval=10.0))
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.frames import excerpt

#: Where the summaries of suppressed records are logged.
summary_log = logging.getLogger("unbroken.server.logfilter")

_Kind = tuple[str, int, str]


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    flush_scheduled: bool = False


class FloodFilter(logging.Filter):
    """Pass at most ``burst`` records of each kind (logger, level, message template)
    per ``interval`` seconds; count the rest and report the count once.

    Records below ``min_level`` always pass. At most ``max_kinds`` kinds are
    tracked (loggers that format messages before logging make a kind per
    message: past the bound, the oldest windows are dropped).
    """

    def __init__(
        self,
        burst: int = 20,
        interval: float = 10.0,
        min_level: int = logging.WARNING,
        max_kinds: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be at least 1 and interval positive")
        self.burst = burst
        self.interval = interval
        self.min_level = min_level
        self.max_kinds = max_kinds
        self.clock = clock
        self.suppressed_total = 0
        self._windows: dict[_Kind, _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or record.name == summary_log.name:
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        ok, note = self.admit(record.name, record.levelno, template)
        if ok and note:
            record.msg = f"{record.msg}{note}"
        return ok

    def admit(self, name: str, level: int, template: str) -> tuple[bool, str]:
        """Whether a record of this kind may pass now, and a note to append to it
        (``" [suppressed N similar in T s]"`` once a window that held records back
        has ended, else ``""``). For code that logs through its own limiter."""
        key: _Kind = (name, level, template)
        now = self.clock()
        note = ""
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                if len(self._windows) >= self.max_kinds:
                    self._evict(now)
                w = self._windows[key] = _Window(now)
            elif now - w.start >= self.interval:
                if w.suppressed:
                    note = f" [suppressed {w.suppressed} similar in {now - w.start:.1f} s]"
                w.start, w.passed, w.suppressed = now, 0, 0
            if w.passed < self.burst:
                w.passed += 1
                return True, note
            w.suppressed += 1
            self.suppressed_total += 1
            if not w.flush_scheduled:
                w.flush_scheduled = self._schedule_flush(w)
            return False, ""

    def flush(self) -> None:
        """Log a summary for every kind whose window has ended with records held back."""
        now = self.clock()
        done: list[tuple[_Kind, int, float]] = []
        with self._lock:
            for key, w in self._windows.items():
                if w.suppressed and now - w.start >= self.interval * 0.999:
                    done.append((key, w.suppressed, now - w.start))
                    w.start, w.passed, w.suppressed = now, 0, 0
                w.flush_scheduled = False
        for (name, level, template), n, span in done:
            summary_log.log(
                level,
                "suppressed %d similar log lines in %.1f s: logger=%s message=%s",
                n,
                span,
                name,
                excerpt(template, 120),
            )

    def _schedule_flush(self, w: _Window) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # no loop in this thread: the next record of the kind reports
        loop.call_later(max(0.0, w.start + self.interval - self.clock()), self.flush)
        return True

    def _evict(self, now: float) -> None:
        old = [k for k, w in self._windows.items() if now - w.start >= self.interval]
        for k in old or list(self._windows)[: max(1, len(self._windows) // 2)]:
            del self._windows[k]
