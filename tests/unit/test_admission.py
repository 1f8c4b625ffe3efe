"""The admission policy alone (no sockets): counts against a model, the lag filter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unbroken.server.admission import Admission, AdmissionLimits

KEYS = [("alice", ""), ("bob", ""), ("anonymous", "k1"), ("anonymous", "k2")]


@given(
    max_runs=st.integers(1, 6),
    per=st.integers(1, 4),
    ops=st.lists(st.tuples(st.booleans(), st.sampled_from(KEYS)), max_size=60),
)
def test_admission_never_admits_past_either_cap(
    max_runs: int, per: int, ops: list[tuple[bool, tuple[str, str]]]
) -> None:
    a = Admission(AdmissionLimits(max_runs, per, None, None))
    live: dict[tuple[str, str], int] = {}
    for start, key in ops:
        if start:
            refusal = a.check(key)
            total = sum(live.values())
            expected_ok = total < max_runs and live.get(key, 0) < per
            assert (refusal is None) == expected_ok
            if refusal is None:
                a.admitted(key)
                live[key] = live.get(key, 0) + 1
            else:
                assert refusal.reason == ("runs" if total >= max_runs else "principal_runs")
                assert 1.0 <= refusal.error.retry_after < 2.0
        elif live.get(key):
            a.released(key)
            live[key] -= 1
        assert a.runs == sum(live.values()) <= max_runs
        assert a.per_principal == {k: n for k, n in live.items() if n}


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=50))
def test_the_smoothed_lag_stays_within_the_samples(samples: list[float]) -> None:
    a = Admission(AdmissionLimits(None, None, 0.25, None))
    for s in samples:
        a.observe_lag(s)
        assert 0.0 <= a.lag <= max(samples)
    assert a.last_lag == samples[-1]


def test_a_shed_streams_resume_waits_for_its_retry_after() -> None:
    import time

    gate = Admission(AdmissionLimits(), rss=lambda: 0)
    assert gate.shed_wait("s1") == 0.0
    gate.remember_shed(["s1", "s2"], time.monotonic() + 5.0)
    assert 4.0 < gate.shed_wait("s1") <= 5.0 and gate.shed_wait("other") == 0.0
    gate.remember_shed(["s2"], time.monotonic() + 1.0)  # never shortened
    assert gate.shed_wait("s2") > 4.0
    gate.remember_shed(["s3"], time.monotonic() - 1.0)  # past: forgotten when asked
    assert gate.shed_wait("s3") == 0.0 and "s3" not in gate._shed_streams
    gate.remember_shed([], time.monotonic() + 9.0)  # a reader with no streams: nothing
    assert set(gate._shed_streams) == {"s1", "s2"}
