"""One timer for many periodic checks: the connections' heartbeat ticks.

Each connection used to keep a timer of its own (``call_later`` every half
heartbeat): at 1,000 connections, 5,000 timer handles a second made, queued and
fired, on the loop that also sends the tokens. A :class:`Ticker` is one timer per
event loop and period: every ``period`` seconds it calls each member's
:meth:`Member.tick` in one sweep, and a member that answers ``False`` (idle:
nothing to watch) leaves until it is added again.

A member's first tick comes at the next sweep (within ``period`` of being
added, not exactly ``period`` after); each tick after that, ``period`` after the
last, as with a timer of its own. The checks a tick makes (heartbeat due, send
timeout, peer silence) compare times, so they hold either way.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Member(Protocol):
    """What a :class:`Ticker` calls."""

    def tick(self, now: float) -> bool:
        """One periodic check at loop time ``now``; ``False``: stop ticking me."""
        ...


class Ticker:
    """Calls each member's :meth:`Member.tick` every ``period`` seconds, from one
    timer on ``loop`` (none while it has no member)."""

    __slots__ = ("_handle", "_loop", "_members", "period")

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self._loop = loop
        self.period = period
        self._members: dict[Member, None] = {}  # insertion order: ticked in that order
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def add(self, member: Member) -> None:
        """Tick ``member`` from the next sweep on (adding it twice changes nothing)."""
        self._members[member] = None
        if self._handle is None:
            self._handle = self._loop.call_later(self.period, self._sweep)

    def discard(self, member: Member) -> None:
        """Stop ticking ``member`` (not a member: nothing happens)."""
        self._members.pop(member, None)
        if not self._members and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        self._handle = None
        members = self._members
        now = self._loop.time()
        # a tick may add or remove members (a kill tears a connection down): a copy
        for member in list(members):
            try:
                keep = member.tick(now)
            except Exception:  # one member's failure must not stop the others' checks
                log.exception("periodic check failed member=%r", member)
                keep = False
            if not keep:
                members.pop(member, None)
        if members and self._handle is None:
            self._handle = self._loop.call_later(self.period, self._sweep)


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Ticker]] = (
    weakref.WeakKeyDictionary()
)


def ticker(period: float, loop: asyncio.AbstractEventLoop | None = None) -> Ticker:
    """The :class:`Ticker` of ``loop`` (the running one by default) for ``period``:
    every caller with the same period on the same loop shares it."""
    loop = loop if loop is not None else asyncio.get_running_loop()
    by_period = _tickers.get(loop)
    if by_period is None:
        by_period = _tickers[loop] = {}
    t = by_period.get(period)
    if t is None:
        t = by_period[period] = Ticker(loop, period)
    return t
