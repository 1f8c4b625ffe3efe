"""``error unavailable`` about one stream (its log unreachable on the server): the
client session puts it back to DETACHED and resumes it after a backoff whose floor is
the server's ``retry_after_ms``, within its policy; past it, ``LogUnavailable``."""

from __future__ import annotations

import random

from unbroken.errors import LogUnavailable, RequestRefused, StoreUnavailable
from unbroken.protocol import BackoffPolicy, ClientSession
from unbroken.protocol.client_session import (
    FailStream,
    RetryResume,
    RetryStart,
    StreamEvents,
    StreamResumed,
    StreamState,
)
from unbroken.protocol.events import Kind, chunk
from unbroken.protocol.frames import Error, Resume, Resumed, Start, Started, Welcome, encode

from .strategies import EPOCH, encode_frames

S1 = "s" * 22
S2 = "t" * 22
WELCOME = encode(Welcome(session="sess", heartbeat_ms=15000, epoch=EPOCH))
TOKENS = [chunk(i, Kind.TEXT, "text", f"tok{i}") for i in range(1, 6)]


def session(policy: BackoffPolicy | None = None) -> ClientSession:
    client = ClientSession(outage_policy=policy, rng=random.Random(7))
    client.connect()
    client.receive(WELCOME)
    for req, stream in (("r1", S1), ("r2", S2)):
        client.start(req, "agent", None)
        client.receive(encode(Started(req=req, stream=stream, epoch=EPOCH)))
    client.receive(encode_frames([TOKENS[:2]], stream=S1)[0])
    return client


def unavailable(ms: int | None = 1000) -> Error:
    return Error(code="unavailable", message="its log is unreachable", stream=S1, retry_after_ms=ms)


def test_a_stream_whose_log_is_unreachable_is_resumed_after_the_servers_floor() -> None:
    client = session()
    action = client.server_error(unavailable(1500), now=10.0)
    assert action == RetryResume("r1", 11.5)  # attempt 1: no jitter, the floor
    assert client.by_stream[S1].state is StreamState.DETACHED
    assert client.by_stream[S2].state is StreamState.ATTACHED  # the other goes on
    frame = client.resend_resume("r1")
    assert isinstance(frame, Resume) and frame.stream == S1 and frame.after == 2
    assert client.resend_resume("r1") is None  # already resuming
    out = client.receive(encode(Resumed(stream=S1, from_=2, head=5, status="running")))
    assert isinstance(out, StreamResumed)
    rest = encode_frames([TOKENS[:2], TOKENS[2:]], stream=S1)[1]
    assert isinstance(client.receive(rest), StreamEvents)
    assert client.by_stream[S1].outage is None


def test_no_floor_means_a_second_and_the_backoff_grows_above_it() -> None:
    client = session(BackoffPolicy(base=2.0, cap=8.0, max_attempts=None, deadline=None))
    first = client.server_error(unavailable(None), now=0.0)
    assert first == RetryResume("r1", 1.0)
    client.resend_resume("r1")
    ats = []
    for k in range(2, 6):
        a = client.server_error(unavailable(), now=float(k * 10))
        assert isinstance(a, RetryResume) and a.at - k * 10 >= 1.0
        ats.append(a.at - k * 10)
        client.resend_resume("r1")
    assert max(ats) > 1.0  # full jitter up to 2, 4, 8, 8 s: not all at the floor


def test_past_the_policy_the_stream_fails_with_log_unavailable() -> None:
    client = session(BackoffPolicy(base=0.1, cap=1.0, max_attempts=2, deadline=None))
    assert isinstance(client.server_error(unavailable(), 0.0), RetryResume)
    client.resend_resume("r1")
    assert isinstance(client.server_error(unavailable(), 1.0), RetryResume)
    client.resend_resume("r1")
    action = client.server_error(unavailable(), 2.5)
    assert isinstance(action, FailStream) and action.req == "r1"
    err = action.error
    assert isinstance(err, LogUnavailable)
    assert isinstance(err, RequestRefused) and isinstance(err, StoreUnavailable)
    assert err.code == "unavailable" and err.stream == S1 and err.attempts == 2
    assert err.elapsed == 2.5 and "unreachable" in str(err)
    assert "r1" not in client.by_req and client.by_stream[S2].state is StreamState.ATTACHED


def test_the_deadline_counts_from_the_first_answer() -> None:
    client = session(BackoffPolicy(max_attempts=None, deadline=5.0))
    assert isinstance(client.server_error(unavailable(), 100.0), RetryResume)
    client.resend_resume("r1")
    assert isinstance(client.server_error(unavailable(4000), 104.5), FailStream)


def test_events_give_a_later_outage_a_new_budget() -> None:
    client = session(BackoffPolicy(base=0.1, cap=1.0, max_attempts=1, deadline=None))
    assert isinstance(client.server_error(unavailable(), 0.0), RetryResume)
    client.resend_resume("r1")
    client.receive(encode(Resumed(stream=S1, from_=2, head=5, status="running")))
    assert client.by_stream[S1].outage is not None  # resumed, but nothing read yet
    wires = encode_frames([TOKENS[:2], TOKENS[2:3]], stream=S1)
    assert isinstance(client.receive(wires[1]), StreamEvents)
    assert client.by_stream[S1].outage is None
    assert isinstance(client.server_error(unavailable(), 50.0), RetryResume)


def test_a_stream_detached_by_a_drop_meanwhile_is_resumed_by_the_next_connection() -> None:
    client = session()
    assert isinstance(client.server_error(unavailable(), 0.0), RetryResume)
    client.connection_lost()
    assert client.resend_resume("r1") is None  # not connected: the next hello resumes it
    client.connect()
    assert [f.stream for f in client.resumes() if isinstance(f, Resume)] == [S1, S2]


def test_unavailable_about_an_unknown_stream_changes_nothing() -> None:
    client = session()
    other = Error(code="unavailable", message="x", stream="u" * 22, retry_after_ms=1000)
    assert client.server_error(other, 0.0) is None


def test_a_start_whose_log_is_unreachable_is_sent_again_then_fails_past_the_policy() -> None:
    """``error unavailable`` about a start (its ``req``, no stream yet): the same start
    is sent again after the server's floor, within the outage policy; while it waits
    to be sent nothing is due from the server (no silence watch); past the policy it
    fails with ``LogUnavailable`` naming the req."""
    client = ClientSession(
        outage_policy=BackoffPolicy(base=0.1, cap=1.0, max_attempts=2, deadline=None),
        rng=random.Random(7),
    )
    client.connect()
    client.receive(WELCOME)
    client.start("r9", "agent", None)
    assert client.expecting_frames()
    told = Error(
        code="unavailable", message="its log is unreachable", req="r9", retry_after_ms=1000
    )
    first = client.server_error(told, now=0.0)
    assert isinstance(first, RetryStart) and first.at == 1.0
    assert not client.expecting_frames()  # answered: nothing due until it is sent again
    again = client.resend_start("r9")
    assert again is not None and again.req == "r9" and client.expecting_frames()
    assert isinstance(client.server_error(told, now=2.0), RetryStart)
    client.resend_start("r9")
    action = client.server_error(told, now=4.0)
    assert isinstance(action, FailStream)
    err = action.error
    assert isinstance(err, LogUnavailable) and err.stream == "" and err.req == "r9"
    assert err.attempts == 2 and "start r9" in str(err) and "r9" not in client.by_req


def test_a_start_sent_again_at_welcome_is_not_sent_again_by_the_earlier_retry() -> None:
    """A start answered ``unavailable {req}``, then the connection drops: the next
    welcome sends it again; the retry asked for by the earlier answer, due later,
    sends nothing (two starts of one req would both be answered ``started``)."""
    client = ClientSession(rng=random.Random(7))
    client.connect()
    client.receive(WELCOME)
    client.start("r9", "agent", None)
    told = Error(code="unavailable", message="slow", req="r9", retry_after_ms=1000)
    assert isinstance(client.server_error(told, now=0.0), RetryStart)
    client.connection_lost()
    client.connect()
    client.receive(WELCOME)
    assert [f.req for f in client.after_welcome() if isinstance(f, Start)] == ["r9"]
    assert client.expecting_frames()
    assert client.resend_start("r9") is None  # the timer of the connection before
    client.receive(encode(Started(req="r9", stream=S1, epoch=EPOCH)))
    assert client.by_req["r9"].state is StreamState.ATTACHED


def test_a_stale_error_about_the_req_of_a_started_stream_leaves_it_be() -> None:
    """``unavailable`` or a load refusal about the ``req`` of a stream already
    started (the answer to a duplicate start) changes nothing."""
    client = session()
    for code in ("unavailable", "overloaded", "rate_limited", "shutting_down"):
        stale = Error(code=code, message="late", req="r1", retry_after_ms=10)
        assert client.server_error(stale, now=0.0) is None
    assert client.by_req["r1"].state is StreamState.ATTACHED
