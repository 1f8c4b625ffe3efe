"""The flow window follows the link: cut to the drain rate when bytes queue between
server and client, doubled back to the configured window when the queue is gone."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tests.clock import Clock
from unbroken.protocol.server_session import (
    ACK_SPAN,
    MIN_WINDOW,
    QUEUE_TARGET,
    ServerSession,
    StreamFlow,
)

KIB = 1024
MIB = 1024 * KIB


def flow_on(clock: Clock, window: int = MIB) -> StreamFlow:
    flow = StreamFlow(0, window=window, frame_cap=256 * KIB, first_frame=256 * KIB, clock=clock)
    return flow


def test_without_a_clock_the_window_is_fixed() -> None:
    flow = StreamFlow(0, window=MIB, frame_cap=256 * KIB)
    flow.sent_frame(1, 100 * KIB, False)
    assert flow.ack(1)
    assert flow.cwnd == MIB and flow.rate == 0.0


def test_a_fast_link_keeps_the_whole_window() -> None:
    clock = Clock()
    flow = flow_on(clock)
    for seq in range(1, 51):  # 64 KiB frames acked 2 ms later: 32 MB/s, no queue
        flow.sent_frame(seq, 64 * KIB, False)
        clock.t += 0.002
        assert flow.ack(seq)
    assert flow.cwnd == MIB
    assert flow.budget() == 256 * KIB


def slow_link(clock: Clock, flow: StreamFlow, rate: float, base_rtt: float, frames: int) -> None:
    """``frames`` frames of 8 KiB sent 10 ms apart, drained at ``rate`` (bytes/s)
    after a ``base_rtt`` path; each acked as it is drained (events in time order)."""
    base, t0 = flow.sent, clock.t
    events: list[tuple[float, int, int]] = []  # (at, 0 send / 1 ack, seq)
    drained = t0
    for i in range(frames):
        at = t0 + i * 0.01
        drained = max(drained, at) + 8 * KIB / rate
        events += [(at, 0, base + i + 1), (drained + base_rtt, 1, base + i + 1)]
    for at, kind, seq in sorted(events):
        clock.t = at
        if kind == 0:
            flow.sent_frame(seq, 8 * KIB, False)
        else:
            assert flow.ack(seq)


def quick_round_trip(clock: Clock, flow: StreamFlow, rtt: float) -> None:
    flow.sent_frame(flow.sent + 1, 1 * KIB, False)
    clock.t += rtt
    assert flow.ack(flow.sent)


def test_a_queue_cuts_the_window_to_the_drain_rate() -> None:
    clock = Clock()
    flow = flow_on(clock)
    quick_round_trip(clock, flow, 0.05)
    rate = 200 * KIB  # 200 KiB/s while 800 KiB/s are sent: the queue grows
    slow_link(clock, flow, rate, base_rtt=0.05, frames=100)
    assert flow.cwnd < MIB
    assert 0.5 * rate < flow.rate < 1.5 * rate
    assert flow.rtt_floor == 0.05
    # the window is the drain rate times the path plus ACK_SPAN (as of the last ack)
    assert MIN_WINDOW < flow.cwnd <= int(1.5 * rate * (0.05 + ACK_SPAN))


def test_a_slow_link_never_goes_below_the_floor() -> None:
    clock = Clock()
    flow = flow_on(clock)
    quick_round_trip(clock, flow, 0.01)
    slow_link(clock, flow, rate=20_000.0, base_rtt=0.01, frames=20)
    assert flow.cwnd == MIN_WINDOW
    assert flow.inflight_bytes == 0 and flow.budget() == MIN_WINDOW  # not a 256 KiB frame


def test_the_floor_never_lifts_a_smaller_configured_window() -> None:
    """A window configured under the floor (16 KiB) stays the most in flight on a slow
    link (the floor once raised it to 64 KiB)."""
    clock = Clock()
    flow = flow_on(clock, window=16 * KIB)
    quick_round_trip(clock, flow, 0.01)
    slow_link(clock, flow, rate=20_000.0, base_rtt=0.01, frames=20)
    assert flow.cwnd == 16 * KIB


def test_when_the_queue_is_gone_the_window_doubles_back() -> None:
    clock = Clock()
    flow = flow_on(clock)
    flow.cwnd = MIN_WINDOW
    flow.rtt_floor, flow.rtt_floor_at = 0.01, 0.0
    sizes = []
    for seq in range(1, 7):
        flow.sent_frame(seq, 4 * KIB, False)
        clock.t += 0.01
        flow.ack(seq)
        sizes.append(flow.cwnd)
    assert sizes == [128 * KIB, 256 * KIB, 512 * KIB, MIB, MIB, MIB]


def test_an_ack_that_answers_a_heartbeat_is_no_round_trip_sample() -> None:
    clock = Clock()
    flow = flow_on(clock)
    flow.sent_frame(1, 1 * KIB, False)
    clock.t = 0.01
    flow.ack(1)
    flow.sent_frame(2, 1 * KIB, False)
    clock.t = 0.4
    flow.hb_at = 0.4  # the window waited; hb went; its answer carries the ack
    clock.t = 5.0
    flow.ack(2)
    assert flow.rtt_floor == 0.01
    assert flow.cwnd == MIB  # 5 s was the heartbeat's wait, not a queue


def test_the_session_tells_its_flows_of_a_heartbeat() -> None:
    clock = Clock()
    session = ServerSession(clock=clock)
    a = session.attach("a")
    b = session.attach("b")
    session.hb_sent(3.0)
    assert a.hb_at == b.hb_at == 3.0
    assert a.clock is clock


def test_the_round_trip_floor_is_forgotten_after_its_window() -> None:
    clock = Clock()
    flow = flow_on(clock)
    flow.sent_frame(1, 1 * KIB, False)
    clock.t = 0.01
    flow.ack(1)
    clock.t = 20.0  # a path whose latency grew to 2 s
    flow.sent_frame(2, 1 * KIB, False)
    clock.t = 22.0
    flow.ack(2)
    assert flow.rtt_floor == 2.0
    assert flow.cwnd == MIB


@example(  # two acks a denormal apart: the rate sample was infinite (OverflowError)
    steps=[
        (1, 1.1125369292536007e-308, False),
        (2, 1.1125369292536007e-308, False),
        (1, 1.0, False),
    ]
)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 300 * KIB), st.floats(0.0, 3.0), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_the_window_stays_between_the_floor_and_the_configured_window(
    steps: list[tuple[int, float, bool]],
) -> None:
    clock = Clock()
    flow = flow_on(clock)
    for seq, (size, wait, hb) in enumerate(steps, 1):
        flow.sent_frame(seq, size, False)
        clock.t += wait
        if hb:
            flow.hb_at = clock.t
        assert flow.ack(seq)
        assert min(MIN_WINDOW, MIB) <= flow.cwnd <= MIB
        assert flow.inflight_bytes == 0
    assert QUEUE_TARGET > 0


def test_adaptive_off_times_frames_but_keeps_the_window() -> None:
    """``Unbroken(adaptive=False)``: the same queue leaves the window whole (the
    frames are still timed, so a slow reader can be found and shed)."""
    clock = Clock()
    flow = StreamFlow(
        0, window=MIB, frame_cap=256 * KIB, first_frame=256 * KIB, clock=clock, adaptive=False
    )
    quick_round_trip(clock, flow, 0.05)
    slow_link(clock, flow, 200 * KIB, base_rtt=0.05, frames=100)
    assert flow.cwnd == MIB and flow.rate == 0.0
    flow.sent_frame(flow.sent + 1, 8 * KIB, False)
    assert flow.inflight_at[-1] == clock.t
    session = ServerSession(clock=clock, adaptive=False)
    assert session.attach("s1").adaptive is False
