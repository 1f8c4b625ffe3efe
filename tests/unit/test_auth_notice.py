"""When the server sends ``auth_expiring`` (docs/reference/protocol.md §18): pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unbroken.server.connection import notice_delay


def test_the_notice_leaves_20_percent_or_30_seconds() -> None:
    assert notice_delay(2.0) == 1.6
    assert notice_delay(3600.0) == 3570.0
    assert notice_delay(150.0) == 120.0  # where the two marks meet
    assert notice_delay(0.0) == 0.0
    assert notice_delay(-5.0) == 0.0


@given(st.floats(min_value=0.0, max_value=10**7, allow_nan=False))
def test_the_notice_comes_before_the_expiry_and_never_at_once(left: float) -> None:
    delay = notice_delay(left)
    assert delay <= left
    assert delay >= 0.8 * left  # a refreshed token is not asked to refresh at once
    assert left - delay <= 30.0 + 1e-9  # at most 30 s before the expiry
