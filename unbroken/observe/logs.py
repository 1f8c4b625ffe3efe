"""Structured logs: one JSON object per line, and one line per connection event.

:class:`JsonFormatter` writes any log record as a JSON line (``ts``, ``level``,
``logger``, ``msg``, and the record's structured fields). With the event log on
(``Observer(event_log=True)``; ``unbroken serve --log-format json`` turns it on),
the server logs each connection event to the ``unbroken.events`` logger with its
fields: ``connect``, ``hello``, ``start``, ``resume``, ``resume_refused``,
``detach``, ``close`` and ``refusal``, each with the connection id (``conn``) and,
where there is one, the stream id (``stream``), the cause, and timings in
milliseconds. :class:`EventEchoFilter` drops the text lines that say the same
(``connect conn=…``, ``close conn=…``) so each event is one line.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any, Final

#: Where connection events are logged (structured, at INFO).
EVENTS_LOGGER: Final = "unbroken.events"
events_log = logging.getLogger(EVENTS_LOGGER)

#: The attribute of a log record that holds its structured fields.
FIELDS: Final = "unbroken"


def emit(event: str, **fields: Any) -> None:
    """Log one connection event with its fields (``event`` is the message)."""
    if events_log.isEnabledFor(logging.INFO):
        fields["event"] = event
        events_log.info(event, extra={FIELDS: fields})


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: ``ts`` (UTC, ISO 8601, microseconds),
    ``level``, ``logger``, ``msg``, the structured fields of a connection event,
    ``tag`` (the worker, when given) and ``exc`` (a traceback, when there is one)."""

    def __init__(self, tag: str = "", **_ignored: Any) -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="microseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.tag:
            out["tag"] = self.tag
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


#: The connection logger's text lines that a structured event repeats.
_ECHOES: Final = ("connect conn=", "hello conn=", "start conn=", "resume conn=", "close conn=")


class EventEchoFilter(logging.Filter):
    """Drops the connection log's INFO text lines that a structured connection
    event says again (with the event log on, each event is then one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and record.name == "unbroken.server.connection"
            and isinstance(record.msg, str)
            and record.msg.startswith(_ECHOES)
        )
