"""Reads a run's log for what must never happen, whatever the network does.

A fault may cut, reset or silence a connection; it must never make a peer break the
protocol, raise an exception nobody expected, or log an error. :func:`scan` finds, in the
lines a :class:`~unbroken.scenarios.harness.LogCapture` kept (server, client, store,
proxy, and the ``uvicorn.error``, ``asyncio`` and ``websockets`` loggers):

* **protocol errors**: the server closing a connection for a protocol error
  (``protocol error conn=… code=4000``), any close with a code that means a peer broke the
  protocol or the server failed (:data:`PROTOCOL_CLOSE_CODES`, seen by either side), and
  ``error`` frames that mean the same while keeping the connection
  (:data:`PROTOCOL_ERROR_CODES`, e.g. ``bad_ack``);
* **exceptions**: any record that carries a traceback, at any level;
* **error lines**: any record at ERROR or CRITICAL.

Warnings a fault provokes on purpose (``resume refused``, ``send timeout``, ``peer
silent``, ``stream dropped while attached``, …) are not findings: they are the system
saying what it did about the fault.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ..protocol.codes import CloseCode, ErrorCode
from .harness import LogLine

FindingKind = Literal["protocol error", "exception", "error line"]

#: Close codes that mean a peer broke the protocol (or the server failed), never a
#: network fault: 1002 (WebSocket protocol error), 1007 (bad data), 1009 (frame too big),
#: 1011 (internal error), and 4000-4003 and 4005 (bad frame, auth, forbidden, version).
#: 1000/1001/1005/1006, 1012 (restart), 4004 (peer silent) and 4008 (overloaded) are
#: what faults and shutdowns look like.
PROTOCOL_CLOSE_CODES: Final[frozenset[int]] = frozenset(
    {
        1002,
        1007,
        CloseCode.TOO_BIG,
        CloseCode.INTERNAL,
        CloseCode.BAD_FRAME,
        CloseCode.AUTH_REQUIRED,
        CloseCode.AUTH_FAILED,
        CloseCode.FORBIDDEN,
        CloseCode.UNSUPPORTED_VERSION,
    }
)

#: ``error`` frame codes that mean a peer broke the protocol or the server failed (the
#: connection stays open, but something is wrong): a stale or foreign ack, an internal
#: error, a frame the server does not support.
PROTOCOL_ERROR_CODES: Final[frozenset[str]] = frozenset(
    {ErrorCode.BAD_ACK, ErrorCode.INTERNAL, ErrorCode.UNSUPPORTED}
)

_PROTOCOL_ERROR: Final = re.compile(r"\bprotocol error conn=")
#: the server's close line and the client's ``disconnected`` event line
_CLOSE_CODE: Final = re.compile(r"^(?:close conn=\S+|client disconnected\b.*?) code=(\d+)\b")
#: the server's ``error conn=…`` line and the client's ``server error …`` line
_ERROR_CODE: Final = re.compile(r"^(?:error conn=\S+|server error) code=([a-z_]+)\b")


@dataclass(frozen=True, slots=True)
class LogFinding:
    """One line that fails a run, and why."""

    kind: FindingKind
    line: LogLine
    why: str

    def describe(self, t0: float = 0.0, width: int = 300) -> str:
        """The finding with the line quoted (times relative to ``t0``), at most ``width``
        characters of it."""
        text = self.line.format(t0).strip()
        if self.line.exc:
            text += f" [{self.line.exc}]"
        if len(text) > width:
            text = text[: width - 1] + "…"
        return f'{self.kind} ({self.why}): "{text}"'


def classify(line: LogLine, allowed_closes: frozenset[int] = frozenset()) -> LogFinding | None:
    """The finding this line is, or ``None`` for a line a run may have
    (``allowed_closes``: close codes the run provokes on purpose)."""
    if line.exc:
        return LogFinding("exception", line, "a traceback was logged")
    if line.levelno >= logging.ERROR:
        return LogFinding("error line", line, f"logged at {line.level}")
    message = line.message
    if _PROTOCOL_ERROR.search(message):
        return LogFinding("protocol error", line, "the server closed for a protocol error")
    m = _CLOSE_CODE.search(message)
    if m is not None and int(m.group(1)) in PROTOCOL_CLOSE_CODES - allowed_closes:
        return LogFinding("protocol error", line, f"closed with code {m.group(1)}")
    m = _ERROR_CODE.search(message)
    if m is not None and m.group(1) in PROTOCOL_ERROR_CODES:
        return LogFinding("protocol error", line, f"error frame {m.group(1)}")
    return None


def scan(
    lines: Iterable[LogLine], allowed_closes: frozenset[int] = frozenset()
) -> list[LogFinding]:
    """Every line that fails a run, in log order (``allowed_closes``: close codes the
    run's fault provokes on purpose, e.g. a version refusal its case checks)."""
    found = (classify(line, allowed_closes) for line in lines)
    return [f for f in found if f is not None]


__all__ = [
    "PROTOCOL_CLOSE_CODES",
    "PROTOCOL_ERROR_CODES",
    "FindingKind",
    "LogFinding",
    "classify",
    "scan",
]
