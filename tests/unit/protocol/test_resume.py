"""The resume contract: one request, exactly one answer, checks in the documented order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.protocol import StreamInfo, decide_resume
from unbroken.protocol.digest import chain, seed
from unbroken.protocol.events import Kind, chunk
from unbroken.protocol.frames import Gone, Resume, Resumed

STREAM, EPOCH, OWNER = "s-1", "epoch-1", "alice"
EVENTS = [chunk(i, Kind.TEXT, "t", f"e{i}") for i in range(1, 11)]
DIGESTS = [seed(STREAM, EPOCH), *chain(STREAM, EPOCH, EVENTS)]  # DIGESTS[n] = h after n
GOOD = StreamInfo(stream=STREAM, owner=OWNER, status="running", head=10)


def held(first: int = 1) -> dict[int, bytes]:
    """Digests the log still holds when events before ``first`` were trimmed."""
    return {n: h for n, h in enumerate(DIGESTS) if n >= first - 1}


def decide(
    after: int = 4,
    h: str | None = "good",
    epoch: str = EPOCH,
    principal: str = OWNER,
    info: StreamInfo | None = GOOD,
    digests: dict[int, bytes] | None = None,
    anonymous: bool = False,
) -> Resumed | Gone:
    digests = held() if digests is None else digests
    if h == "good":
        h = DIGESTS[after].hex() if after < len(DIGESTS) else "00" * 16
    elif h == "bad":
        h = "ff" * 16
    request = Resume(stream=STREAM, after=after, epoch=epoch, h=h)
    return decide_resume(
        request,
        principal=principal,
        store_epoch=EPOCH,
        info=info,
        digest_at=digests.get,
        anonymous=anonymous,
    )


def reason(answer: Resumed | Gone) -> str:
    return answer.reason if isinstance(answer, Gone) else "resumed"


def test_a_matching_cursor_is_resumed_from_its_seq() -> None:
    assert decide(after=4) == Resumed(stream=STREAM, from_=4, head=10, status="running")


def test_resume_from_zero_with_the_seed_or_without_h() -> None:
    assert reason(decide(after=0)) == "resumed"
    assert reason(decide(after=0, h=None)) == "resumed"


def test_resume_at_the_head_of_a_completed_stream_is_resumed_with_its_status() -> None:
    done = StreamInfo(stream=STREAM, owner=OWNER, status="completed", head=10)
    assert decide(after=10, info=done) == Resumed(
        stream=STREAM, from_=10, head=10, status="completed"
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"epoch": "old"}, "epoch"),
        ({"info": None}, "forbidden"),
        ({"info": None, "anonymous": True}, "unknown"),
        ({"principal": "mallory"}, "forbidden"),
        ({"principal": "mallory", "anonymous": True}, "forbidden"),
        ({"info": StreamInfo(STREAM, OWNER, "completed", 10, expired=True)}, "expired"),
        ({"after": 11}, "diverged"),
        ({"after": 2, "info": StreamInfo(STREAM, OWNER, "running", 10, first=5)}, "expired"),
        ({"after": 4, "digests": {}}, "expired"),
        ({"after": 4, "h": "bad"}, "diverged"),
        ({"after": 4, "h": None}, "diverged"),
    ],
    ids=[
        "epoch-changed",
        "unknown-stream-named-forbidden",
        "unknown-stream-anonymous",
        "other-principal",
        "other-principal-anonymous",
        "tombstone",
        "beyond-head",
        "trimmed",
        "digest-no-longer-held",
        "digest-differs",
        "no-digest-after-zero",
    ],
)
def test_each_refusal_has_its_reason(kwargs: dict[str, object], expected: str) -> None:
    assert reason(decide(**kwargs)) == expected  # type: ignore[arg-type]


# Every fault at once, then remove them one by one in the documented order: the answer
# is always the reason of the first fault left.
ORDER: list[tuple[str, dict[str, object]]] = [
    ("epoch", {"epoch": "old"}),
    ("forbidden", {"principal": "mallory"}),
    ("expired", {"tombstone": True}),
    ("diverged", {"after": 12}),  # beyond the head
    ("expired", {"trimmed": True}),
    ("diverged", {"h": "bad"}),
]


def decide_with(faults: list[dict[str, object]]) -> str:
    merged: dict[str, object] = {}
    for fault in faults:
        merged.update(fault)
    tombstone = bool(merged.pop("tombstone", False))
    trimmed = bool(merged.pop("trimmed", False))
    info = StreamInfo(STREAM, OWNER, "running", 10, first=8 if trimmed else 1, expired=tombstone)
    after = merged.pop("after", 4)
    return reason(decide(after=after, info=info, **merged))  # type: ignore[arg-type]


@pytest.mark.parametrize("start", range(len(ORDER)))
def test_checks_run_in_the_documented_order(start: int) -> None:
    faults = [fault for _, fault in ORDER[start:]]
    if start == 4:  # beyond-head removed, trimmed kept: `after` must be trimmed
        faults = [{"after": 2, "trimmed": True}, {"h": "bad"}]
    assert decide_with(faults) == ORDER[start][0]


@settings(max_examples=500, deadline=None)
@given(
    after=st.integers(0, 15),
    h=st.sampled_from(["good", "bad", None]),
    epoch=st.sampled_from([EPOCH, "old"]),
    principal=st.sampled_from([OWNER, "mallory"]),
    exists=st.booleans(),
    expired=st.booleans(),
    first=st.integers(1, 11),
    anonymous=st.booleans(),
)
def test_every_request_gets_exactly_one_answer_consistent_with_the_contract(
    after: int,
    h: str | None,
    epoch: str,
    principal: str,
    exists: bool,
    expired: bool,
    first: int,
    anonymous: bool,
) -> None:
    info = StreamInfo(STREAM, OWNER, "running", 10, first=first, expired=expired)
    answer = decide(
        after=after,
        h=h,
        epoch=epoch,
        principal=principal,
        info=info if exists else None,
        digests=held(first),
        anonymous=anonymous,
    )
    assert isinstance(answer, Resumed | Gone) and answer.stream == STREAM
    if isinstance(answer, Resumed):
        # resumed only if every check passes
        assert epoch == EPOCH and exists and principal == OWNER and not expired
        assert first - 1 <= after <= 10
        assert h == "good" or (h is None and after == 0)
        assert (answer.from_, answer.head) == (after, 10)
    elif epoch != EPOCH:
        assert answer.reason == "epoch"
    elif not exists or principal != OWNER:
        assert answer.reason == ("unknown" if anonymous and not exists else "forbidden")
    else:
        assert answer.reason in ("expired", "diverged")
