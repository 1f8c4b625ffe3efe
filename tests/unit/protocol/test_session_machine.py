"""A client session against a server session through random drops, resumes, acks and
reorderings (Hypothesis state machine, no sockets).

The server side is the sans-I/O :class:`ServerSession` plus a model of what a real
server does with the log: the agent appends whenever it likes, each connection reads
the log after its cursor in frames of any size, a resume is checked against the log's
digest chain. The network between them is two queues that a fault can empty (a drop),
reorder, duplicate or corrupt. Whatever happens, the answer the client delivers is
always a prefix of the log (never a wrong byte), a fault that breaks the transport's
promises ends in a typed error (never a silent gap), and once the network behaves the
answer completes exactly, with the final digest.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from unbroken.errors import GoneReason, IntegrityError, ProtocolError, StreamGone
from unbroken.protocol.client_session import (
    ClientSession,
    StreamEvents,
    StreamGoneOut,
    Welcomed,
)
from unbroken.protocol.digest import chain, seed
from unbroken.protocol.events import Event
from unbroken.protocol.frames import (
    Ack,
    Gone,
    Hello,
    Resume,
    Resumed,
    Start,
    Started,
    Welcome,
    decode_client,
    encode,
    encode_events_frame,
    encode_items,
)
from unbroken.protocol.server_session import ServerSession

from .strategies import EPOCH, STREAM, streams

REQ = "req-1"


class ServerModel:
    """What one server connection does with the stream log (the I/O-free part)."""

    def __init__(self, log: list[Event], digests: list[bytes]) -> None:
        self.session = ServerSession()
        self.log = log  # shared with the agent: grows while connections come and go
        self.digests = digests
        self.cursor: int | None = None  # last seq sent on this connection (None: not attached)
        self.out: list[bytes] = []

    def receive(self, data: bytes) -> None:
        frame = self.session.receive(data)
        if isinstance(frame, Hello):
            self.out.append(encode(Welcome(session="s", heartbeat_ms=1000, epoch=EPOCH)))
        elif isinstance(frame, Start):  # a retried start finds the same stream
            self.out.append(encode(Started(req=frame.req, stream=STREAM, epoch=EPOCH)))
            self.session.attach(STREAM)
            self.cursor = 0
        elif isinstance(frame, Resume):
            # a fault that altered ``started`` (stream id, epoch) shows here: refused
            reason = self._refusal(frame)
            if reason is not None:
                self.out.append(encode(Gone(stream=frame.stream, reason=reason)))
                return
            self.out.append(encode(Resumed(stream=STREAM, from_=frame.after, head=len(self.log))))
            self.session.attach(STREAM, frame.after)
            self.cursor = frame.after
        elif isinstance(frame, Ack):
            acked = self.session.ack(frame.stream, frame.seq)
            assert acked is not None and self.cursor is not None and acked <= self.cursor

    def _refusal(self, resume: Resume) -> GoneReason | None:
        if resume.stream != STREAM:
            return "unknown"
        if resume.epoch != EPOCH:
            return "epoch"
        assert resume.after <= len(self.log), "resume past the head"
        expected = self.digests[resume.after - 1] if resume.after else seed(STREAM, EPOCH)
        if resume.h != expected.hex():
            return "diverged"
        return None

    def send(self, n: int) -> bool:
        """Frame up to ``n`` unsent events of the log; False when there is nothing to send."""
        if self.cursor is None or self.cursor >= len(self.log):
            return False
        batch = self.log[self.cursor : self.cursor + n]
        last = self.cursor + len(batch)
        self.out.append(
            encode_events_frame(STREAM, batch[0].seq, encode_items(batch), self.digests[last - 1])
        )
        self.cursor = last
        return True


class SessionsOverAFaultyNetwork(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = ClientSession()
        self.answer: list[Event] = []  # what the client delivered, in order
        self.log: list[Event] = []
        self.digests: list[bytes] = []
        self.full: list[Event] = []
        self.server: ServerModel | None = None
        self.up: list[bytes] = []  # client → server, in flight
        self.failed: BaseException | None = None  # a typed error ended the session
        self.now = 0.0
        self.broken: set[bytes] = set()  # frames a fault reordered, repeated or changed
        self.took_broken = False

    @initialize(events=streams(max_events=25))
    def agent_has_an_answer_to_give(self, events: list[Event]) -> None:
        self.full = events
        self.all_digests = chain(STREAM, EPOCH, events)
        start = self.client.start(REQ, "agent", {"q": 1})
        assert start is None  # not connected yet: sent once welcomed

    # ------------------------------------------------------------------ the agent
    @precondition(lambda self: len(self.log) < len(self.full))
    @rule(k=st.integers(1, 5))
    def agent_appends(self, k: int) -> None:
        n = min(len(self.full), len(self.log) + k)
        self.log.extend(self.full[len(self.log) : n])
        self.digests[:] = self.all_digests[: len(self.log)]

    # ------------------------------------------------------------------ the network
    @precondition(lambda self: self.server is None and self.failed is None)
    @rule()
    def connect(self) -> None:
        self.server = ServerModel(self.log, self.digests)
        self.up = [encode(self.client.connect())]

    @precondition(lambda self: self.server is not None)
    @rule()
    def drop(self) -> None:
        """The connection dies: everything in flight both ways is lost."""
        self.server = None
        self.up = []
        if self.failed is None:
            self.client.connection_lost()

    @precondition(lambda self: self.server is not None and self.failed is None)
    @rule(n=st.integers(1, 6))
    def server_sends(self, n: int) -> None:
        assert self.server is not None
        self.server.send(n)

    @precondition(lambda self: bool(self.up) and self.server is not None)
    @rule()
    def deliver_to_server(self) -> None:
        assert self.server is not None
        self.server.receive(self.up.pop(0))

    @precondition(lambda self: self.server is not None and bool(self.server.out))
    @rule()
    def deliver_to_client(self) -> None:
        assert self.server is not None
        self._client_receives(self.server.out.pop(0))

    @precondition(lambda self: self.server is not None and self.failed is None)
    @rule(dt=st.floats(0, 2))
    def client_acks(self, dt: float) -> None:
        self.now += dt
        self.up.extend(encode(a) for a in self.client.take_acks(self.now))

    @rule(dt=st.floats(0, 1))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    # ------------------------------------------------------------------ broken promises
    @precondition(
        lambda self: self.server is not None and self.failed is None and len(self.server.out) > 1
    )
    @rule(data=st.data())
    def frames_reordered(self, data: st.DataObject) -> None:
        assert self.server is not None
        out = self.server.out
        i = data.draw(st.integers(0, len(out) - 2))
        out[i], out[i + 1] = out[i + 1], out[i]
        self.broken.update(out[i : i + 2])

    @precondition(
        lambda self: self.server is not None and self.failed is None and bool(self.server.out)
    )
    @rule(data=st.data())
    def frame_corrupted_or_repeated(self, data: st.DataObject) -> None:
        assert self.server is not None
        out = self.server.out
        i = data.draw(st.integers(0, len(out) - 1))
        if data.draw(st.booleans()):
            out.insert(i + 1, out[i])
            self.broken.add(out[i])
        else:
            # one letter or digit changed for another keeps the frame valid JSON most of
            # the time (a changed seq, digest, id or body): only the chain can tell
            frame = bytearray(out[i])
            spots = [j for j, b in enumerate(frame) if chr(b).isalnum()]
            j = data.draw(st.sampled_from(spots))
            frame[j] = ord(data.draw(st.sampled_from([c for c in "0a1bZ9" if ord(c) != frame[j]])))
            out[i] = bytes(frame)
            self.broken.add(out[i])

    # ------------------------------------------------------------------ the client
    def _client_receives(self, data: bytes) -> None:
        if self.failed is not None:
            return
        if data in self.broken:
            event("a broken frame reached the client")
            self.took_broken = True  # if accepted, it may show later (an altered epoch)
        before = list(self.answer)
        try:
            for frame in self.client.frames_of(data):
                out = self.client.receive(frame)
                if isinstance(out, Welcomed):
                    self.up.extend(encode(f) for f in self.client.after_welcome())
                elif isinstance(out, StreamEvents):
                    self.answer.extend(out.events)
                elif isinstance(out, StreamGoneOut):  # what the client raises for it
                    raise StreamGone(out.stream, out.reason)  # type: ignore[arg-type]
        except (IntegrityError, ProtocolError, StreamGone) as exc:
            # a typed error ends the session; nothing of the bad frame was delivered
            self.failed = exc
            self.answer = before

    # ------------------------------------------------------------------ what must hold
    @invariant()
    def the_answer_is_always_a_prefix_of_the_log(self) -> None:
        assert self.answer == self.full[: len(self.answer)]

    @invariant()
    def the_client_never_acks_what_it_has_not_verified(self) -> None:
        for data in self.up:
            frame = decode_client(data)
            if isinstance(frame, Ack):
                assert frame.seq <= len(self.answer)

    def teardown(self) -> None:
        """Heal the network and let the run finish: the answer completes exactly."""
        if self.failed is not None:
            event(f"ended in {type(self.failed).__name__}")
            return
        if not self.full:
            return
        self.log[:] = self.full
        self.digests[:] = self.all_digests
        for _ in range(3):  # a fresh connection may start mid-flight: allow a few
            self.drop()
            if self.failed is not None:
                break
            self.connect()
            while self.failed is None:
                assert self.server is not None
                if self.up:
                    self.deliver_to_server()
                elif self.server.out:
                    self.deliver_to_client()
                elif not self.server.send(4):
                    break
            if self.answer == self.full:
                break
        if self.failed is not None and self.took_broken:
            # a frame altered undetectably (``started`` with another epoch) is refused
            # when resumed: typed, and nothing wrong was delivered
            event(f"healed, then {type(self.failed).__name__} from an earlier fault")
            return
        assert self.failed is None, f"a healthy network ended in {self.failed!r}"
        assert self.answer == self.full
        cursor = self.client.by_req[REQ].cursor()
        assert cursor is not None and cursor.digest == self.all_digests[-1].hex()
        event("healed and exact")


SessionsOverAFaultyNetwork.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sessions_over_a_faulty_network = SessionsOverAFaultyNetwork.TestCase
