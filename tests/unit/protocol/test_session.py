"""Session state machines: what each side accepts, refuses, and sends after a reconnect."""

from __future__ import annotations

import random

import pytest

from unbroken.errors import (
    ConfigError,
    IntegrityError,
    Overloaded,
    ProtocolError,
    RequestRefused,
    StreamFailed,
)
from unbroken.protocol import ClientSession, Cursor, ServerSession, TokenBucket
from unbroken.protocol.client_session import (
    ClientState,
    ConsumedCursor,
    FailStream,
    Heartbeat,
    PongOut,
    RetryStart,
    ServerError,
    StreamEvents,
    StreamGoneOut,
    StreamResumed,
    StreamStarted,
    StreamState,
    Welcomed,
    end_error,
)
from unbroken.protocol.digest import chain, seed
from unbroken.protocol.events import Kind, chunk, end, part_start
from unbroken.protocol.frames import (
    Ack,
    Cancel,
    Error,
    Gone,
    Hb,
    Hello,
    Limits,
    Ping,
    Pong,
    Refresh,
    Resume,
    Resumed,
    Resync,
    Start,
    Started,
    Welcome,
    encode,
)
from unbroken.protocol.server_session import ServerState

from .strategies import EPOCH, encode_frames

WELCOME = encode(Welcome(session="s1", heartbeat_ms=1000, epoch=EPOCH))
S1, S2, S3 = "stream-one", "stream-two", "stream-three"


# ================================================================== server
def hello_frames() -> list[bytes]:
    return [
        encode(f)
        for f in (
            Start(req="r", agent="a"),
            Resume(stream=S1, after=0, epoch=EPOCH),
            Ack(stream=S1, seq=1),
            Cancel(stream=S1),
            Refresh(token="t"),
            Ping(n=1),
        )
    ]


@pytest.mark.parametrize("frame", hello_frames(), ids=lambda f: f[6:12].decode())
def test_server_refuses_any_frame_before_hello_with_4001(frame: bytes) -> None:
    server = ServerSession()
    with pytest.raises(ProtocolError) as exc:
        server.receive(frame)
    assert exc.value.close_code == 4001  # CloseCode.AUTH_REQUIRED
    assert server.state is ServerState.AWAIT_HELLO


def test_server_accepts_hello_then_any_other_frame() -> None:
    server = ServerSession()
    assert server.receive(encode(Hello(caps=["x"], token="tok"))) == Hello(caps=["x"], token="tok")
    assert server.state is ServerState.READY
    assert server.hello == Hello(caps=["x"], token="tok")
    assert server.receive(encode(Start(req="r", agent="a"))) == Start(req="r", agent="a")
    assert server.receive(encode(Ping(n=4))) == Ping(n=4)


def test_server_refuses_a_second_hello_with_4000() -> None:
    server = ServerSession()
    server.receive(encode(Hello()))
    with pytest.raises(ProtocolError) as exc:
        server.receive(encode(Hello()))
    assert exc.value.close_code == 4000  # CloseCode.BAD_FRAME


def test_server_never_closes_for_an_ack_of_a_stream_not_attached() -> None:
    server = ServerSession()
    server.receive(encode(Hello()))
    assert server.receive(encode(Ack(stream=S1, seq=1))) == Ack(stream=S1, seq=1)
    assert server.ack(S1, 1) is None  # answered with an error, never a close
    assert server.state is ServerState.READY


def test_server_accepts_ack_for_an_attached_stream_until_detached() -> None:
    server = ServerSession()
    server.receive(encode(Hello()))
    server.attach(S1)
    assert server.ack(S1, 3) == 3
    server.detach(S1)
    assert server.ack(S1, 4) is None


def test_a_released_stream_takes_any_number_of_late_acks_and_frees_its_slot() -> None:
    server = ServerSession(max_streams=1)
    server.receive(encode(Hello()))
    server.attach(S1)
    assert server.admit_start(0.0) > 0  # the one slot is taken
    server.release(S1)  # its end was sent
    assert server.admit_start(0.0) == 0  # released streams do not count
    # a boundary ack and the final one were both in flight when the end was sent,
    # and a duplicate after them: all legal, none re-attaches the stream
    for seq in (5, 9, 9):
        assert server.receive(encode(Ack(stream=S1, seq=seq))) == Ack(stream=S1, seq=seq)
        assert server.ack(S1, seq) == seq
    assert S1 in server.released and S1 not in server.streams


def test_released_streams_are_bounded_oldest_forgotten_first() -> None:
    server = ServerSession(max_streams=10)
    server.receive(encode(Hello()))
    n = server.max_released + 5
    ids = [f"stream-{i:06d}" for i in range(n)]
    for sid in ids:
        server.attach(sid)
        server.release(sid)
    assert len(server.released) == server.max_released == 1024
    assert server.ack(ids[0], 1) is None  # the oldest were forgotten: a foreign stream now
    assert server.ack(ids[-1], 1) == 1


def test_server_acks_are_cumulative() -> None:
    server = ServerSession()
    server.attach(S1, acked=2)
    assert server.ack(S1, 5) == 5
    assert server.ack(S1, 3) == 5  # a late, smaller ack never moves backwards
    server.attach(S1, acked=0)  # attaching again keeps what was acked
    assert server.streams[S1] == 5


def test_server_passes_decoder_errors_through_with_their_close_code() -> None:
    server = ServerSession(max_frame=16)
    with pytest.raises(ProtocolError) as exc:
        server.receive(b'{"t":"hello","token":"0123456789"}')
    assert exc.value.close_code == 1009


def test_server_refuses_everything_once_closed() -> None:
    server = ServerSession()
    server.receive(encode(Hello()))
    server.attach(S1)
    server.close()
    assert server.streams == {}
    with pytest.raises(ProtocolError):
        server.receive(encode(Ping()))


def test_server_admits_starts_at_the_configured_rate() -> None:
    server = ServerSession(start_rate=10.0, start_burst=2)
    assert server.admit_start(0.0) == 0.0
    assert server.admit_start(0.0) == 0.0
    assert server.admit_start(0.0) == pytest.approx(0.1)
    assert server.admit_start(0.1) == 0.0


def test_server_refuses_starts_beyond_max_streams() -> None:
    server = ServerSession(max_streams=1)
    server.attach(S1)
    assert server.admit_start(0.0) > 0
    server.detach(S1)
    assert server.admit_start(0.0) == 0.0


# ================================================================== token bucket
def test_token_bucket_allows_a_burst_then_asks_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.5)


def test_token_bucket_refills_with_time_but_never_beyond_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(1.0) == 0.0  # one token back after a second
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(1.0)  # only `burst` were stored


def test_token_bucket_with_cost_and_zero_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=4)
    assert bucket.take(0.0, cost=3) == 0.0
    assert bucket.take(0.0, cost=3) == pytest.approx(0.5)
    empty = TokenBucket(rate=0.0, burst=1)
    assert empty.take(0.0) == 0.0
    assert empty.take(100.0) == float("inf")


# ================================================================== client
def welcomed() -> ClientSession:
    client = ClientSession()
    client.connect()
    assert isinstance(client.receive(WELCOME), Welcomed)
    return client


def started(client: ClientSession, req: str, stream: str) -> None:
    client.start(req, "agent", {"q": req})
    out = client.receive(encode(Started(req=req, stream=stream, epoch=EPOCH)))
    assert out == StreamStarted(req, stream, EPOCH)


TOKENS = [chunk(i, Kind.TEXT, "text", f"tok{i}") for i in range(1, 6)]


def test_client_connect_sends_hello_with_caps_and_token() -> None:
    client = ClientSession(caps=("gzip",))
    assert client.connect("tok") == Hello(caps=["gzip"], token="tok")
    assert client.state is ClientState.AWAIT_WELCOME
    with pytest.raises(ProtocolError):
        client.connect()  # already connecting


def test_client_refuses_frames_when_not_connected() -> None:
    client = ClientSession()
    with pytest.raises(ProtocolError):
        client.receive(WELCOME)


def test_client_refuses_events_before_welcome() -> None:
    client = ClientSession()
    client.connect()
    with pytest.raises(ProtocolError) as exc:
        client.receive(encode_frames([TOKENS[:1]], stream=S1)[0])
    assert exc.value.close_code == 4000


def test_client_accepts_an_error_before_welcome() -> None:
    client = ClientSession()
    client.connect()
    err = Error(code="overloaded", retry_after_ms=500)
    assert client.receive(encode(err)) == ServerError(err)
    assert client.state is ClientState.AWAIT_WELCOME


def test_client_refuses_events_for_an_unknown_stream() -> None:
    client = welcomed()
    with pytest.raises(ProtocolError):
        client.receive(encode_frames([TOKENS[:1]], stream=S1)[0])


def test_client_receives_and_verifies_events_of_a_started_stream() -> None:
    client = welcomed()
    started(client, "r1", S1)
    wires = encode_frames([TOKENS[:2], TOKENS[2:]], stream=S1)
    first = client.receive(wires[0])
    assert isinstance(first, StreamEvents)
    assert first.events == TOKENS[:2]
    assert first.digest == chain(S1, EPOCH, TOKENS)[1]
    assert first.nbytes == len(wires[0])
    client.receive(wires[1])
    assert client.by_stream[S1].cursor() == Cursor(S1, 5, chain(S1, EPOCH, TOKENS)[-1].hex(), EPOCH)


def test_client_raises_integrity_error_on_an_altered_event() -> None:
    client = welcomed()
    started(client, "r1", S1)
    wire = encode_frames([TOKENS[:3]], stream=S1)[0]
    with pytest.raises(IntegrityError) as exc:
        client.receive(wire.replace(b"tok2", b"tok9"))
    assert exc.value.seq == 3  # the frame's h is checked after its last event
    assert client.by_stream[S1].seq == 0  # nothing of the bad frame was accepted


def test_client_refuses_events_after_the_end() -> None:
    client = welcomed()
    started(client, "r1", S1)
    events = [*TOKENS[:2], end(3, "completed")]
    wires = encode_frames([events], stream=S1)
    assert client.receive(wires[0]).events[-1].kind is Kind.END  # type: ignore[union-attr]
    assert client.by_stream[S1].state is StreamState.ENDED
    after_end = encode_frames([events, [chunk(4, Kind.TEXT, "text", "x")]], stream=S1)[1]
    with pytest.raises(ProtocolError):
        client.receive(after_end)


def test_client_answers_hb_and_pong() -> None:
    client = welcomed()
    assert client.receive(encode(Hb())) == Heartbeat()
    assert client.receive(encode(Pong(n=7))) == PongOut(7)


def test_client_refuses_resync_which_v1_does_not_use() -> None:
    client = welcomed()
    started(client, "r1", S1)
    with pytest.raises(ProtocolError):
        client.receive(encode(Resync(stream=S1)))


def test_client_refuses_started_for_a_request_it_never_made() -> None:
    client = welcomed()
    with pytest.raises(ProtocolError):
        client.receive(encode(Started(req="nope", stream=S1, epoch=EPOCH)))


def test_client_refuses_a_request_id_used_twice() -> None:
    client = welcomed()
    client.start("r1", "agent", None)
    with pytest.raises(ConfigError, match="'r1' already used by this client"):  # a user's mistake
        client.start("r1", "agent", None)


def test_client_start_before_welcome_is_sent_after_welcome() -> None:
    client = ClientSession()
    assert client.start("r1", "agent", {"q": 1}) is None
    client.connect()
    client.receive(WELCOME)
    assert client.after_welcome() == [Start(req="r1", agent="agent", input={"q": 1})]


def reconnect(client: ClientSession) -> list[object]:
    client.connection_lost()
    assert client.state is ClientState.IDLE
    client.connect()
    client.receive(WELCOME)
    return list(client.after_welcome())


def test_after_a_drop_the_client_resumes_open_streams_and_retries_unanswered_starts() -> None:
    client = welcomed()
    started(client, "r1", S1)
    started(client, "r2", S2)
    started(client, "r3", S3)
    client.receive(encode_frames([TOKENS[:3]], stream=S1)[0])
    client.receive(encode_frames([[end(1, "completed")]], stream=S3)[0])  # S3 finished
    assert client.start("r4", "agent", {"q": 4}) == Start(req="r4", agent="agent", input={"q": 4})

    frames = reconnect(client)

    h1 = chain(S1, EPOCH, TOKENS[:3])[-1].hex()
    assert frames == [
        Resume(stream=S1, after=3, epoch=EPOCH, h=h1),
        Resume(stream=S2, after=0, epoch=EPOCH, h=seed(S2, EPOCH).hex()),
        Start(req="r4", agent="agent", input={"q": 4}),  # same req: never a second run
    ]
    assert client.by_stream[S1].state is StreamState.RESUMING
    assert client.by_stream[S3].state is StreamState.ENDED


def test_resumes_are_pipelined_behind_hello_and_not_sent_again_after_welcome() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.receive(encode_frames([TOKENS[:3]], stream=S1)[0])
    assert client.start("r2", "agent", None) is not None  # not answered before the drop
    client.connection_lost()
    client.connect()
    h1 = chain(S1, EPOCH, TOKENS[:3])[-1].hex()
    # right behind hello, before welcome: the resume (a start waits for welcome)
    assert client.resumes() == [Resume(stream=S1, after=3, epoch=EPOCH, h=h1)]
    assert client.by_stream[S1].state is StreamState.RESUMING
    client.receive(WELCOME)
    assert client.after_welcome() == [Start(req="r2", agent="agent", input=None)]
    out = client.receive(encode(Resumed(stream=S1, from_=3, head=5)))
    assert out == StreamResumed(S1, 3, 5, "running")


def test_a_resumed_stream_continues_verifying_from_its_cursor() -> None:
    client = welcomed()
    started(client, "r1", S1)
    wires = encode_frames([TOKENS[:2], TOKENS[2:]], stream=S1)
    client.receive(wires[0])
    reconnect(client)
    with pytest.raises(ProtocolError):
        client.receive(wires[1])  # events before resumed: not attached yet
    out = client.receive(encode(Resumed(stream=S1, from_=2, head=5)))
    assert out == StreamResumed(S1, 2, 5, "running")
    assert client.receive(wires[1]).events == TOKENS[2:]  # type: ignore[union-attr]


def test_client_refuses_resumed_from_another_seq_than_its_own() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.receive(encode_frames([TOKENS[:2]], stream=S1)[0])
    reconnect(client)
    with pytest.raises(ProtocolError):
        client.receive(encode(Resumed(stream=S1, from_=1, head=5)))


def test_client_refuses_resumed_for_a_stream_it_did_not_resume() -> None:
    client = welcomed()
    started(client, "r1", S1)
    with pytest.raises(ProtocolError):
        client.receive(encode(Resumed(stream=S1, from_=0, head=5)))


def test_gone_ends_a_stream_and_it_is_not_resumed_again() -> None:
    client = welcomed()
    started(client, "r1", S1)
    reconnect(client)
    out = client.receive(encode(Gone(stream=S1, reason="epoch", message="lost")))
    assert out == StreamGoneOut(S1, "epoch", "lost")
    assert client.by_stream[S1].state is StreamState.GONE
    assert reconnect(client) == []


def test_a_saved_cursor_is_adopted_and_resumed() -> None:
    h2 = chain(S1, EPOCH, TOKENS[:2])[-1]
    cursor = Cursor(S1, 2, h2.hex(), EPOCH)
    client = welcomed()
    assert client.adopt("r9", cursor) == Resume(stream=S1, after=2, epoch=EPOCH, h=h2.hex())
    client.receive(encode(Resumed(stream=S1, from_=2, head=5)))
    tail = encode_frames([TOKENS[:2], TOKENS[2:]], stream=S1)[1]  # what comes after seq 2
    assert client.receive(tail).events == TOKENS[2:]  # type: ignore[union-attr]
    with pytest.raises(ProtocolError):
        client.adopt("r10", cursor)  # already open


def test_acks_are_due_at_the_end_or_after_enough_bytes() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.ack_every = 10**9
    client.receive(encode_frames([TOKENS[:2]], stream=S1)[0])
    assert client.take_acks() == []
    client.ack_every = 1
    assert client.take_acks() == [Ack(stream=S1, seq=2)]
    assert client.take_acks() == []  # nothing new
    client.ack_every = 10**9
    rest = [*TOKENS[2:], end(6, "completed")]
    client.receive(encode_frames([TOKENS[:2], rest], stream=S1)[1])
    assert client.take_acks() == [Ack(stream=S1, seq=6)]


def test_a_closed_client_cannot_connect() -> None:
    client = ClientSession()
    client.close()
    with pytest.raises(ProtocolError):
        client.connect()
    client.connection_lost()  # harmless
    assert client.state is ClientState.CLOSED


def test_forget_drops_a_stream() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.forget("r1")
    assert S1 not in client.by_stream and "r1" not in client.by_req


def test_events_of_parts_keep_their_kind_across_frames() -> None:
    client = welcomed()
    started(client, "r1", S1)
    events = [part_start(1, "j", "json"), chunk(2, Kind.JSON, "j", "[1")]
    more = [chunk(3, Kind.JSON, "j", "]")]
    wires = encode_frames([events, more], stream=S1)
    client.receive(wires[0])
    assert client.receive(wires[1]).events == more  # type: ignore[union-attr]


def test_a_batched_message_splits_into_frames_only_when_both_sides_agreed() -> None:
    both = ClientSession(caps=("batch",))
    both.connect()
    both.receive(encode(Welcome(session="s1", heartbeat_ms=1000, epoch=EPOCH, caps=["batch"])))
    message = b'{"t":"hb"}\n{"t":"pong","n":3}'
    assert both.batch
    assert both.frames_of(message) == [b'{"t":"hb"}', b'{"t":"pong","n":3}']
    assert both.frames_of(message.decode()) == ['{"t":"hb"}', '{"t":"pong","n":3}']
    assert [type(both.receive(f)) for f in both.frames_of(message)] == [Heartbeat, PongOut]
    # offered but refused by the server, or never offered: a message is one frame
    refused = ClientSession(caps=("batch",))
    refused.connect()
    refused.receive(WELCOME)
    never = ClientSession()
    never.connect()
    never.receive(encode(Welcome(session="s1", heartbeat_ms=1000, epoch=EPOCH, caps=["batch"])))
    for cs in (refused, never):
        assert not cs.batch and cs.frames_of(message) == [message]
        with pytest.raises(ProtocolError):
            cs.receive(message)


# ----------------------------------------------- the client's decisions (issue 23)
def test_a_start_bigger_than_the_servers_client_frame_limit_is_refused_before_sending() -> None:
    client = ClientSession()
    client.connect()
    small = Welcome(
        session="s1", heartbeat_ms=1000, epoch=EPOCH, limits=Limits(max_client_frame=200)
    )
    client.receive(encode(small))
    with pytest.raises(RequestRefused) as exc:
        client.start("r1", "agent", "x" * 300)
    assert exc.value.code == "too_big" and "at most 200" in str(exc.value)
    assert "r1" not in client.by_req  # nothing registered, nothing to retry
    assert client.start("r2", "agent", "x") == Start("r2", "agent", "x")


def test_a_start_before_welcome_is_not_measured_against_an_unknown_limit() -> None:
    client = ClientSession()
    assert client.start("r1", "agent", "x" * 10_000) is None


@pytest.mark.parametrize("code", ["overloaded", "rate_limited", "shutting_down"])
def test_a_start_refused_for_load_is_retried_after_retry_after(code: str) -> None:
    client = welcomed()
    client.start("r1", "agent", {"q": 1})
    action = client.server_error(Error(code=code, req="r1", retry_after_ms=250), now=10.0)
    # the server's wait is a floor; up to half of it more at random (a herd spreads)
    assert isinstance(action, RetryStart) and 10.25 <= action.at <= 10.25 + 0.125
    assert client.resend_start("r1") == Start("r1", "agent", {"q": 1})
    # without retry_after_ms: one second
    again = client.server_error(Error(code=code, req="r1"), now=20.0)
    assert isinstance(again, RetryStart) and 21.0 <= again.at <= 21.5


def test_a_refused_herd_spreads_out_above_the_servers_floor() -> None:
    ats = []
    for i in range(50):
        client = ClientSession(rng=random.Random(i))
        client.connect()
        client.receive(WELCOME)
        client.start("r1", "agent", None)
        action = client.server_error(Error(code="overloaded", req="r1", retry_after_ms=1000), 0.0)
        assert isinstance(action, RetryStart)
        ats.append(action.at)
    assert min(ats) >= 1.0 and max(ats) <= 1.5
    assert max(ats) - min(ats) > 0.25  # not one burst


def test_a_start_refused_for_load_too_often_fails_overloaded() -> None:
    client = ClientSession(start_attempts=3)
    client.connect()
    client.receive(WELCOME)
    client.start("r1", "agent", None)
    refused = Error(code="overloaded", message="full", req="r1", retry_after_ms=500)
    assert isinstance(client.server_error(refused, 0.0), RetryStart)
    assert isinstance(client.server_error(refused, 1.0), RetryStart)
    action = client.server_error(refused, 2.0)
    assert isinstance(action, FailStream) and action.req == "r1"
    assert isinstance(action.error, Overloaded) and action.error.retry_after == 0.5
    assert "r1" not in client.by_req and client.resend_start("r1") is None


def test_no_start_is_resent_once_answered_or_while_disconnected() -> None:
    client = welcomed()
    client.start("r1", "agent", None)
    client.start("r2", "agent", None)
    started(client, "r3", S1)
    assert client.resend_start("r3") is None  # answered
    assert client.resend_start("nobody") is None
    client.connection_lost()
    assert client.resend_start("r1") is None  # after_welcome sends it
    client.connect()
    client.receive(WELCOME)
    client.receive(encode(Started(req="r2", stream=S2, epoch=EPOCH)))
    assert client.resend_start("r2") is None
    assert client.resend_start("r1") is None  # no retry asked: after_welcome sends it
    assert client.after_welcome()[0] == Start("r1", "agent", None)


def test_a_load_error_for_a_started_stream_is_not_a_start_retry() -> None:
    client = welcomed()
    started(client, "r1", S1)
    action = client.server_error(Error(code="overloaded", stream=S1), 0.0)
    assert isinstance(action, FailStream) and isinstance(action.error, RequestRefused)


@pytest.mark.parametrize("code", ["bad_ack", "unsupported"])
def test_an_error_about_one_frame_leaves_the_stream_alone(code: str) -> None:
    client = welcomed()
    started(client, "r1", S1)
    assert client.server_error(Error(code=code, stream=S1), 0.0) is None
    assert client.by_stream[S1].state is StreamState.ATTACHED


def test_any_other_error_refuses_the_request_and_forgets_it() -> None:
    client = welcomed()
    client.start("r1", "agent", None)
    action = client.server_error(Error(code="unknown_agent", message="no such", req="r1"), 0.0)
    assert isinstance(action, FailStream) and isinstance(action.error, RequestRefused)
    assert action.error.code == "unknown_agent" and "r1" not in client.by_req


def test_an_error_for_nobody_is_ignored() -> None:
    client = welcomed()
    assert client.server_error(Error(code="internal", req="gone"), 0.0) is None
    assert client.server_error(Error(code="internal", stream=S3), 0.0) is None
    assert client.server_error(Error(code="internal"), 0.0) is None


def test_the_consumed_cursor_follows_consumption_not_reception() -> None:
    consumed = ConsumedCursor()
    assert consumed.cursor() is None
    consumed.began(S1, EPOCH)
    digests = chain(S1, EPOCH, TOKENS)
    assert consumed.cursor() == Cursor(S1, 0, seed(S1, EPOCH).hex(), EPOCH)
    consumed.consumed(TOKENS[0])
    consumed.consumed(TOKENS[1])
    assert consumed.cursor() == Cursor(S1, 2, digests[1].hex(), EPOCH)
    consumed.verified(2, digests[1])  # the frame's end: the digest is known
    consumed.consumed(TOKENS[2])
    assert consumed.cursor() == Cursor(S1, 3, digests[2].hex(), EPOCH)


def test_a_resumed_consumed_cursor_starts_at_the_saved_position() -> None:
    digests = chain(S1, EPOCH, TOKENS)
    consumed = ConsumedCursor()
    consumed.began(S1, EPOCH, 2, digests[1])
    consumed.began(S1, EPOCH)  # a later "started" never moves it back
    consumed.consumed(TOKENS[2])
    assert consumed.cursor() == Cursor(S1, 3, digests[2].hex(), EPOCH)


@pytest.mark.parametrize(
    ("status", "cancelled", "fails"),
    [
        ("completed", False, False),
        ("completed", True, False),
        ("cancelled", True, False),
        ("cancelled", False, True),
        ("failed", False, True),
        ("failed", True, True),
    ],
)
def test_an_end_is_success_only_when_completed_or_cancelled_by_the_user(
    status: str, cancelled: bool, fails: bool
) -> None:
    error = end_error(S1, status, "why", cancelled)
    assert (error is not None) is fails
    if error is not None:
        assert isinstance(error, StreamFailed) and error.status == status


def test_a_session_is_expecting_frames_only_while_a_stream_is_live() -> None:
    client = welcomed()
    assert not client.expecting_frames()
    client.start("r1", "agent", None)
    assert client.expecting_frames()  # the start awaits its answer
    client.receive(encode(Started(req="r1", stream=S1, epoch=EPOCH)))
    assert client.expecting_frames()
    client.receive(encode_frames([[end(1, "completed")]], stream=S1)[0])
    assert not client.expecting_frames()


def test_after_a_message_the_acks_due_go_out_with_a_ping_to_prove_them() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.ack_every = 1
    client.receive(encode_frames([TOKENS[:2]], stream=S1)[0])
    assert client.after_message(5.0) == [Ack(stream=S1, seq=2), Ping(n=1)]
    client.receive(encode_frames([TOKENS[:2], TOKENS[2:3]], stream=S1)[1])
    assert client.after_message(5.1) == [Ack(stream=S1, seq=3)]  # ping 1 still out
    assert client.after_message(5.2) == []  # nothing due, nothing sent


def test_an_hb_is_answered_with_every_streams_ack_again_and_a_ping() -> None:
    client = welcomed()
    started(client, "r1", S1)
    client.ack_every = 10**9
    client.receive(encode_frames([TOKENS[:2]], stream=S1)[0])
    assert client.after_message(1.0) == []  # too few bytes for an ack
    assert client.receive(encode(Hb())) == Heartbeat()
    assert client.after_message(1.1) == [Ack(stream=S1, seq=2), Ping(n=1)]
    client.receive(encode(Hb()))
    # the same ack again (an earlier one may have been lost); ping 1 still out
    assert client.after_message(1.2) == [Ack(stream=S1, seq=2)]
    client.receive(encode(Pong(n=1)))
    client.liveness.pong(1.3, 1)
    client.receive(encode(Hb()))
    assert client.after_message(1.4) == [Ack(stream=S1, seq=2), Ping(n=2)]


def test_an_hb_on_a_quiet_session_is_still_answered_with_a_ping() -> None:
    client = welcomed()
    client.receive(encode(Hb()))
    assert client.after_message(0.5) == [Ping(n=1)]


def test_a_new_connection_forgets_an_unanswered_hb() -> None:
    client = welcomed()
    client.receive(encode(Hb()))
    client.connection_lost()
    client.connected()
    client.connect()
    client.receive(WELCOME)
    assert client.after_message(0.5) == []
