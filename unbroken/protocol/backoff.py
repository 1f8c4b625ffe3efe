"""Reconnect backoff: first retry at once, then full-jitter exponential.

Pure and seedable: time is passed in, randomness comes from a ``random.Random``
you may seed. A server's ``retry_after`` is a floor under the next delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import ConfigError, ReconnectExhausted


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How a client waits between reconnect attempts.

    Attempt 1 happens at once; attempt ``k >= 2`` waits a uniform random delay in
    ``[0, min(cap, base * multiplier ** (k - 2))]`` (full jitter), never less than
    a server's ``retry_after``. The client gives up after ``max_attempts`` attempts
    or once ``deadline`` seconds have passed since the connection was lost
    (``None`` disables a limit).
    """

    base: float = 0.1
    cap: float = 10.0
    multiplier: float = 2.0
    max_attempts: int | None = 12
    deadline: float | None = 60.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.multiplier < 1:
            raise ConfigError("backoff needs base >= 0, cap >= 0 and multiplier >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1 (or None for no limit)")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError("deadline must be positive (or None for no limit)")

    def ceiling(self, attempt: int) -> float:
        """Largest delay before ``attempt`` (1-based), before any server floor."""
        if attempt <= 1:
            return 0.0
        return min(self.cap, self.base * self.multiplier ** (attempt - 2))


@dataclass(slots=True)
class Backoff:
    """The state of one reconnect episode under a :class:`BackoffPolicy`."""

    policy: BackoffPolicy
    started: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0
    schedule: list[float] = field(default_factory=list)

    def next_delay(
        self, now: float, retry_after: float | None = None, at_most: float | None = None
    ) -> float | None:
        """Delay before the next attempt, or ``None`` when the budget is spent.

        ``at_most`` caps the jittered delay (a server's ``retry_after`` still wins).
        Counts the attempt and records its delay in :attr:`schedule`.
        """
        p = self.policy
        attempt = self.attempts + 1
        if p.max_attempts is not None and attempt > p.max_attempts:
            return None
        ceiling = p.ceiling(attempt)
        if at_most is not None:
            ceiling = min(ceiling, max(0.0, at_most))
        delay = self.rng.uniform(0.0, ceiling) if ceiling > 0 else 0.0
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        if p.deadline is not None and (now - self.started) + delay > p.deadline:
            return None
        self.attempts = attempt
        self.schedule.append(delay)
        return delay

    def remaining(self, now: float) -> float | None:
        """Seconds left before the deadline (``None``: no deadline): the most an
        attempt may take, so no attempt outlives the budget."""
        d = self.policy.deadline
        return None if d is None else max(0.0, d - (now - self.started))

    def elapsed(self, now: float) -> float:
        """Seconds since the connection was lost."""
        return now - self.started


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Connect again after ``delay`` seconds: attempt ``attempt`` of the episode."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The reconnect budget is spent: ``error`` ends the client."""

    error: ReconnectExhausted


class Reconnects:
    """A client's reconnect episodes under one :class:`BackoffPolicy`: an episode
    begins at the first drop and again after any connection that made progress
    (the budget is for one outage, not for the client's life)."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        #: the episode under way (``None`` before the first drop)
        self.backoff: Backoff | None = None

    def budget(self, now: float) -> float | None:
        """The most the next attempt may take (``None``: unbounded). The first
        connection, before any drop, may take at most the policy's deadline: if it
        fails its episode counts from when it began (:meth:`lost`'s ``since``)."""
        if self.backoff is None:
            return self.policy.deadline
        return self.backoff.remaining(now)

    def lost(
        self,
        now: float,
        error: BaseException,
        *,
        progressed: bool,
        silent_for: float | None = None,
        since: float | None = None,
        connected_for: float = 0.0,
    ) -> Reconnect | GiveUp:
        """A connection (or attempt) ended with ``error``, which the retry table
        says to retry; ``progressed``: it got something done before it dropped. A
        server's ``retry_after`` (on ``error``) is a floor under the delay.

        ``silent_for``: the opening ran into its timeout with no answer at all (a
        blackhole, a stuck upgrade); it waited itself, so the delay is at most this
        (the client passes its ``attempt_stagger``: a path that heals is tried again
        within one stagger, however long the outage was). The growing delays stay
        for failures that answer at once (a refused connection, a close).

        ``since``: when the attempt that failed began, for an opening that never got
        its ``welcome``: an episode it starts counts from then (the client's first
        connection, so the deadline bounds ``async with Client(...)`` too).

        ``connected_for``: how long the connection that ended was up after its
        ``welcome``. The deadline counts time without a connection: an episode goes on
        across a connection that made no progress (``max_attempts`` still bounds a
        flapping server), but an idle client's hours on a good connection are not
        its outage."""
        if progressed or self.backoff is None:
            self.backoff = Backoff(self.policy, now if since is None else since, self.rng)
        elif connected_for > 0:
            self.backoff.started = min(now, self.backoff.started + connected_for)
        backoff = self.backoff
        retry_after: float | None = getattr(error, "retry_after", None)
        delay = backoff.next_delay(now, retry_after, at_most=silent_for)
        if delay is None:
            return GiveUp(ReconnectExhausted(backoff.attempts, backoff.elapsed(now), error))
        return Reconnect(delay, backoff.attempts)
