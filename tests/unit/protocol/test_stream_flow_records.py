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
    lasts, ends, _ = flow.records()
    assert list(lasts) == sorted(lasts)
    assert lasts[-1] == 20_000 and ends[-1] == 20_000 * 40
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


class _EagerRecords:
    """The records as they were kept before the newest one's last and end were left
    implied (every frame wrote them into the arrays): the reference."""

    def __init__(self, flow: StreamFlow) -> None:
        self.flow = flow
        self.lasts: list[int] = []
        self.ends: list[int] = []
        self.ats: list[float] = []
        self.start = 0
        self.sent = 0
        self.inflight = 0

    def sent_frame(self, last: int, size: int, now: float) -> None:
        self.sent += size
        self.inflight += size
        if (
            self.lasts
            and now - self.ats[-1] < COALESCE_SPAN
            and self.sent - self.start <= (self.flow.coalesce)
        ):
            self.lasts[-1], self.ends[-1] = last, self.sent
            return
        if len(self.lasts) >= self.flow.max_records():
            del self.lasts[0], self.ends[0], self.ats[1]
        self.start = self.sent - size
        self.lasts.append(last)
        self.ends.append(self.sent)
        self.ats.append(now)

    def ack(self, seq: int) -> None:
        k = sum(1 for last in self.lasts if last <= seq)
        if k:
            self.inflight = self.sent - self.ends[k - 1]
        del self.lasts[:k], self.ends[:k], self.ats[:k]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["frame", "ack"]),
            st.integers(1, 3 * KIB),  # a frame's size
            st.sampled_from([0.0, 0.01, 0.05, COALESCE_SPAN, 1.0]),  # time before it
            st.integers(0, 50),  # how far back from the last frame an ack reaches
        ),
        max_size=300,
    ),
    st.sampled_from([64 * KIB, MIB]),
)
def test_records_are_those_kept_frame_by_frame(
    steps: list[tuple[str, int, float, int]], window: int
) -> None:
    """The records (:meth:`StreamFlow.records`), the bytes in flight and what acks
    free are those of writing each frame into the newest record as it goes."""
    clock = Clock()
    flow = StreamFlow(0, window=window, frame_cap=256 * KIB, clock=clock)
    ref = _EagerRecords(flow)
    for what, size, dt, back in steps:
        clock.t += dt
        if what == "frame":
            flow.sent_frame(flow.sent + 1, size, False)
            ref.sent_frame(flow.sent, size, clock.t)
        else:
            seq = max(0, flow.sent - back)
            assert flow.ack(seq)
            ref.ack(seq)
        assert flow.inflight_bytes == ref.inflight
        lasts, ends, ats = flow.records()
        assert (list(lasts), list(ends), list(ats)) == (ref.lasts, ref.ends, ref.ats)
        # the newest record's time, kept in a slot for the per-frame check
        assert not ats or flow.record_at == ats[-1]
    assert flow.ack(flow.sent) and flow.inflight_bytes == 0


@given(
    st.integers(1, 4 * MIB),  # window
    st.integers(1, 4 * MIB),  # the window in force (never below min(MIN_WINDOW, window))
    st.integers(0, 8 * MIB),  # bytes in flight
    st.integers(1, 256 * KIB),  # ramp
)
def test_the_pushed_tokens_window_check_is_budget(
    window: int, cwnd: int, inflight: int, ramp: int
) -> None:
    """``Connection._push`` tests ``cwnd <= inflight_bytes != 0`` for a full window,
    not ``budget() <= 0`` (a call and a ``min`` a token): the same answer for every
    window in force a flow can have (at least one byte) and any ramp."""
    flow = StreamFlow(0, window=window, frame_cap=256 * KIB)
    flow.cwnd, flow.inflight_bytes, flow.ramp = min(cwnd, window), inflight, ramp
    assert (flow.cwnd <= flow.inflight_bytes != 0) == (flow.budget() <= 0)
