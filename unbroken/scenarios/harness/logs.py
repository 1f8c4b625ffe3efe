"""The log lines of a run: :class:`LogCapture` keeps the client's, server's and proxy's
log records while active, as :class:`LogLine` values."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final


@dataclass(frozen=True, slots=True)
class LogLine:
    """One captured log record. ``exc``: the exception it carried (``Type: message``),
    if any."""

    t: float
    logger: str
    level: str
    message: str
    levelno: int = logging.INFO
    exc: str = ""
    thread: str = ""

    def format(self, t0: float = 0.0) -> str:
        return f"{self.t - t0:9.4f} {self.level:<7} {self.logger}: {self.message}"


#: Loggers outside ``unbroken`` whose warnings and errors a run keeps too: an exception
#: in the ASGI server, in an asyncio callback or task, or in the WebSocket library.
OTHER_LOGGERS: Final = ("uvicorn.error", "asyncio", "websockets")


class LogCapture(logging.Handler):
    """Keeps the ``unbroken`` loggers' records (INFO and up) while active, and the
    WARNING-and-up records of ``also`` (default :data:`OTHER_LOGGERS`) without changing
    their levels.

    uvicorn reconfigures its loggers (dropping their handlers) when a server starts:
    call :meth:`ensure_attached` once the server is up."""

    def __init__(
        self,
        logger: str = "unbroken",
        *,
        isolate: bool = False,
        also: tuple[str, ...] = OTHER_LOGGERS,
    ) -> None:
        super().__init__(logging.INFO)
        self.lines: list[LogLine] = []
        self._prefix = logger
        self._logger = logging.getLogger(logger)
        self._also = [logging.getLogger(name) for name in also]
        self._isolate = isolate
        self._saved: tuple[int, bool] = (logging.NOTSET, True)

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if record.levelno < logging.WARNING and not (
            name == self._prefix or name.startswith(self._prefix + ".")
        ):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break a run
            message = str(record.msg)
        exc = ""
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            exc = f"{type(err).__name__}: {err}".strip().removesuffix(":")
        # (logging.Handler.handle holds the handler's lock: the server thread logs too)
        self.lines.append(
            LogLine(
                time.monotonic(),
                name,
                record.levelname,
                message,
                record.levelno,
                exc,
                record.threadName or "",
            )
        )

    def ensure_attached(self) -> None:
        """Attach again to any logger that lost this handler (see the class doc)."""
        for lg in (self._logger, *self._also):
            if self not in lg.handlers:
                lg.addHandler(self)

    def __enter__(self) -> LogCapture:
        lg = self._logger
        self._saved = (lg.level, lg.propagate)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
        if self._isolate:
            lg.propagate = False
        self.ensure_attached()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lg = self._logger
        for other in (lg, *self._also):
            other.removeHandler(self)
        lg.setLevel(self._saved[0])
        lg.propagate = self._saved[1]

    def of(self, prefix: str) -> list[LogLine]:
        """Lines from loggers under ``prefix`` (e.g. ``unbroken.client``)."""
        return [line for line in self.lines if line.logger.startswith(prefix)]
