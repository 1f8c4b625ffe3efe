"""FloodFilter: a flood of identical records logs a bounded number of lines plus a count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.clock import Clock
from unbroken.server.logfilter import FloodFilter


def record(
    msg: str = "refused client=%s", *args: object, level: int = logging.WARNING
) -> logging.LogRecord:
    return logging.LogRecord("unbroken.test", level, __file__, 1, msg, args or ("x",), None)


def test_a_flood_of_one_kind_passes_burst_records_per_interval() -> None:
    clock = Clock()
    f = FloodFilter(burst=5, interval=10.0, clock=clock)
    passed = [r for r in (record("refused client=%s", i) for i in range(10_000)) if f.filter(r)]
    assert len(passed) == 5
    assert f.suppressed_total == 9_995
    clock.t = 10.0  # next window: the first record carries the count
    r = record()
    assert f.filter(r)
    assert r.getMessage() == "refused client=x [suppressed 9995 similar in 10.0 s]"
    r2 = record()
    assert f.filter(r2) and "suppressed" not in r2.getMessage()


def test_kinds_are_counted_apart_and_info_is_never_held_back() -> None:
    f = FloodFilter(burst=1, interval=10.0, clock=Clock())
    assert f.filter(record("a %s"))
    assert f.filter(record("b %s"))  # another template
    assert f.filter(record("a %s", level=logging.ERROR))  # another level
    assert not f.filter(record("a %s"))
    assert all(f.filter(record("a %s", level=logging.INFO)) for _ in range(100))


def test_the_kinds_tracked_are_bounded() -> None:
    clock = Clock()
    f = FloodFilter(burst=1, interval=10.0, max_kinds=100, clock=clock)
    for i in range(10_000):  # a logger that formats before logging: a kind per message
        f.filter(record(f"message {i}"))
    assert len(f._windows) <= 100


async def test_a_summary_is_logged_when_the_flood_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()  # the flush is timed by the loop; the span it reports, by this clock
    f = FloodFilter(burst=2, interval=0.2, clock=clock)
    for i in range(50):
        f.filter(record("refused client=%s", i))
    clock.t = 0.2  # (a loaded machine's late flush would say 0.3 s)
    async with asyncio.timeout(5):
        while not any("suppressed" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    [summary] = [r.getMessage() for r in caplog.records if "suppressed" in r.getMessage()]
    assert summary.startswith("suppressed 48 similar log lines in 0.2 s: logger=unbroken.test")
    assert "refused client=%s" in summary


def test_dict_config_builds_it_as_unbroken_serve_does() -> None:
    from unbroken.server.cli import _log_config

    cfg = _log_config("info", 7)
    assert cfg["filters"]["flood"]["burst"] == 7
    assert all("flood" in h["filters"] for h in cfg["handlers"].values())
    assert cfg["loggers"]["asyncio"]["handlers"] == ["default"]
    assert "filters" not in _log_config("info", 0)
