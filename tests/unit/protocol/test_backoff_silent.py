"""A silent opening (timed out with no answer) caps the next delay; refusals keep the
growing full-jitter delays; a server's retry_after still wins; attempts still count."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from unbroken import BackoffPolicy
from unbroken.errors import Overloaded
from unbroken.protocol.backoff import GiveUp, Reconnect, Reconnects


@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 30),
    cap=st.floats(0.0, 2.0),
)
def test_silent_openings_wait_at_most_the_cap_and_still_count(
    seed: int, n: int, cap: float
) -> None:
    policy = BackoffPolicy(max_attempts=20, deadline=None)
    r = Reconnects(policy, random.Random(seed))
    for i in range(n):
        step = r.lost(float(i), TimeoutError("silent"), progressed=False, silent_for=cap)
        if i >= 20:
            assert isinstance(step, GiveUp)
            continue
        assert isinstance(step, Reconnect)
        assert 0.0 <= step.delay <= cap
        assert step.attempt == i + 1


def test_a_servers_retry_after_is_still_a_floor() -> None:
    r = Reconnects(BackoffPolicy(), random.Random(1))
    r.lost(0.0, OSError("refused"), progressed=False)
    step = r.lost(0.0, Overloaded("full", 2.5), progressed=False, silent_for=0.5)
    assert isinstance(step, Reconnect) and step.delay == 2.5


def test_refusals_keep_the_growing_delays() -> None:
    loud = Reconnects(BackoffPolicy(deadline=None), random.Random(3))
    delays = [loud.lost(0.0, OSError("refused"), progressed=False) for _ in range(9)]
    assert max(d.delay for d in delays if isinstance(d, Reconnect)) > 0.5
