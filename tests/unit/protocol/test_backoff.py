"""Reconnect backoff: first retry at once, full jitter under a ceiling, a server floor,
and an end to every episode."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.errors import ConfigError
from unbroken.protocol import Backoff, BackoffPolicy

policies = st.builds(
    BackoffPolicy,
    base=st.floats(0.0, 5.0),
    cap=st.floats(0.0, 60.0),
    multiplier=st.floats(1.0, 4.0),
    max_attempts=st.none() | st.integers(1, 30),
    deadline=st.none() | st.floats(0.5, 600.0),
)


def run(backoff: Backoff, floors: list[float | None]) -> list[float | None]:
    """Ask for one delay per floor, advancing time by each delay (plus a failed attempt)."""
    now = backoff.started
    out: list[float | None] = []
    for floor in floors:
        delay = backoff.next_delay(now, floor)
        out.append(delay)
        if delay is None:
            break
        now += delay + 0.01
    return out


def test_first_attempt_is_immediate() -> None:
    backoff = Backoff(BackoffPolicy(), started=100.0)
    assert backoff.next_delay(100.0) == 0.0
    assert backoff.attempts == 1


def test_ceiling_doubles_from_base_up_to_cap() -> None:
    policy = BackoffPolicy(base=0.1, cap=1.0, multiplier=2.0)
    assert [policy.ceiling(k) for k in range(1, 8)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


@settings(max_examples=300, deadline=None)
@given(policies, st.integers(0, 2**32), st.lists(st.none() | st.floats(0.0, 30.0), max_size=40))
def test_delays_stay_within_the_ceiling_and_honour_the_server_floor(
    policy: BackoffPolicy, seed: int, floors: list[float | None]
) -> None:
    backoff = Backoff(policy, started=0.0, rng=random.Random(seed))
    delays = run(backoff, floors)
    for attempt, (delay, floor) in enumerate(zip(delays, floors, strict=False), 1):
        if delay is None:
            break
        ceiling = policy.ceiling(attempt)
        if floor is None:
            assert 0.0 <= delay <= ceiling
        else:
            assert floor <= delay <= max(ceiling, floor)
        if attempt == 1:
            assert delay == (floor or 0.0)
    assert backoff.schedule == [d for d in delays if d is not None]


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 2**32))
def test_the_same_seed_gives_the_same_schedule(policy: BackoffPolicy, seed: int) -> None:
    one = Backoff(policy, started=5.0, rng=random.Random(seed))
    two = Backoff(policy, started=5.0, rng=random.Random(seed))
    floors: list[float | None] = [None] * 12
    assert run(one, floors) == run(two, floors)
    assert one.schedule == two.schedule


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32))
def test_max_attempts_ends_the_episode(max_attempts: int, seed: int) -> None:
    policy = BackoffPolicy(base=0.01, cap=0.05, max_attempts=max_attempts, deadline=None)
    backoff = Backoff(policy, started=0.0, rng=random.Random(seed))
    delays = run(backoff, [None] * (max_attempts + 5))
    assert delays[-1] is None
    assert len(delays) == max_attempts + 1
    assert backoff.attempts == max_attempts


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 100.0), st.integers(0, 2**32))
def test_deadline_ends_the_episode_and_no_delay_crosses_it(deadline: float, seed: int) -> None:
    policy = BackoffPolicy(base=0.5, cap=5.0, max_attempts=None, deadline=deadline)
    backoff = Backoff(policy, started=10.0, rng=random.Random(seed))
    now = 10.0
    while (delay := backoff.next_delay(now)) is not None:
        assert backoff.elapsed(now) + delay <= deadline
        now += delay + 0.25  # each failed attempt takes time too
    assert backoff.next_delay(10.0 + deadline + 1.0) is None


def test_a_server_floor_beyond_the_deadline_ends_the_episode() -> None:
    backoff = Backoff(BackoffPolicy(deadline=10.0), started=0.0, rng=random.Random(1))
    assert backoff.next_delay(0.0, retry_after=30.0) is None
    assert backoff.attempts == 0


def test_the_ended_episode_stays_ended() -> None:
    backoff = Backoff(BackoffPolicy(max_attempts=1, deadline=None), started=0.0)
    assert backoff.next_delay(0.0) == 0.0
    assert backoff.next_delay(1.0) is None
    assert backoff.next_delay(2.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"cap": -0.1},
        {"multiplier": 0.5},
        {"max_attempts": 0},
        {"deadline": 0.0},
        {"deadline": -5.0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]
