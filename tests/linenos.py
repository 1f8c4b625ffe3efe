"""A failure whose traceback has an entry without a line number is reported, not an
INTERNALERROR that ends the whole run.

CPython 3.11+ gives a traceback entry ``tb_lineno = None`` when the frame stood on an
instruction that has no line number. pytest-timeout's SIGALRM handler raises its
``Failed: Timeout`` wherever the main thread is, so a test that runs into the 60 s
timeout while its event loop is on such an instruction (an ``await``'s or a ``with``'s
cleanup code) gets one; pytest then fails to format the failure (``tb_lineno - 1``:
``TypeError``), and the INTERNALERROR stops the session: every later test is left
unrun and the failing test is not even named. This hook unlinks such entries from the
failure's traceback (and from its causes' and contexts') before pytest formats it: the
report keeps the other frames and the error itself. pytest's own frame heads the
traceback (it has a line number), so the unlinking happens in place.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType

import pytest


def _unlink_unnumbered(tb: TracebackType) -> None:
    """Drop the entries after ``tb`` (kept) whose line number is None."""
    entry: TracebackType | None = tb
    while entry is not None:
        after = entry.tb_next
        while after is not None and after.tb_lineno is None:
            after = after.tb_next
        entry.tb_next = after
        entry = after


def drop_unnumbered_entries(exc: BaseException) -> None:
    """Unlink the line-number-less entries from ``exc``'s traceback and from those of
    the exceptions it was raised from or during (its first entry stays)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if e.__traceback__ is not None:
            head = e.__traceback__
            while head is not None and head.tb_lineno is None:
                head = head.tb_next
            if head is not e.__traceback__:
                e.__traceback__ = head
            if head is not None:
                _unlink_unnumbered(head)
        todo += [e.__cause__, e.__context__]
        if isinstance(e, BaseExceptionGroup):
            todo += e.exceptions


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.excinfo is not None:
        tb = call.excinfo.tb
        # the head (pytest's own call) always has a line number: unlink in place
        if tb.tb_lineno is not None:
            _unlink_unnumbered(tb)
        drop_unnumbered_entries(call.excinfo.value)
    return (yield)
