"""StateVerifier: was the answer delivered exactly? The seed's checks answer ``bool``; a
:class:`Verdict` beside each says why.

Three sources of truth can be checked:

* a stream log (contiguous seqs, valid chain, well-formed parts, within limits), read through
  the tiny :class:`EventLogReader` protocol so any store can be plugged in;
* the events a client recorded, as received (possibly with duplicates, gaps, reordering),
  against a :class:`~unbroken.chaos.generators.GeneratedAnswer`
  (:meth:`StateVerifier.verify_answer`);
* the seed's checks: message sequencing and data completeness by hash.

The seed's three checks keep its signatures and return ``bool``
(:meth:`StateVerifier.verify_buffer_integrity`, :meth:`~StateVerifier.verify_message_sequencing`,
:meth:`~StateVerifier.verify_data_completeness`); each has a ``*_verdict`` twin that returns
the :class:`Verdict`, and the last verdict any check reached is kept in
:attr:`StateVerifier.last_verdict`.

A :class:`Verdict` says ``ok``, the first bad seq, what kind of problem it is (dropped,
duplicated, reordered, altered, unexpected, missing_end, digest_mismatch, malformed,
over_limit), counts, and a sentence a report can print. ``bool(verdict)`` is ``verdict.ok``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable

from ..errors import ConfigError
from ..protocol.digest import chain
from ..protocol.events import (
    CHUNK_KIND_OF_PART,
    NAME_BY_KIND,
    Event,
    Kind,
    Status,
    payload,
)
from .generators import GeneratedAnswer, content_hash

#: Findings kept in a verdict (counts are always complete).
MAX_FINDINGS: Final = 100


class Problem(StrEnum):
    """What went wrong with an event."""

    DROPPED = "dropped"
    DUPLICATED = "duplicated"
    REORDERED = "reordered"
    ALTERED = "altered"
    UNEXPECTED = "unexpected"
    MISSING_END = "missing_end"
    DIGEST_MISMATCH = "digest_mismatch"
    MALFORMED = "malformed"
    OVER_LIMIT = "over_limit"


#: When two problems are found at the same seq, the first in this order names the verdict.
_PRIORITY_ORDER: Final = (
    Problem.ALTERED,
    Problem.DIGEST_MISMATCH,
    Problem.REORDERED,
    Problem.DUPLICATED,
    Problem.DROPPED,
    Problem.MISSING_END,
    Problem.UNEXPECTED,
    Problem.MALFORMED,
    Problem.OVER_LIMIT,
)
_RANK: Final = {p: i for i, p in enumerate(_PRIORITY_ORDER)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at one seq."""

    problem: Problem
    seq: int | None
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The structured answer of every check. ``bool(verdict)`` is ``verdict.ok``."""

    ok: bool
    problem: Problem | None = None
    first_bad_seq: int | None = None
    detail: str = "ok"
    expected: int = 0
    received: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    def __bool__(self) -> bool:
        return self.ok

    def count(self, problem: Problem) -> int:
        """How many events had ``problem``."""
        return self.counts.get(problem.value, 0)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for reports."""
        return {
            "ok": self.ok,
            "problem": self.problem.value if self.problem else None,
            "first_bad_seq": self.first_bad_seq,
            "detail": self.detail,
            "expected": self.expected,
            "received": self.received,
            "counts": dict(self.counts),
            "findings": [
                {"problem": f.problem.value, "seq": f.seq, "detail": f.detail}
                for f in self.findings
            ],
        }


class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.counts: dict[str, int] = {}

    def add(self, problem: Problem, seq: int | None, detail: str, count: int = 1) -> None:
        self.counts[problem.value] = self.counts.get(problem.value, 0) + count
        if len(self.items) < MAX_FINDINGS:
            self.items.append(Finding(problem, seq, detail))

    def verdict(self, expected: int, received: int, what: str) -> Verdict:
        if not self.items and not self.counts:
            return Verdict(True, None, None, f"{what}: ok", expected, received, {}, ())
        first = min(
            self.items,
            key=lambda f: (f.seq if f.seq is not None else 1 << 62, _RANK[f.problem]),
        )
        summary = ", ".join(f"{n} {name}" for name, n in sorted(self.counts.items()))
        detail = f"{what}: {first.problem.value} at seq {first.seq}: {first.detail} ({summary})"
        return Verdict(
            False,
            first.problem,
            first.seq,
            detail,
            expected,
            received,
            dict(self.counts),
            tuple(self.items),
        )


def _describe(event: Event) -> str:
    name = NAME_BY_KIND.get(Kind(event.kind), str(event.kind))
    return f"{name}(part={event.part!r})" if event.part else name


def _difference(got: Event, want: Event) -> str:
    if got.kind != want.kind:
        return f"kind {_describe(got)} instead of {_describe(want)}"
    for name in ("part", "body", "part_kind", "mime", "schema", "status", "error", "count"):
        a, b = getattr(got, name), getattr(want, name)
        if a != b:
            if isinstance(a, str) and isinstance(b, str) and len(a) + len(b) > 80:
                return f"{name} differs ({len(a)} chars instead of {len(b)})"
            return f"{name} is {a!r} instead of {b!r}"
    return "differs"


def _compare_sequence(
    received: Sequence[int], expected: Sequence[int], findings: _Findings
) -> set[int]:
    """Classify each received seq against the expected order; returns the seqs seen."""
    position = {s: i for i, s in enumerate(expected)}
    seen: set[int] = set()
    furthest = -1
    for s in received:
        if s in seen:
            findings.add(Problem.DUPLICATED, s, "delivered again")
            continue
        seen.add(s)
        p = position.get(s)
        if p is None:
            findings.add(Problem.UNEXPECTED, s, "not in the expected sequence")
            continue
        if p < furthest:
            findings.add(Problem.REORDERED, s, f"arrived after seq {expected[furthest]}")
        furthest = max(furthest, p)
    return seen


class EventLogReader(Protocol):
    """What :meth:`StateVerifier.buffer_integrity_verdict` needs from a store."""

    async def read_all(self, stream: str) -> tuple[str, Sequence[Event]]:
        """The stream's epoch and every event it holds, in log order."""
        ...


@runtime_checkable
class DigestLogReader(Protocol):
    """Optional: a store that also keeps the digest after each event."""

    async def read_digests(self, stream: str) -> Sequence[bytes]:
        """The chain digest after each event, in log order."""
        ...


@dataclass(frozen=True)
class LogLimits:
    """Limits a stream log must respect (``None``: no limit)."""

    max_events: int | None = None
    max_bytes: int | None = None
    """Total canonical payload bytes."""
    max_chunk: int | None = 1024 * 1024
    """UTF-8 bytes of one chunk's body (the wire's ``max_chunk``)."""


class StateVerifier:
    """Checks a stream log and a client's recorded events (the seed's ``StateVerifier``).

    ``log``: where :meth:`verify_buffer_integrity` reads streams from. Feed the events a client
    received with :meth:`record` / :meth:`record_many` (or pass ``received``) for the seed's
    sequencing and completeness checks.

    The seed's methods answer ``bool``; their ``*_verdict`` twins answer a :class:`Verdict`
    (what went wrong, where), and :attr:`last_verdict` holds the last one either reached.
    """

    def __init__(
        self,
        log: EventLogReader | None = None,
        *,
        limits: LogLimits | None = None,
        received: Iterable[Event] = (),
    ) -> None:
        self.log = log
        self.limits = limits or LogLimits()
        self.received: list[Event] = list(received)
        self.last_verdict: Verdict | None = None
        """The verdict of the last check run (``None`` before any)."""

    def record(self, event: Event) -> None:
        """Record one event as the client received it."""
        self.received.append(event)

    def record_many(self, events: Iterable[Event]) -> None:
        """Record events as the client received them."""
        self.received.extend(events)

    # ------------------------------------------------------------------ the log
    def _kept(self, verdict: Verdict) -> Verdict:
        self.last_verdict = verdict
        return verdict

    async def verify_buffer_integrity(self, connection_id: str) -> bool:
        """The seed's check: is the buffer of ``connection_id`` intact? In unbroken a
        connection is only a cursor on a stream log, so the buffer is the stream's log and
        ``connection_id`` is the stream's id. See :meth:`buffer_integrity_verdict` (the
        verdict is also kept in :attr:`last_verdict`)."""
        return (await self.buffer_integrity_verdict(connection_id)).ok

    async def buffer_integrity_verdict(
        self, stream_id: str, *, require_end: bool = False
    ) -> Verdict:
        """Check a stream in the log: seqs 1..N contiguous, chain valid (against stored digests
        when the log keeps them), parts well formed, within :attr:`limits`. ``require_end``:
        a stream without its ``end`` event fails (``missing_end``)."""
        if self.log is None:
            raise ConfigError("verify_buffer_integrity needs a log: StateVerifier(log=...)")
        epoch, events = await self.log.read_all(stream_id)
        findings = _Findings()
        expected_next = 1
        for event in events:
            if event.seq == expected_next:
                expected_next += 1
            elif event.seq < expected_next:
                problem = (
                    Problem.DUPLICATED if event.seq == expected_next - 1 else Problem.REORDERED
                )
                findings.add(problem, event.seq, f"after seq {expected_next - 1} in the log")
            else:
                missing = event.seq - expected_next
                findings.add(
                    Problem.DROPPED,
                    expected_next,
                    f"gap of {missing} before seq {event.seq}",
                    missing,
                )
                expected_next = event.seq + 1
        self._check_structure(events, findings, require_end)
        self._check_limits(events, findings)
        if isinstance(self.log, DigestLogReader) and not findings.items:
            stored = await self.log.read_digests(stream_id)
            computed = chain(stream_id, epoch, events)
            ended = bool(events) and events[-1].kind == Kind.END
            if len(stored) > len(computed) and not ended:
                # a live stream grew between the two reads: judge what both saw
                stored = stored[: len(computed)]
            if len(stored) != len(computed):
                findings.add(
                    Problem.DIGEST_MISMATCH,
                    None,
                    f"{len(stored)} stored digests for {len(computed)} events",
                )
            for event, have, want in zip(events, stored, computed, strict=False):
                if have != want:
                    findings.add(
                        Problem.DIGEST_MISMATCH, event.seq, "stored digest is not the chain's"
                    )
                    break
        return self._kept(findings.verdict(len(events), len(events), f"stream {stream_id}"))

    def _check_structure(
        self, events: Sequence[Event], findings: _Findings, require_end: bool
    ) -> None:
        open_parts: dict[str, str] = {}
        closed: set[str] = set()
        for i, event in enumerate(events):
            kind = Kind(event.kind)
            if kind is Kind.PART_START:
                if event.part in open_parts or event.part in closed:
                    findings.add(Problem.MALFORMED, event.seq, f"part {event.part!r} started twice")
                open_parts[event.part] = event.part_kind
            elif kind in (Kind.TEXT, Kind.JSON, Kind.DATA):
                part_kind = open_parts.get(event.part)
                if part_kind is None:
                    findings.add(
                        Problem.MALFORMED,
                        event.seq,
                        f"chunk of part {event.part!r} that is not open",
                    )
                elif CHUNK_KIND_OF_PART.get(part_kind) is not kind:
                    findings.add(
                        Problem.MALFORMED, event.seq, f"{_describe(event)} in a {part_kind} part"
                    )
            elif kind is Kind.PART_END:
                if open_parts.pop(event.part, None) is None:
                    findings.add(
                        Problem.MALFORMED, event.seq, f"part {event.part!r} ended but not open"
                    )
                closed.add(event.part)
            elif kind is Kind.END:
                if i != len(events) - 1:
                    findings.add(Problem.MALFORMED, event.seq, "events after end")
                if event.count != event.seq:
                    findings.add(
                        Problem.MALFORMED, event.seq, f"end count {event.count} is not its seq"
                    )
        has_end = bool(events) and events[-1].kind == Kind.END
        if require_end and not has_end:
            findings.add(Problem.MISSING_END, len(events) + 1, "the stream has no end event")
        if has_end and events[-1].status == "completed" and open_parts:
            findings.add(
                Problem.MALFORMED, events[-1].seq, f"completed with open parts {sorted(open_parts)}"
            )

    def _check_limits(self, events: Sequence[Event], findings: _Findings) -> None:
        limits = self.limits
        if limits.max_events is not None and len(events) > limits.max_events:
            findings.add(
                Problem.OVER_LIMIT,
                limits.max_events + 1,
                f"{len(events)} events > max_events {limits.max_events}",
            )
        total = 0
        for event in events:
            if limits.max_chunk is not None and event.kind <= Kind.DATA:
                size = len(event.body.encode())
                if size > limits.max_chunk:
                    findings.add(
                        Problem.OVER_LIMIT,
                        event.seq,
                        f"chunk of {size} B > max_chunk {limits.max_chunk}",
                    )
            total += len(payload(event))
            if limits.max_bytes is not None and total > limits.max_bytes:
                findings.add(
                    Problem.OVER_LIMIT,
                    event.seq,
                    f"{total} payload bytes > max_bytes {limits.max_bytes}",
                )
                break

    # ------------------------------------------------------------------ the seed's checks
    async def verify_message_sequencing(self, expected_sequence: list[int]) -> bool:
        """The seed's check: were the recorded events' seqs exactly ``expected_sequence``, in
        order, once each? See :meth:`message_sequencing_verdict`."""
        return (await self.message_sequencing_verdict(expected_sequence)).ok

    async def message_sequencing_verdict(self, expected_sequence: Sequence[int]) -> Verdict:
        """Were the recorded events' seqs exactly ``expected_sequence``, in order, once each?
        Says which seq was dropped, duplicated, reordered or unexpected first."""
        findings = _Findings()
        received = [e.seq for e in self.received]
        seen = _compare_sequence(received, expected_sequence, findings)
        for s in expected_sequence:
            if s not in seen:
                findings.add(Problem.DROPPED, s, "never delivered")
        return self._kept(findings.verdict(len(expected_sequence), len(received), "sequencing"))

    async def verify_data_completeness(self, expected_hash: str) -> bool:
        """The seed's check: does :func:`~unbroken.chaos.generators.content_hash` of the
        recorded events equal ``expected_hash``? See :meth:`data_completeness_verdict`."""
        return (await self.data_completeness_verdict(expected_hash)).ok

    async def data_completeness_verdict(self, expected_hash: str) -> Verdict:
        """Does :func:`~unbroken.chaos.generators.content_hash` of the recorded events equal
        ``expected_hash``? On a mismatch, says whether events were missing, repeated,
        reordered, or altered."""
        received = self.received
        have = content_hash(received)
        if have == expected_hash:
            return self._kept(Verdict(True, detail="completeness: ok", received=len(received)))
        findings = _Findings()
        seqs = [e.seq for e in received]
        top = max(seqs, default=0)
        seen = _compare_sequence(seqs, range(1, top + 1), findings)
        for s in range(1, top + 1):
            if s not in seen:
                findings.add(Problem.DROPPED, s, "never delivered")
        if not findings.items:
            findings.add(
                Problem.ALTERED,
                None,
                f"content hash {have[:16]}… is not "
                f"{expected_hash[:16]}… (events altered or the answer is incomplete)",
            )
        return self._kept(findings.verdict(0, len(received), "completeness"))

    # ------------------------------------------------------------------ a whole answer
    def verify_answer(
        self,
        expected: GeneratedAnswer,
        received: Sequence[Event] | None = None,
        *,
        status: Status = "completed",
        stream_id: str | None = None,
        epoch: str | None = None,
        end_digest: bytes | str | None = None,
        allow_duplicates: bool = False,
    ) -> Verdict:
        """Check a client's recorded events (default: :attr:`received`) against ``expected``.

        Every expected event (including the final ``end`` with ``status``) must arrive once,
        in order, unaltered. ``allow_duplicates``: identical re-deliveries are counted but
        not a failure. ``end_digest`` (with ``stream_id`` and ``epoch``): the digest the client
        ended with, compared with the expected chain digest. (Not one of the seed's
        checks: it answers the :class:`Verdict`, also kept in :attr:`last_verdict`.)
        """
        events = list(self.received if received is None else received)
        want = expected.expected_events(status)
        n = len(want)
        findings = _Findings()
        seen: dict[int, Event] = {}
        furthest = 0
        for got in events:
            s = got.seq
            if s in seen:
                if got != seen[s]:
                    findings.add(Problem.ALTERED, s, "a re-delivery differs from the first copy")
                elif not allow_duplicates:
                    findings.add(Problem.DUPLICATED, s, "delivered again")
                else:
                    findings.counts["duplicated"] = findings.counts.get("duplicated", 0) + 1
                continue
            seen[s] = got
            if not 1 <= s <= n:
                findings.add(Problem.UNEXPECTED, s, f"no such event (expected 1..{n})")
                continue
            if s < furthest:
                findings.add(Problem.REORDERED, s, f"arrived after seq {furthest}")
            furthest = max(furthest, s)
            if got != want[s - 1]:
                findings.add(Problem.ALTERED, s, _difference(got, want[s - 1]))
        missing = [s for s in range(1, n + 1) if s not in seen]
        if missing == [n]:
            findings.add(Problem.MISSING_END, n, f"the final end({status}) event never arrived")
        else:
            run_start = None
            for i, s in enumerate(missing):
                if run_start is None:
                    run_start = s
                if i + 1 == len(missing) or missing[i + 1] != s + 1:
                    length = s - run_start + 1
                    what = f"seq {run_start}..{s} missing" if length > 1 else "missing"
                    findings.add(Problem.DROPPED, run_start, what, length)
                    run_start = None
        if end_digest is not None:
            if stream_id is None or epoch is None:
                raise ConfigError("end_digest needs stream_id and epoch")
            have = end_digest.hex() if isinstance(end_digest, bytes) else end_digest
            want_digest = expected.expected_digest(stream_id, epoch, status)
            if have != want_digest:
                findings.add(
                    Problem.DIGEST_MISMATCH,
                    n,
                    f"end digest {have[:16]}… is not the expected {want_digest[:16]}…",
                )
        if allow_duplicates and set(findings.counts) == {"duplicated"} and not findings.items:
            return self._kept(
                Verdict(
                    True,
                    None,
                    None,
                    "answer: ok (with duplicates ignored)",
                    n,
                    len(events),
                    dict(findings.counts),
                    (),
                )
            )
        return self._kept(findings.verdict(n, len(events), "answer"))
