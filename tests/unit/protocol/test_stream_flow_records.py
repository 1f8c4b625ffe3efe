"""A client that never acks a trickling stream: the frames in flight are counted in a
bounded number of records (the oldest merged), their bytes exactly, and any later
cumulative ack frees what it covers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.clock import Clock
from unbroken.protocol.server_session import COALESCE_SPAN, MAX_RECORDS, StreamFlow

KIB = 1024
MIB = 1024 * KIB


def trickle(flow: StreamFlow, clock: Clock, frames: int, size: int = 40) -> None:
    """``frames`` one-token frames, each a record of its own (further apart than the
    coalescing span), none acked."""
    for seq in range(flow.sent + 1, flow.sent + frames + 1):
        clock.t += COALESCE_SPAN + 0.05
        flow.sent_frame(seq, size, False)


def test_a_client_that_never_acks_holds_a_bounded_count_of_records() -> None:
    clock = Clock()
    flow = StreamFlow(0, window=MIB, frame_cap=256 * KIB, clock=clock)
    cap = flow.max_records()
    assert cap == 2 * MIB // (4 * KIB)  # twice a full window of full records: 512
    trickle(flow, clock, 20_000)  # 83 min of a token every 0.25 s, never acked
    assert len(flow.inflight_last) == len(flow.inflight_ends) == len(flow.inflight_at) == cap
    assert flow.inflight_bytes == 20_000 * 40 < MIB  # the window never filled
    assert list(flow.inflight_last) == sorted(flow.inflight_last)
    assert flow.inflight_last[-1] == 20_000 and flow.inflight_ends[-1] == 20_000 * 40
    assert flow.ack(20_000)  # it acks at last: everything is freed
    assert flow.inflight_bytes == 0 and len(flow.inflight_last) == 0


def test_a_small_window_keeps_the_floor_of_records() -> None:
    clock = Clock()
    flow = StreamFlow(0, window=64 * KIB, frame_cap=16 * KIB, clock=clock)
    assert flow.max_records() == MAX_RECORDS
    trickle(flow, clock, 1_000, size=20)
    assert len(flow.inflight_last) == MAX_RECORDS


@given(st.integers(1, 3_000), st.integers(0, 3_000))
def test_a_partial_ack_after_merges_frees_no_byte_it_does_not_cover(
    frames: int, acked: int
) -> None:
    clock = Clock()
    flow = StreamFlow(0, window=64 * KIB, frame_cap=16 * KIB, clock=clock)
    trickle(flow, clock, frames, size=10)
    acked = min(acked, frames)
    assert flow.ack(acked)
    after = (frames - acked) * 10  # the bytes of the frames the ack does not cover
    assert after <= flow.inflight_bytes <= frames * 10
    assert len(flow.inflight_last) <= MAX_RECORDS
    assert flow.ack(frames) and flow.inflight_bytes == 0
