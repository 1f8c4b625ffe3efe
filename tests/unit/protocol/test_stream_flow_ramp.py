"""The first ``events`` frame of an attachment is small and each next one may be
twice the last, up to ``frame_cap`` (a reconnecting client shows the first missing
events after verifying 4 KiB, not a 256 KiB catch-up frame)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unbroken.protocol.frames import Hello, encode
from unbroken.protocol.server_session import FIRST_FRAME, ServerSession, StreamFlow

S1 = "Xq3v9Lr0bZ2kT8mWc4HnJg"
KIB = 1024


def test_a_new_attachment_ramps_from_4_kib_to_the_frame_cap() -> None:
    server = ServerSession(window=1 << 30, frame_cap=256 * KIB)
    server.receive(encode(Hello()))
    flow = server.attach(S1, 10)
    sizes = []
    seq = 10
    for _ in range(9):
        size = flow.budget()
        sizes.append(size)
        seq += 1
        flow.sent_frame(seq, size, end=False)
    assert FIRST_FRAME == 4 * KIB
    assert sizes == [4 * KIB, 8 * KIB, 16 * KIB, 32 * KIB, 64 * KIB, 128 * KIB] + [256 * KIB] * 3
    # attached again (a resume on the same connection): small again
    assert server.attach(S1, seq).budget() == 4 * KIB


def test_the_ramp_never_exceeds_a_small_frame_cap_or_the_window() -> None:
    assert StreamFlow(0, window=1000, frame_cap=400).budget() == 400
    flow = StreamFlow(0, window=20 * KIB, frame_cap=256 * KIB)
    flow.sent_frame(1, 16 * KIB, end=False)
    assert flow.budget() == 4 * KIB  # the window, not the ramp's 32 KiB


@given(
    first=st.integers(1, 64 * KIB),
    cap=st.integers(1, 512 * KIB),
    window=st.integers(1, 2 << 20),
    sends=st.lists(st.integers(1, 300 * KIB), max_size=30),
)
def test_the_budget_is_bounded_by_ramp_cap_and_window_and_grows_monotonically(
    first: int, cap: int, window: int, sends: list[int]
) -> None:
    flow = StreamFlow(0, window=window, frame_cap=cap, first_frame=first)
    ramp = max(1, min(first, cap))
    for n, size in enumerate(sends, 1):
        budget = flow.budget()
        assert budget <= ramp <= cap
        if flow.inflight_bytes == 0:
            assert budget == ramp  # one frame always goes out when nothing is in flight
        else:
            assert budget == min(ramp, window - flow.inflight_bytes)
        flow.sent_frame(n, size, end=False)
        if n % 3 == 0:
            assert flow.ack(n)  # the client acks now and then
        new = flow.ramp
        assert new == min(cap, ramp * 2)
        ramp = new
