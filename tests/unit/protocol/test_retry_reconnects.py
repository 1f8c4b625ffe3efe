"""Reconnect episodes: when a client tries again, how long it waits, when it gives up."""

from __future__ import annotations

import random

from unbroken.errors import ConnectionLost, Overloaded, ReconnectExhausted
from unbroken.protocol.backoff import BackoffPolicy, GiveUp, Reconnect, Reconnects
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.retry import cause_of

DROP = ConnectionLost("dropped")


def test_the_first_attempt_is_at_once_then_the_policy_waits() -> None:
    reconnects = Reconnects(BackoffPolicy(base=0.1, cap=1.0, max_attempts=None), random.Random(1))
    assert reconnects.budget(0.0) == 60.0  # no episode yet: the first connection's is the deadline
    first = reconnects.lost(10.0, DROP, progressed=False)
    assert first == Reconnect(0.0, 1)
    second = reconnects.lost(10.0, DROP, progressed=False)
    assert isinstance(second, Reconnect) and second.attempt == 2 and 0 <= second.delay <= 0.1
    assert reconnects.backoff is not None and reconnects.backoff.schedule[0] == 0.0


def test_a_connection_that_made_progress_starts_a_new_episode() -> None:
    reconnects = Reconnects(BackoffPolicy(max_attempts=2), random.Random(1))
    assert isinstance(reconnects.lost(0.0, DROP, progressed=False), Reconnect)
    assert isinstance(reconnects.lost(0.0, DROP, progressed=False), Reconnect)
    assert isinstance(reconnects.lost(1.0, DROP, progressed=False), GiveUp)
    again = reconnects.lost(5.0, DROP, progressed=True)
    assert again == Reconnect(0.0, 1)


def test_the_budget_is_what_is_left_of_the_deadline() -> None:
    reconnects = Reconnects(BackoffPolicy(deadline=10.0), random.Random(1))
    reconnects.lost(100.0, DROP, progressed=False)
    assert reconnects.budget(104.0) == 6.0
    assert reconnects.budget(120.0) == 0.0


def test_giving_up_names_the_attempts_the_time_and_the_last_error() -> None:
    reconnects = Reconnects(BackoffPolicy(max_attempts=1), random.Random(1))
    reconnects.lost(0.0, DROP, progressed=False)
    last = ConnectionLost("again")
    out = reconnects.lost(2.5, last, progressed=False)
    assert isinstance(out, GiveUp) and isinstance(out.error, ReconnectExhausted)
    assert out.error.attempts == 1 and out.error.elapsed == 2.5
    assert out.error.last_error is last


def test_a_servers_retry_after_is_a_floor_under_the_delay() -> None:
    reconnects = Reconnects(BackoffPolicy(deadline=None), random.Random(1))
    lost = ConnectionLost("full", CloseCode.OVERLOADED, retry_after=3.0)
    assert reconnects.lost(0.0, lost, progressed=False) == Reconnect(3.0, 1)
    assert reconnects.lost(0.0, Overloaded("full", 4.0), progressed=False) == Reconnect(4.0, 2)


def test_the_cause_of_a_drop_names_the_close_code_and_its_meaning() -> None:
    assert cause_of(ConnectionLost("bye", CloseCode.SERVICE_RESTART)) == (
        "close 1012: server restarting or draining; reconnect (here or another node) (bye)"
    )
    assert cause_of(ConnectionLost("dropped")) == "ConnectionLost: dropped"
    assert cause_of(OSError("refused")) == "OSError: refused"


def test_a_first_connection_that_never_opened_starts_the_episode_when_it_began() -> None:
    reconnects = Reconnects(BackoffPolicy(deadline=10.0), random.Random(1))
    assert reconnects.budget(100.0) == 10.0
    assert isinstance(reconnects.lost(104.0, DROP, progressed=False, since=100.0), Reconnect)
    assert reconnects.budget(104.0) == 6.0
    # an episode under way keeps its start; since is for the one a failure begins
    reconnects.lost(105.0, DROP, progressed=False, since=104.5)
    assert reconnects.budget(105.0) == 5.0
    gone = reconnects.lost(111.0, DROP, progressed=False, since=110.0)
    assert isinstance(gone, GiveUp) and gone.error.elapsed == 11.0
    assert Reconnects(BackoffPolicy(deadline=None)).budget(0.0) is None


def test_time_on_a_good_connection_is_not_the_outage() -> None:
    # an idle client: dropped at 0, back at once, idle on the new connection for
    # 100 s, dropped again: the deadline counts time without a connection
    reconnects = Reconnects(BackoffPolicy(deadline=10.0, max_attempts=None), random.Random(1))
    assert isinstance(reconnects.lost(0.0, DROP, progressed=False), Reconnect)
    again = reconnects.lost(100.5, DROP, progressed=False, connected_for=100.0)
    assert isinstance(again, Reconnect) and again.attempt == 2  # the episode goes on
    assert reconnects.budget(100.5) == 9.5
    # without it (a connection that was never welcomed) the outage is 100 s: given up
    other = Reconnects(BackoffPolicy(deadline=10.0, max_attempts=None), random.Random(1))
    other.lost(0.0, DROP, progressed=False)
    assert isinstance(other.lost(100.5, DROP, progressed=False), GiveUp)
