"""StateVerifier: each kind of delivery fault gets the right structured verdict."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import pytest

from unbroken.chaos import (
    GeneratedAnswer,
    LogLimits,
    Problem,
    StateVerifier,
    StreamingResponseSimulator,
)
from unbroken.protocol.digest import chain
from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start

ANSWER = StreamingResponseSimulator(seed=2).multipart_answer(
    [{"type": "text", "size": 400, "chunk_size": 50}, {"type": "table", "rows": 3}]
)


def _received() -> list[Event]:
    return ANSWER.expected_events()


def _altered(event: Event, body: str) -> Event:
    return Event(seq=event.seq, kind=event.kind, part=event.part, body=body)


def test_an_exact_delivery_is_ok() -> None:
    verdict = StateVerifier().verify_answer(ANSWER, _received())
    assert verdict.ok and bool(verdict)
    assert verdict.problem is None and verdict.first_bad_seq is None
    assert verdict.expected == verdict.received == len(ANSWER) + 1


def test_a_dropped_event_is_flagged_dropped_at_its_seq() -> None:
    events = _received()
    del events[4]  # seq 5
    verdict = StateVerifier().verify_answer(ANSWER, events)
    assert not verdict
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DROPPED, 5)
    assert verdict.count(Problem.DROPPED) == 1 and verdict.count(Problem.REORDERED) == 0
    assert "dropped at seq 5" in verdict.detail


def test_a_duplicated_event_is_flagged_duplicated() -> None:
    events = _received()
    events.insert(6, events[5])  # seq 6 twice
    verdict = StateVerifier().verify_answer(ANSWER, events)
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DUPLICATED, 6)
    assert verdict.count(Problem.DUPLICATED) == 1 and verdict.received == len(events)
    tolerant = StateVerifier().verify_answer(ANSWER, events, allow_duplicates=True)
    assert tolerant.ok and tolerant.count(Problem.DUPLICATED) == 1


def test_a_reordered_event_is_flagged_reordered_not_dropped() -> None:
    events = _received()
    events[3], events[4] = events[4], events[3]  # seq 5 arrives before seq 4
    verdict = StateVerifier().verify_answer(ANSWER, events)
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.REORDERED, 4)
    assert verdict.count(Problem.DROPPED) == 0 and verdict.count(Problem.REORDERED) == 1


def test_an_altered_event_is_flagged_altered_with_what_changed() -> None:
    events = _received()
    events[2] = _altered(events[2], "tampered")
    verdict = StateVerifier().verify_answer(ANSWER, events)
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.ALTERED, 3)
    assert "body" in verdict.findings[0].detail


def test_a_missing_end_is_its_own_problem_and_a_missing_tail_is_dropped() -> None:
    events = _received()
    verdict = StateVerifier().verify_answer(ANSWER, events[:-1])
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.MISSING_END, len(events))
    verdict = StateVerifier().verify_answer(ANSWER, events[:-4])
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DROPPED, len(events) - 3)
    assert verdict.count(Problem.DROPPED) == 4
    wrong_status = StateVerifier().verify_answer(ANSWER, events, status="failed")
    assert wrong_status.problem is Problem.ALTERED


def test_end_digest_is_checked_against_the_expected_chain() -> None:
    events = _received()
    good = chain("s1", "e1", events)[-1]
    verifier = StateVerifier()
    assert verifier.verify_answer(ANSWER, events, stream_id="s1", epoch="e1", end_digest=good)
    bad = verifier.verify_answer(ANSWER, events, stream_id="s2", epoch="e1", end_digest=good)
    assert (bad.problem, bad.first_bad_seq) == (Problem.DIGEST_MISMATCH, len(events))


def test_verdict_serialises_for_reports() -> None:
    events = _received()
    del events[1:3]
    data = StateVerifier().verify_answer(ANSWER, events).to_dict()
    assert data["ok"] is False and data["problem"] == "dropped" and data["first_bad_seq"] == 2
    assert data["counts"] == {"dropped": 2}
    assert data["findings"] == [{"problem": "dropped", "seq": 2, "detail": "seq 2..3 missing"}]


# -- the seed's checks over recorded events
async def test_message_sequencing() -> None:
    verifier = StateVerifier(received=_received())
    n = len(ANSWER) + 1
    assert await verifier.verify_message_sequencing(list(range(1, n + 1))) is True
    assert verifier.last_verdict is not None and verifier.last_verdict.ok
    assert await verifier.verify_message_sequencing(list(range(1, n + 2))) is False
    verdict = verifier.last_verdict
    assert verdict is not None
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DROPPED, n + 1)
    shuffled = StateVerifier()
    shuffled.record_many([e for e in _received() if e.seq != 2])
    shuffled.record(_received()[1])
    verdict = await shuffled.message_sequencing_verdict(list(range(1, n + 1)))
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.REORDERED, 2)
    assert shuffled.last_verdict is verdict


async def test_data_completeness_by_hash_and_diagnosis() -> None:
    expected = ANSWER.content_hash()
    assert await StateVerifier(received=_received()).verify_data_completeness(expected) is True
    events = _received()
    events[5] = _altered(events[5], "x")
    altered = StateVerifier(received=events)
    assert await altered.verify_data_completeness(expected) is False
    assert altered.last_verdict is not None
    assert altered.last_verdict.problem is Problem.ALTERED
    events = _received()
    events.insert(3, events[2])
    verdict = await StateVerifier(received=events).data_completeness_verdict(expected)
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DUPLICATED, 3)


def test_the_seeds_checks_keep_the_seeds_signatures() -> None:
    hints = {
        name: inspect.signature(getattr(StateVerifier, name), eval_str=True)
        for name in (
            "verify_buffer_integrity",
            "verify_message_sequencing",
            "verify_data_completeness",
        )
    }
    assert list(hints["verify_buffer_integrity"].parameters) == ["self", "connection_id"]
    assert hints["verify_buffer_integrity"].parameters["connection_id"].annotation is str
    assert (
        hints["verify_message_sequencing"].parameters["expected_sequence"].annotation == (list[int])
    )
    assert hints["verify_data_completeness"].parameters["expected_hash"].annotation is str
    for name, sig in hints.items():
        assert sig.return_annotation is bool, name
        assert inspect.iscoroutinefunction(getattr(StateVerifier, name)), name


# -- the log
class DictLog:
    """A stand-in store: epoch and events (and, optionally, digests) per stream."""

    def __init__(self, epoch: str, events: Sequence[Event], digests: list[bytes] | None = None):
        self.epoch = epoch
        self.events = list(events)
        self.digests = digests

    async def read_all(self, stream: str) -> tuple[str, Sequence[Event]]:
        return self.epoch, self.events


class DigestDictLog(DictLog):
    async def read_digests(self, stream: str) -> Sequence[bytes]:
        assert self.digests is not None
        return self.digests


def _log_answer() -> GeneratedAnswer:
    return StreamingResponseSimulator(seed=3).text_answer(300, 40)


async def test_buffer_integrity_of_a_good_log_with_digests() -> None:
    events = _log_answer().expected_events()
    log = DigestDictLog("ep", events, chain("st", "ep", events))
    verdict = await StateVerifier(log).buffer_integrity_verdict("st", require_end=True)
    assert verdict.ok, verdict.detail
    running = DictLog("ep", events[:-1])  # a running stream has no end yet
    assert await StateVerifier(running).verify_buffer_integrity("st") is True
    verdict = await StateVerifier(running).buffer_integrity_verdict("st", require_end=True)
    assert verdict.problem is Problem.MISSING_END


async def test_buffer_integrity_flags_gaps_duplicates_and_bad_digests() -> None:
    events = _log_answer().expected_events()
    gap = DictLog("ep", events[:3] + events[5:])
    gapped = StateVerifier(gap)
    assert await gapped.verify_buffer_integrity("st") is False
    verdict = gapped.last_verdict
    assert verdict is not None
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DROPPED, 4)
    assert verdict.count(Problem.DROPPED) == 2
    dup = DictLog("ep", events[:4] + events[3:])
    verdict = await StateVerifier(dup).buffer_integrity_verdict("st")
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DUPLICATED, 4)
    digests = chain("st", "ep", events)
    digests[6] = bytes(16)
    tampered = DigestDictLog("ep", events, digests)
    verdict = await StateVerifier(tampered).buffer_integrity_verdict("st")
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.DIGEST_MISMATCH, 7)
    other_epoch = DigestDictLog("other", events, chain("st", "ep", events))
    verdict = await StateVerifier(other_epoch).buffer_integrity_verdict("st")
    assert verdict.problem is Problem.DIGEST_MISMATCH and verdict.first_bad_seq == 1


async def test_buffer_integrity_checks_part_structure_and_limits() -> None:
    malformed = [
        part_start(1, "a", "text"),
        chunk(2, Kind.JSON, "a", "{}"),  # a json chunk in a text part
        chunk(3, Kind.TEXT, "b", "x"),  # part b never started
        part_end(4, "a"),
        end(5, "completed"),
    ]
    verdict = await StateVerifier(DictLog("e", malformed)).buffer_integrity_verdict("s")
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.MALFORMED, 2)
    assert verdict.count(Problem.MALFORMED) == 2
    big = [part_start(1, "a", "text"), chunk(2, Kind.TEXT, "a", "y" * 2000), part_end(3, "a")]
    limits = LogLimits(max_chunk=1000, max_events=2)
    verdict = await StateVerifier(DictLog("e", big), limits=limits).buffer_integrity_verdict("s")
    assert (verdict.problem, verdict.first_bad_seq) == (Problem.OVER_LIMIT, 2)
    assert verdict.count(Problem.OVER_LIMIT) == 2


async def test_buffer_integrity_needs_a_log() -> None:
    from unbroken.errors import ConfigError

    with pytest.raises(ConfigError):
        await StateVerifier().buffer_integrity_verdict("s")


async def test_buffer_integrity_of_a_live_log_that_grew_between_its_two_reads() -> None:
    # a live Redis stream: the events are read, then the digests, and the agent
    # appended in between: the verifier judges what both reads saw
    events = _log_answer().expected_events()
    digests = chain("st", "ep", events)
    grew = DigestDictLog("ep", events[:-6], digests)
    assert await StateVerifier(grew).verify_buffer_integrity("st") is True
    # once the stream ended, every event must have its digest, no more, no fewer
    ended = DigestDictLog("ep", events, [*digests, digests[-1]])
    verdict = await StateVerifier(ended).buffer_integrity_verdict("st")
    assert verdict.problem is Problem.DIGEST_MISMATCH
    shrank = DigestDictLog("ep", events[:-6], digests[:-8])
    assert await StateVerifier(shrank).verify_buffer_integrity("st") is False
