"""The client's liveness rule: silence limit, RTT estimate (Karn, 2 s cap), pings, lateness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.protocol.frames import Ping
from unbroken.protocol.liveness import AHEAD_MIN, BULK, MAX_AHEAD, MAX_QUEUE, MAX_RTO, Liveness


def welcomed(*, heartbeat_ms: float = 1000, rtt: float = 0.0, ping_every: float = 0.75) -> Liveness:
    live = Liveness(silence_factor=3.0, ping_every=ping_every)
    live.connecting()
    live.hello_sent(0.0)
    live.welcomed(rtt, heartbeat_ms, rtt)
    return live


def test_the_limit_is_three_heartbeats_plus_the_rto_of_the_first_sample() -> None:
    live = welcomed(heartbeat_ms=500, rtt=0.1)
    assert live.srtt == pytest.approx(0.1) and live.rttvar == pytest.approx(0.05)
    assert live.limit() == pytest.approx(3 * 0.5 + 0.1 + 4 * 0.05)


def test_rtt_samples_follow_rfc_6298() -> None:
    live = Liveness()
    live.rtt_sample(0.2)
    live.rtt_sample(0.6)
    assert live.rttvar == pytest.approx(0.75 * 0.1 + 0.25 * 0.4)
    assert live.srtt == pytest.approx(0.875 * 0.2 + 0.125 * 0.6)


def test_the_rto_term_is_capped_at_two_seconds() -> None:
    live = welcomed(heartbeat_ms=100, rtt=30.0)
    assert live.limit() == pytest.approx(3 * 0.1 + MAX_RTO)


@pytest.mark.parametrize(("ms", "beat"), [(1e12, 10.0), (0, 0.05), (1, 0.05), (250, 0.25)])
def test_the_servers_heartbeat_is_clamped(ms: float, beat: float) -> None:
    assert welcomed(heartbeat_ms=ms).heartbeat == pytest.approx(beat)


def test_a_pong_is_a_sample_and_answers_every_older_ping() -> None:
    live = welcomed(rtt=0.1)
    first, second = live.ping(1.0), live.ping(1.1)
    assert (first, second) == (Ping(1), Ping(2))
    live.pong(1.3, 2)
    assert not live.awaiting_pong
    assert live.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_a_pong_queued_behind_a_large_message_is_no_sample_karn() -> None:
    live = welcomed(rtt=0.1)
    live.ping(1.0)
    live.bytes_heard(2.5, BULK)  # a large message still arriving after the ping
    live.pong(3.0, 1)
    assert not live.awaiting_pong
    assert live.srtt == pytest.approx(0.1)  # the 2 s "round trip" measured the queue


def test_small_messages_never_make_a_pong_late() -> None:
    live = welcomed(rtt=0.1)
    live.ping(1.0)
    for i in range(10):  # paced tokens: whole small messages
        live.bytes_heard(1.0 + i * 0.01, 100)
        live.message_heard()
    assert live.last_bulk == 0.0
    live.pong(1.5, 1)
    assert live.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.5)


def test_an_unknown_pong_changes_nothing() -> None:
    live = welcomed(rtt=0.1)
    live.ping(1.0)
    live.pong(1.2, 7)
    assert live.awaiting_pong and live.srtt == pytest.approx(0.1)


def test_at_most_eight_pings_are_remembered() -> None:
    live = welcomed()
    for i in range(10):
        live.ping(float(i))
    assert sorted(live.pings) == list(range(3, 11))


def test_silence_beyond_the_limit_is_death_and_a_frame_heard_is_life() -> None:
    live = welcomed(heartbeat_ms=100)  # limit 0.3 s
    assert live.dead(0.29) is None
    live.bytes_heard(0.29, 10)
    assert live.dead(0.5) is None
    reason = live.dead(0.6)
    assert reason is not None and reason.startswith("no frame for 0.31s (limit 0.30s")


def test_an_unanswered_ping_is_death_while_frames_still_arrive() -> None:
    live = welcomed(heartbeat_ms=100)
    live.ping(1.0)
    for t in (1.1, 1.2, 1.3):
        live.bytes_heard(t, 10)
        live.message_heard()
    assert live.dead(1.3) is None
    reason = live.dead(1.31)
    assert reason is not None and "ping unanswered" in reason


def test_a_ping_behind_bulk_data_is_judged_from_when_the_data_arrived() -> None:
    live = welcomed(heartbeat_ms=100)
    live.ping(1.0)
    live.bytes_heard(1.25, BULK)
    assert live.dead(1.5) is None  # 0.5 s since the ping, 0.25 s since the data
    assert live.dead(1.56) is not None


def test_time_this_process_ran_late_never_counts_against_the_link() -> None:
    live = welcomed(heartbeat_ms=100)
    live.bytes_heard(1.0, 10)
    # the check was due at 1.05 but ran at 1.45: the loop was blocked
    first = live.check(1.45, 1.05, expecting=True)
    assert first.dead is None and first.wake_at == 1.45  # the reader goes first
    second = live.check(1.45, 1.45, expecting=True)
    assert second.dead is None  # 0.45 s quiet, 0.4 s of it ours
    assert live.dead(1.71) is not None  # the link's own 0.31 s


def test_under_sustained_lateness_the_second_late_check_judges() -> None:
    live = welcomed(heartbeat_ms=100)
    assert live.check(2.0, 1.0, expecting=True).dead is None  # deferred once
    check = live.check(3.0, 2.0, expecting=True)
    assert check.dead is not None and "no frame" in check.dead


def test_an_idle_connection_is_never_dead() -> None:
    live = welcomed(heartbeat_ms=100)
    live.ping(0.1)
    check = live.check(60.0, 60.0, expecting=False)
    assert check.dead is None and check.ping is None and not live.awaiting_pong


def test_a_check_pings_every_ping_every_seconds_while_expecting() -> None:
    live = welcomed(heartbeat_ms=1000, ping_every=0.75)
    live.bytes_heard(0.7, 10)
    assert live.check(0.7, 0.7, expecting=True).ping is None
    live.bytes_heard(0.8, 10)
    check = live.check(0.8, 0.8, expecting=True)
    assert check.ping == Ping(1) and check.wake_at == pytest.approx(0.8 + 0.25)


def test_without_ping_every_a_check_never_pings() -> None:
    live = welcomed(ping_every=0)
    live.bytes_heard(5.0, 10)
    assert live.check(5.0, 5.0, expecting=True).ping is None


def test_a_new_connection_forgets_the_pings_of_the_last_but_not_the_rtt() -> None:
    live = welcomed(rtt=0.2)
    live.ping(1.0)
    live.connecting()
    assert not live.awaiting_pong and live.srtt == pytest.approx(0.2)


@given(
    beat=st.floats(0.05, 2.0),
    rtt=st.floats(0.0, 5.0),
    quiet=st.floats(0.0, 20.0),
    ping_at=st.none() | st.floats(0.0, 5.0),
)
def test_dead_exactly_after_the_deadline(
    beat: float, rtt: float, quiet: float, ping_at: float | None
) -> None:
    live = welcomed(heartbeat_ms=beat * 1000, rtt=rtt)
    if ping_at is not None:
        live.ping(rtt + ping_at)
    deadline = live.deadline()
    now = rtt + quiet
    if now < deadline - 1e-9:
        assert live.dead(now) is None
    elif now > deadline + 1e-9:
        assert live.dead(now) is not None


def queued_link(delay: float) -> Liveness:
    """A link whose last pong came back ``delay`` s late behind small messages."""
    live = welcomed(heartbeat_ms=100, rtt=0.1)  # limit 0.3 s + RTO
    live.ping(1.0)
    for i in range(BULK // 100 + 1):  # small whole messages: a backlog of paced tokens
        live.bytes_heard(1.0 + i * delay / 50, 100)
        live.message_heard()
    live.pong(1.0 + delay, 1)
    assert live.queue_delay == pytest.approx(delay)
    return live


def test_a_pong_queued_behind_small_messages_extends_the_next_pings_limit() -> None:
    live = queued_link(2.0)
    start = 1.0 + 2.0
    live.ping(start)
    limit = live.limit()
    for i in range(1, 60):  # data keeps arriving ahead of the next pong
        live.bytes_heard(start + i * 0.1, 100)
        live.message_heard()
    # past the plain limit, within limit + twice the queue the last pong showed
    now = start + 5.9
    assert live.ping_age(now) > limit
    assert live.dead(now) is None
    assert live.ping_limit() == pytest.approx(limit + 4.0)


def test_without_data_ahead_of_it_a_ping_gets_no_queue_allowance() -> None:
    live = queued_link(2.0)
    start = 1.0 + 2.0
    live.ping(start)
    for i in range(1, 20):  # heartbeats only: less than BULK since the ping
        live.bytes_heard(start + i * 0.1, 20)
        live.message_heard()
    assert live.ping_limit() == pytest.approx(live.limit())
    reason = live.dead(start + live.limit() + 0.01)
    assert reason is not None and "ping unanswered" in reason


def test_a_receive_only_link_after_a_healthy_round_trip_is_found_at_the_limit() -> None:
    live = welcomed(heartbeat_ms=100, rtt=0.1)
    live.ping(1.0)
    live.pong(1.1, 1)  # healthy: nothing ahead of the pong
    assert live.queue_delay == 0.0
    live.ping(1.2)
    for i in range(1, 100):  # the server's frames still arrive (a live stream)
        live.bytes_heard(1.2 + i * 0.01, 200)
        live.message_heard()
    assert live.ping_limit() == pytest.approx(live.limit())
    assert live.dead(1.2 + live.limit() + 0.01) is not None


def test_the_queue_allowance_is_capped() -> None:
    live = queued_link(30.0)
    live.ping(31.0)
    live.bytes_heard(31.1, BULK)
    live.message_heard()
    assert live.ping_limit() == pytest.approx(live.limit() + MAX_QUEUE)


def test_a_reconnect_forgets_the_queue() -> None:
    live = queued_link(2.0)
    live.connecting()
    assert live.queue_delay == 0.0


@given(
    delay=st.floats(0.0, 10.0),
    quiet=st.floats(0.0, 30.0),
    heard=st.integers(0, 3 * BULK),
)
def test_dead_exactly_after_the_deadline_with_a_queue(
    delay: float, quiet: float, heard: int
) -> None:
    live = queued_link(delay)
    start = 1.0 + delay
    live.ping(start)
    if heard:
        live.bytes_heard(start, heard)
        live.message_heard()
    deadline = live.deadline()
    now = start + quiet
    if now < deadline - 1e-9:
        assert live.dead(now) is None
    elif now > deadline + 1e-9:
        assert live.dead(now) is not None


def _events(live: Liveness, at: float, n: int) -> None:
    """An events frame of ``n`` bytes arrives at ``at`` (as the session reports it)."""
    live.bytes_heard(at, n)
    live.message_heard()
    live.events_heard(n)


def test_a_first_ping_behind_a_full_window_on_a_slow_link_is_not_dead() -> None:
    """5 KB/s against a 16 KiB window: the first ping's pong waits 3 s behind events
    the window let out before it. While those arrive, the ping is judged from the
    last of them; once they stop arriving, from then."""
    live = welcomed(rtt=0.05)
    limit = live.limit()
    live.ahead = 16 * 1024 + 4096
    live.ping(1.0)
    t = 1.0
    for _ in range(16):  # 1 KiB every 0.2 s: 3.2 s of events, all within the bound
        t += 0.2
        _events(live, t, 1024)
        assert live.dead(t) is None
    assert t - 1.0 > limit  # the ping has waited longer than the limit ...
    # ... judged from the last event, at most MAX_AHEAD after it was sent
    judged = min(t, 1.0 + MAX_AHEAD)
    assert live.dead(judged + limit - 0.01) is None
    assert live.dead(judged + limit + 0.01) is not None


def test_events_beyond_the_window_bound_do_not_excuse_an_unanswered_ping() -> None:
    """More event bytes than could have left before the ping: they were sent after
    the server read a later ack, so a pong should have come; they extend nothing."""
    live = welcomed(rtt=0.05)
    limit = live.limit()
    live.ahead = 2048
    live.ping(1.0)
    _events(live, 1.2, 2048)  # within the bound: judged from 1.2
    for i in range(1, 40):  # more keeps arriving, beyond the bound
        _events(live, 1.2 + 0.1 * i, 512)
    assert live.ping_age(1.2 + limit) == pytest.approx(limit)
    assert live.dead(1.2 + limit + 0.01) is not None


def test_the_window_allowance_is_capped_and_nothing_without_ahead() -> None:
    live = welcomed(rtt=0.05)
    live.ahead = 1 << 30
    live.ping(1.0)
    t = 1.0
    while t < 1.0 + MAX_AHEAD + 2:
        t += 0.05
        _events(live, t, 100)
    assert live.ping_age(t) == pytest.approx(t - (1.0 + MAX_AHEAD))
    bare = welcomed(rtt=0.05)  # no ahead (no stream live): the ping is judged as sent
    bare.ping(1.0)
    _events(bare, 2.0, 100)
    assert bare.ping_age(2.5) == pytest.approx(1.5)


def test_a_slow_trickle_gets_no_window_allowance() -> None:
    """A few tokens a second still arriving say nothing of the client's own frames (the
    upstream may be dead while the server trickles on within its window): the ping is
    judged from when it was sent, as long as fewer than AHEAD_MIN event bytes came."""
    live = welcomed(heartbeat_ms=400, rtt=0.05)  # the server's default heartbeat
    limit = live.limit()
    live.ahead = 1 << 20
    live.ping(1.0)
    t, dead_at = 1.0, None
    while dead_at is None and t < 1.0 + 2 * limit:
        t += 0.05
        _events(live, t, 50)  # 1 KB/s
        if live.dead(t) is not None:
            dead_at = t
    assert dead_at is not None and dead_at <= 1.0 + limit + 0.05
    assert live.events < AHEAD_MIN


def test_the_window_allowance_counts_from_the_first_ping_of_the_spell() -> None:
    """A receive-only failure under a fast stream: pings go on unanswered (the oldest
    are forgotten past MAX_PINGS) while the server sends within its large window; the
    allowance is counted from the spell's first ping, so the link is found at most
    MAX_AHEAD after the limit."""
    live = welcomed(heartbeat_ms=400, rtt=0.05)
    limit = live.limit()
    live.ahead = 1 << 20
    t, dead_at, next_ping = 1.0, None, 1.0
    while dead_at is None and t < 30.0:
        if t >= next_ping:
            live.ping(t)
            next_ping += 0.75
        t += 0.05
        _events(live, t, 1000)  # 20 KB/s, within the window
        if live.dead(t) is not None:
            dead_at = t
    assert dead_at is not None and dead_at <= 1.0 + MAX_AHEAD + limit + 0.05
