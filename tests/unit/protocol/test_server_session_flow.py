"""The server session owns each stream's flow: what was sent, what was acked, the
window, released streams, and the peer-silence decision (time passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.clock import Clock
from unbroken.protocol.frames import Hello, encode
from unbroken.protocol.server_session import (
    COALESCE_BYTES,
    COALESCE_SPAN,
    AckResult,
    ServerSession,
    StreamFlow,
)

S1 = "Xq3v9Lr0bZ2kT8mWc4HnJg"
S2 = "Yq3v9Lr0bZ2kT8mWc4HnJg"


def ready(**kw: float) -> ServerSession:
    server = ServerSession(**kw)  # type: ignore[arg-type]
    server.receive(encode(Hello()))
    return server


def test_the_window_bounds_unacked_bytes_and_an_ack_opens_it() -> None:
    server = ready(window=1000, frame_cap=400)
    flow = server.attach(S1)
    assert flow.budget() == 400  # nothing in flight: one frame cap
    flow.sent_frame(3, 400, end=False)
    flow.sent_frame(6, 400, end=False)
    assert flow.budget() == 200  # 800 of 1000 in flight
    flow.sent_frame(8, 200, end=False)
    assert flow.budget() <= 0 and server.window_full()
    assert server.take_ack(S1, 6) is AckResult.APPLIED  # cumulative: two frames at once
    assert (flow.acked, flow.inflight_bytes, flow.budget()) == (6, 200, 400)
    assert not server.window_full()


def test_an_event_larger_than_the_window_still_goes_out_alone() -> None:
    flow = StreamFlow(0, window=100, frame_cap=50)
    assert flow.budget() == 50
    flow.sent_frame(1, 5000, end=False)
    assert flow.budget() <= 0
    assert flow.ack(1) and flow.budget() == 50


def test_an_ack_beyond_what_was_sent_changes_nothing() -> None:
    server = ready()
    flow = server.attach(S1, 4)
    flow.sent_frame(7, 100, end=False)
    assert server.take_ack(S1, 8) is AckResult.BEYOND
    assert (flow.acked, flow.inflight_bytes) == (4, 100)
    assert server.take_ack(S1, 5) is AckResult.APPLIED  # inside a frame: it stays in flight
    assert (flow.acked, flow.inflight_bytes) == (5, 100)
    assert server.take_ack(S1, 3) is AckResult.APPLIED  # a late smaller ack never goes back
    assert flow.acked == 5


def test_a_stream_whose_end_is_acked_is_detached_and_later_acks_are_unknown() -> None:
    server = ready()
    flow = server.attach(S1)
    flow.sent_frame(2, 10, end=True)
    assert server.take_ack(S1, 1) is AckResult.APPLIED
    assert server.take_ack(S1, 2) is AckResult.FINISHED
    assert S1 not in server.flows and S1 not in server.released
    assert server.take_ack(S1, 2) is AckResult.UNKNOWN


def test_a_released_stream_takes_late_acks_and_a_foreign_one_is_unknown() -> None:
    server = ready()
    server.attach(S1).sent_frame(9, 10, end=True)
    server.release(S1)  # its end was sent
    for seq in (5, 9, 9, 100):
        assert server.take_ack(S1, seq) is AckResult.RELEASED
    assert server.take_ack(S2, 1) is AckResult.UNKNOWN
    assert not server.live()


def test_attaching_again_is_a_new_cursor_that_keeps_the_highest_ack() -> None:
    server = ready()
    flow = server.attach(S1)
    flow.sent_frame(5, 100, end=False)
    server.take_ack(S1, 5)
    again = server.attach(S1, 5)  # resumed on the same connection
    assert again is not flow and (again.sent, again.acked, again.inflight_bytes) == (5, 5, 0)
    assert server.streams == {S1: 5}


def test_peer_silence_counts_from_the_stall_or_the_last_frame_heard() -> None:
    server = ready(window=100, frame_cap=100, peer_silence=1.0)
    flow = server.attach(S1)
    assert server.peer_silent(10.0, 0.0, sending=False) == 0.0  # window open: never
    flow.sent_frame(3, 100, end=False)
    assert server.peer_silent(10.0, 0.0, sending=False) == 0.0  # stalled since 10.0
    assert server.peer_silent(10.9, 0.0, sending=False) == 0.0
    assert server.peer_silent(11.5, 11.0, sending=False) == 0.0  # heard at 11.0
    assert server.peer_silent(12.5, 11.0, sending=False) == 1.5  # over the limit
    assert server.peer_silent(20.0, 11.0, sending=True) == 0.0  # judged by send timeout
    assert server.peer_silent(20.5, 11.0, sending=False) == 0.0  # stall seen again at 20.5
    server.take_ack(S1, 3)
    assert server.peer_silent(30.0, 11.0, sending=False) == 0.0  # window open again


def test_an_ended_stream_never_counts_as_stalled() -> None:
    server = ready(window=10, frame_cap=10, peer_silence=0.5)
    server.attach(S1).sent_frame(1, 100, end=True)
    assert not server.window_full()
    assert server.peer_silent(100.0, 0.0, sending=False) == 0.0


def test_small_frames_sent_close_together_are_one_record_in_flight() -> None:
    """A paced stream's frames (one token each) are counted, not copied: frames sent
    within COALESCE_SPAN of a record's first frame join it, up to COALESCE_BYTES."""
    clock = Clock()
    flow = StreamFlow(0, window=1 << 20, frame_cap=1 << 18, clock=clock)
    for seq in range(1, 5):  # 20 tokens/s: 50 ms apart
        flow.sent_frame(seq, 90, end=False)
        clock.t += 0.05
    assert clock.t - 0.05 < COALESCE_SPAN
    assert len(flow.inflight_last) == 1 and flow.inflight_bytes == 360
    flow.sent_frame(5, 90, end=False)  # 200 ms after the record's first frame: a new one
    lasts, ends, _ = flow.records()
    assert list(lasts) == [4, 5] and list(ends) == [360, 450]
    assert flow.inflight_at[0] == 0.0  # a record is timed by its first frame
    assert flow.ack(5) and flow.inflight_bytes == 0 and len(flow.inflight_last) == 0


def test_a_record_never_outgrows_its_byte_bound() -> None:
    flow = StreamFlow(0, window=1 << 20, frame_cap=1 << 18)
    size = COALESCE_BYTES // 4
    for seq in range(1, 10):
        flow.sent_frame(seq, size, end=False)
    assert list(flow.records()[0]) == [4, 8, 9]
    big = StreamFlow(0, window=1 << 20, frame_cap=1 << 18)
    big.sent_frame(1, COALESCE_BYTES + 1, end=False)
    big.sent_frame(2, 10, end=False)
    assert list(big.records()[0]) == [1, 2]  # a frame over the bound is a record alone


def test_a_small_window_keeps_one_record_per_frame() -> None:
    """The bound is a sixteenth of the window at most: the bytes a partial ack leaves
    counted in flight are a small share of any window."""
    flow = StreamFlow(0, window=1000, frame_cap=400)
    flow.sent_frame(1, 100, end=False)
    flow.sent_frame(2, 100, end=False)
    assert list(flow.records()[0]) == [1, 2]


def test_an_ack_inside_a_record_frees_it_only_once_its_last_frame_is_acked() -> None:
    clock = Clock()
    flow = StreamFlow(0, window=1 << 20, frame_cap=1 << 18, clock=clock)
    for seq in range(1, 4):
        flow.sent_frame(seq, 100, end=False)
    assert flow.ack(2)
    assert (flow.acked, flow.inflight_bytes) == (2, 300)  # counted until the record is acked
    assert flow.ack(3)
    assert (flow.acked, flow.inflight_bytes) == (3, 0)


def test_the_round_trip_is_timed_from_the_newest_record_the_ack_reaches() -> None:
    """An ack that covers a record and part of a newer one samples the newer one's
    first frame: a round trip taken from frames sent before a pause would read as
    a queue and cut the window."""
    clock = Clock()
    flow = StreamFlow(0, window=1 << 20, frame_cap=1 << 18, clock=clock)
    flow.sent_frame(1, 100, end=False)
    flow.sent_frame(2, 100, end=False)
    clock.t = 0.01
    assert flow.ack(2)
    assert flow.rtt_floor == 0.01
    clock.t = 5.0
    flow.sent_frame(3, 100, end=False)
    flow.sent_frame(4, 100, end=False)
    clock.t = 5.9  # the agent paused: the next frames are a new record
    flow.sent_frame(5, 100, end=False)
    flow.sent_frame(6, 100, end=False)
    assert list(flow.records()[0]) == [4, 6]
    clock.t = 5.91
    assert flow.ack(5)  # the record 3..4, and 5 of the record 5..6
    assert flow.inflight_bytes == 200
    assert flow.rtt_floor < 0.011 and flow.rtt_floor_at == 5.91  # 5.91 - 5.9, not - 5.0
    assert flow.cwnd == flow.window
    clock.t = 5.92
    assert flow.ack(6)  # a partial ack is no sample: the record's first frame is timed
    assert flow.inflight_bytes == 0 and flow.cwnd == flow.window


@given(
    window=st.integers(1, 5000),
    frames=st.lists(st.integers(1, 3000), min_size=1, max_size=30),
    acks=st.lists(st.integers(0, 40), max_size=40),
)
def test_the_window_accounting_matches_the_frames_still_unacked(
    window: int, frames: list[int], acks: list[int]
) -> None:
    """Whatever the frames and acks (in any order, repeated, too large), the bytes
    in flight are those of the frames past the highest valid ack, plus at most one
    record's bound (a record acked in part stays counted); none once all is acked;
    and the budget never lets more than the window out when something is in flight."""
    server = ready(window=window, frame_cap=window)
    flow = server.attach(S1)
    sizes: dict[int, int] = {}
    seq = 0
    acks_left = list(acks)
    for size in frames:
        if flow.budget() > 0:
            assert flow.inflight_bytes == 0 or flow.inflight_bytes + flow.budget() <= window
            seq += 1
            flow.sent_frame(seq, size, end=False)
            sizes[seq] = size
        if acks_left:
            ack = acks_left.pop(0)
            result = server.take_ack(S1, ack)
            assert result is (AckResult.BEYOND if ack > seq else AckResult.APPLIED)
        unacked = sum(b for s, b in sizes.items() if s > flow.acked)
        assert unacked <= flow.inflight_bytes <= unacked + min(COALESCE_BYTES, window // 16)
        assert flow.inflight_bytes == 0 or flow.acked < seq
        assert flow.acked <= flow.sent == seq
