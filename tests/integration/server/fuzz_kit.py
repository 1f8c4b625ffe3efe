"""A stateful fuzzer's harness: a real server on loopback, a canary answer streaming
beside the fuzz, and a model of what each hostile frame must get.

The server runs on an event loop of its own thread, so Hypothesis (synchronous) can
drive it: each example opens a real WebSocket (v1 text or v2 MessagePack), sends a
sequence of frames built from :class:`Step` values (valid ones, and valid ones mutated),
reads what comes back, and then checks the invariants of :meth:`Harness.check_after`:
a fresh connection still gets an answer exact (digest checked against the log), the
canary's answers end exact, nothing is left attached or running for the fuzz
connection, every close code and error code is a documented one (never 1011 nor
``internal``), and nothing was logged at ERROR or with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import threading
import zlib
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from unbroken.client import Client
from unbroken.errors import AuthError, ProtocolError
from unbroken.protocol import frames_v2
from unbroken.protocol.digest import chain, seed
from unbroken.protocol.frames import Hello, decode_server
from unbroken.server import ConnectInfo, Output, Principal, Request, Unbroken, reveal_exception
from unbroken.server.admission import AdmissionLimits
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

from ...waiting import until
from .hardened import Hardened, serve_hardened

T = TypeVar("T")
TIMEOUT = 15.0
TOKENS = {"alice-token": "alice", "bob-token": "bob", "canary-token": "canary"}
MAX_CLIENT_FRAME = 64 * 1024
CANARY_TOKENS = 400
#: close codes a hostile client may get (protocol.md §13.2), never 1011
CLIENT_CLOSES = {1000, 1007, 1009, 4000, 4001, 4002, 4003, 4005}
#: error codes a hostile client may get (§13.1), never ``internal``
ERRORS = {
    "overloaded",
    "rate_limited",
    "unknown_agent",
    "bad_input",
    "bad_ack",
    "forbidden",
    "unsupported",
    "auth_failed",
}
GONE = {"unknown", "expired", "epoch", "diverged", "forbidden"}
MAX_SEQ = 2**53
LOGGERS = ("unbroken", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets")


async def authenticate(hello: Hello, info: ConnectInfo) -> Principal:
    who = TOKENS.get(hello.token or "")
    if who is None:
        raise AuthError("unknown token")
    return Principal(who)


def _n(inp: Any, default: int, cap: int) -> int:
    n = inp.get("n", default) if isinstance(inp, dict) else default
    if isinstance(n, bool) or not isinstance(n, int):
        return default
    return max(0, min(n, cap))


def make_app() -> Unbroken:
    app = Unbroken(
        authenticate=authenticate,
        store=MemoryStore(Retention(ttl=3600.0)),
        max_client_frame=MAX_CLIENT_FRAME,
        max_frame=1024 * 1024,
        max_chunk=64 * 1024,
        frame_cap=128 * 1024,
        shutdown_grace=1.0,
        redact=reveal_exception,
        # a loaded machine must not refuse the fuzz's starts for loop lag: the gate
        # is a load heuristic with a suite of its own
        admission=AdmissionLimits(max_loop_lag=None),
    )

    @app.agent("count")
    async def count(req: Request, out: Output) -> None:
        for i in range(_n(req.input, 3, 200)):
            await out.text(f"t{i} ")
            await asyncio.sleep(0)

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        await out.text(json.dumps(req.input)[:2000])

    @app.agent("canary")
    async def canary(req: Request, out: Output) -> None:
        for i in range(CANARY_TOKENS):
            await out.text(f"c{i} ")
            await asyncio.sleep(0.002)

    return app


# ------------------------------------------------------------------ log capture
class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def bad(self) -> list[str]:
        return [
            f"{r.name} {r.levelname}: {r.getMessage()}"
            for r in list(self.records)
            if r.levelno >= logging.ERROR or r.exc_info
        ]


# ------------------------------------------------------------------ the harness
@dataclass
class Harness:
    """A real server in a thread of its own, with a canary reading answers beside it."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    app: Unbroken = field(default_factory=make_app)
    records: Records = field(default_factory=Records)
    srv: Hardened | None = None
    canary_done: int = 0
    canary_failures: list[str] = field(default_factory=list)
    alice_streams: list[str] = field(default_factory=list)  # finished, from fresh checks
    canary_stream: str = ""
    examples: int = 0
    #: what the examples met: close codes, error codes, resume answers (for reports)
    seen: Counter[str] = field(default_factory=Counter)
    _thread: threading.Thread | None = None
    _cm: Any = None
    _canary_task: asyncio.Task[None] | None = None
    #: set when the canary's first answer was checked (or the canary failed)
    _answered: asyncio.Event = field(default_factory=asyncio.Event)
    #: the loggers' levels before start(), restored by stop()
    _levels: dict[str, int] = field(default_factory=dict)
    _stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        assert self.srv is not None
        return self.srv.url

    @property
    def http(self) -> str:
        assert self.srv is not None
        return self.srv.http

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Harness:
        for name in LOGGERS:
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.addHandler(self.records)
            if lg.getEffectiveLevel() > logging.INFO:
                lg.setLevel(logging.INFO)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        # served as ``unbroken serve`` serves it: the connection guard and unbroken's
        # WebSocket layer (hello limit, clean 1007)
        self._cm = serve_hardened(self.app)
        self.srv = await self._cm.__aenter__()
        self._stop = asyncio.Event()
        started = asyncio.Event()
        self._canary_task = asyncio.get_running_loop().create_task(self._canary(started))
        async with asyncio.timeout(TIMEOUT):
            await started.wait()

    def stop(self) -> None:
        try:
            self.call(self._stop_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self.loop.close()
            for name in LOGGERS:
                lg = logging.getLogger(name)
                lg.removeHandler(self.records)
                lg.setLevel(self._levels.pop(name, lg.level))

    async def _stop_all(self) -> None:
        assert self._stop is not None and self._canary_task is not None
        self._stop.set()
        self._canary_task.cancel()  # its answers so far were checked: not the last one
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._canary_task, TIMEOUT)
        await self._cm.__aexit__(None, None, None)

    # -------------------------------------------------------------- the canary
    async def _canary(self, started: asyncio.Event) -> None:
        """Stream canary answers one after another, each checked exact, until stopped."""
        assert self._stop is not None
        try:
            async with Client(self.url, token="canary-token") as client:
                while not self._stop.is_set():
                    running = await client.start("canary")
                    self.canary_stream = running.id
                    started.set()
                    answer = await asyncio.wait_for(running.wait(), 120)
                    problem = await self._exact(
                        running.id,
                        answer.digest,
                        answer.events,
                        answer.text,
                        answer.status,
                        "".join(f"c{i} " for i in range(CANARY_TOKENS)),
                    )
                    if problem:
                        self.canary_failures.append(problem)
                    self.canary_done += 1
                    self._answered.set()
        except Exception as exc:  # any failure of the canary is a finding
            self.canary_failures.append(f"canary raised {exc!r}")
            started.set()
            self._answered.set()

    def wait_canary(self) -> None:
        """Return once the canary's first answer was checked (or it failed)."""

        async def answered() -> None:
            async with asyncio.timeout(120):
                await self._answered.wait()

        self.call(answered(), timeout=130)

    async def _exact(
        self, stream: str, digest: str, events: int, text: str, status: str, want: str
    ) -> str:
        """'' when the answer is the log's, exactly; else what differs."""
        meta = await self.app.store.meta(stream)
        if meta is None:
            return f"{stream}: no meta"
        store = self.app.store
        assert isinstance(store, MemoryStore)
        epoch, logged = await store.read_all(stream)
        recomputed = chain(stream, epoch, list(logged))[-1] if logged else seed(stream, epoch)
        checks = {
            "status": (status, "completed"),
            "text": (text, want),
            "events": (events, meta.head),
            "digest": (digest, meta.digest.hex()),
            "rechained": (recomputed.hex(), meta.digest.hex()),
        }
        bad = [f"{k}: {a!r} != {b!r}" for k, (a, b) in checks.items() if a != b]
        return f"{stream}: " + "; ".join(bad) if bad else ""

    # -------------------------------------------------------------- invariants
    def check_after(self) -> None:
        self.call(self._check_after())

    async def _check_after(self) -> None:
        """Everything a hostile connection must leave as it was."""
        app = self.app

        # 1. nothing left of the fuzz connections: only the canary's is open, no run
        #    but the canary's (the fuzz's short runs finish on their own)
        def fuzz_runs() -> list[str]:
            return [sid for sid, r in list(app.hub.runs.items()) if r.owner != "canary"]

        await until(lambda: len(app.connections) <= 1 and not fuzz_runs(), TIMEOUT)
        conns = list(app.connections)
        assert len(conns) == 1, conns
        (canary,) = conns
        canary_runs = set(app.hub.runs)
        assert len(canary_runs) <= 1 and set(canary.atts) <= canary_runs | {self.canary_stream}, (
            canary.atts,
            canary_runs,
        )
        store = app.store
        assert isinstance(store, MemoryStore)
        assert not store._pending_listeners, store._pending_listeners
        leaked = {
            sid: s.listeners
            for sid, s in store._streams.items()
            if s.listeners and sid not in canary_runs | {self.canary_stream}
        }
        assert not leaked, leaked
        # 2. a fresh connection gets a fresh answer, exact
        async with Client(self.url, token="alice-token") as client:
            running = await client.start("count", {"n": 20})
            answer = await asyncio.wait_for(running.wait(), TIMEOUT)
        problem = await self._exact(
            running.id,
            answer.digest,
            answer.events,
            answer.text,
            answer.status,
            "".join(f"t{i} " for i in range(20)),
        )
        assert not problem, problem
        self.alice_streams.append(running.id)
        del self.alice_streams[:-8]
        # 3. the canary is fine and nothing was logged at ERROR
        assert not self.canary_failures, self.canary_failures
        assert self.canary_task_alive(), "the canary stopped"
        assert not self.records.bad(), self.records.bad()

    def canary_task_alive(self) -> bool:
        return self._canary_task is not None and not self._canary_task.done()

    async def head_of(self, stream: str) -> tuple[int, bytes]:
        meta = await self.app.store.meta(stream)
        if meta is None:
            return 0, b""
        return meta.head, meta.digest

    async def digest_at(self, stream: str, seq: int) -> bytes | None:
        return await self.app.store.digest_at(stream, seq)


# ------------------------------------------------------------------ the model
# A fuzz example is a version, a hello and a list of steps. A step is a frame (its
# type and fields, with references resolved when sent) plus, maybe, a mutation.

# references resolved when a frame is sent; the last ones of each list are out of range
# (a bad frame, close 4000), drawn one time in six (mostly): a bad frame ends the
# connection, so the stateful part needs mostly frames in range
GOOD_STREAMS = ["own", "own", "own", "canary", "alice_prev", "random"]
STREAM_REFS = [*GOOD_STREAMS, "bad_id"]
GOOD_SEQS = ["head", "head", "head+1", "head+big", "zero", "back", "max"]
SEQ_REFS = [*GOOD_SEQS, "max+1", "neg", "float"]
H_REFS = ["right", "right", "right", "forged", "none", "upper", "short"]
EPOCH_REFS = ["right", "right", "right", "forged", "bad"]


def mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """A value of ``good``: the steps of a sequence are in range (a bad frame ends the
    connection, so the stateful part needs them); ``bad`` goes to :func:`out_of_range`."""
    OUT_OF_RANGE.extend(bad)
    return st.sampled_from(good)


#: the out-of-range values of every field, drawn by the sequence's bad last step
OUT_OF_RANGE: list[str] = []


#: JSON-ish values for wrong-typed fields and fuzzed inputs
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Step:
    kind: str  # start resume ack cancel ping list refresh hello raw
    stream: str = "own"
    seq: str = "head"
    h: str = "right"
    epoch: str = "right"
    req: str = "r1"
    agent: str = "count"
    input: Any = None
    token: str = "alice-token"
    mutation: str = ""  # "" or a mutation's name
    wrong: Any = None  # the value a mutation puts in
    raw: bytes | str = b""


MUTATIONS = [
    "drop_field",
    "wrong_type",
    "extra_field",
    "dup_key",
    "unknown_type",
    "nan",
    "deep",
    "big_string",
    "bad_utf8",
    "truncate",
    "trailing",
    "wrong_kind",  # binary on v1, text on v2
    "not_object",
]

start_steps = st.builds(
    Step,
    kind=st.just("start"),
    req=mostly(["r1", "r2", "r3"], ["r\x7f", "", "r" * 129, "a b"]),
    agent=mostly(["count", "count", "echo", "nope"], ["bad agent!"]),
    input=st.one_of(
        st.fixed_dictionaries({"n": st.integers(min_value=-5, max_value=60)}), json_value
    ),
)
resume_steps = st.builds(
    Step,
    kind=st.just("resume"),
    stream=mostly(GOOD_STREAMS, ["bad_id"]),
    seq=mostly(GOOD_SEQS, ["max+1", "neg", "float"]),
    h=mostly(H_REFS[:-1], ["short"]),
    epoch=mostly(EPOCH_REFS[:-1], ["bad"]),
)
steps = st.one_of(
    start_steps,
    start_steps,
    resume_steps,
    resume_steps,
    st.builds(
        Step,
        kind=st.just("ack"),
        stream=mostly(GOOD_STREAMS, ["bad_id"]),
        seq=mostly(GOOD_SEQS, ["max+1", "neg", "float"]),
    ),
    st.builds(Step, kind=st.just("cancel"), stream=mostly(GOOD_STREAMS, ["bad_id"])),
    st.builds(Step, kind=st.just("ping"), seq=mostly(GOOD_SEQS, ["max+1", "neg", "float"])),
    st.builds(Step, kind=st.just("list"), seq=mostly(GOOD_SEQS, ["max+1", "neg", "float"])),
    st.builds(
        Step,
        kind=st.just("refresh"),
        token=mostly(["alice-token", "alice-token", "bob-token", "junk"], ["x" * 17000]),
    ),
    # another connection of the same principal, on the other version or this one,
    # takes one of this connection's streams: resumes it from 0 or from its head
    # (every events frame it gets checked), then cancels it or acks it
    st.builds(
        Step,
        kind=st.just("twin"),
        stream=st.sampled_from(["own", "own", "canary", "alice_prev"]),
        seq=st.sampled_from(["zero", "head"]),
        agent=st.sampled_from(["read", "cancel", "ack"]),
        req=st.sampled_from(["v1", "v2"]),
    ),
)


#: wrong values for mutations: within MessagePack's 64-bit integers
wrong_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)


def mutated(step: Step) -> st.SearchStrategy[Step]:
    return st.builds(
        lambda m, w: Step(**{**step.__dict__, "mutation": m, "wrong": w}),
        st.sampled_from(MUTATIONS),
        wrong_value,
    )


#: a bad frame ends its connection, so most steps are valid ones (the stateful part
#: runs long), and a sequence ends with a bad frame now and then
bad_steps = st.one_of(
    steps.flatmap(mutated),
    st.builds(Step, kind=st.just("raw"), raw=st.binary(max_size=40) | st.text(max_size=40)),
    # a zlib bomb: 64 MiB of zeros deflated to ~64 KB, as v2's compressed frame (a
    # client may never send one) and as plain bytes
    st.builds(Step, kind=st.just("raw"), raw=st.sampled_from(["zlib-bomb", "zlib-raw"])),
)


def out_of_range(step: Step) -> st.SearchStrategy[Step]:
    """``step`` with one field out of range (a bad frame: close 4000)."""
    bad = {
        "start": ("req", ["r\x7f", "", "r" * 129, "a b"]),
        "resume": ("seq", ["max+1", "neg", "float"]),
        "ack": ("stream", ["bad_id"]),
        "cancel": ("stream", ["bad_id"]),
        "ping": ("seq", ["max+1", "neg", "float"]),
        "list": ("seq", ["max+1", "neg", "float"]),
        "refresh": ("token", ["x" * 17000]),
    }.get(step.kind)
    if bad is None:
        return st.just(Step("ack", seq="neg"))
    name, values = bad
    return st.sampled_from(values).map(lambda v: Step(**{**step.__dict__, name: v}))


bad_steps = st.one_of(bad_steps, steps.flatmap(out_of_range), st.just(Step("hello")))


@dataclass(frozen=True)
class Script:
    version: str  # v1 | v2
    hello: str  # ok | none | bad_token | bob | mutated
    caps: tuple[str, ...]
    steps: tuple[Step, ...]
    pipelined: bool
    end: str  # close | abort | leave


scripts = st.builds(
    Script,
    version=st.sampled_from(["v1", "v2"]),
    hello=st.tuples(
        st.booleans(), st.booleans(), st.sampled_from(["none", "bad_token", "mutated"])
    ).map(lambda t: t[2] if t[0] and t[1] else "ok")
    | st.just("bob"),
    caps=st.lists(
        st.sampled_from(["batch", "streams", "unavailable", "zlib", "refresh", "x-unknown"]),
        unique=True,
    ).map(tuple),
    steps=st.tuples(
        st.lists(steps, min_size=1, max_size=16), st.none() | bad_steps.map(lambda b: [b])
    ).map(lambda t: tuple(t[0] + (t[1] or []))),
    pipelined=st.booleans(),
    end=st.sampled_from(["close", "abort", "leave"]),
)


# ------------------------------------------------------------------ encoding
V1_FIELDS = {
    "hello": ("caps", "token", "anon"),
    "start": ("req", "agent", "input"),
    "resume": ("stream", "after", "epoch", "h"),
    "ack": ("stream", "seq"),
    "cancel": ("stream",),
    "refresh": ("token",),
    "ping": ("n",),
    "list": ("n",),
}
V2_TAGS = {
    "hello": 16,
    "start": 17,
    "resume": 18,
    "ack": 19,
    "cancel": 20,
    "refresh": 21,
    "ping": 22,
    "list": 23,
}


def encode_fields(version: str, t: str, fields: dict[str, Any]) -> bytes | str:
    """A frame as the version sends it (``h`` as raw bytes in v2, hex in v1)."""
    if version == "v1":
        body = {"t": t}
        for k, v in fields.items():
            body[k] = v.hex() if isinstance(v, bytes) else v
        return json.dumps(body, separators=(",", ":"))
    arr: list[Any] = [V2_TAGS[t]]
    for name in V1_FIELDS[t]:
        v = fields.get(name)
        if t == "start" and name == "input":
            v = json.dumps(v)
        arr.append(v)
    return msgspec.msgpack.encode(arr)


def apply_mutation(version: str, t: str, fields: dict[str, Any], m: str, wrong: Any) -> bytes | str:
    """A valid frame made bad by ``m``; every result is a bad frame (§3, §19.7)."""
    names = V1_FIELDS[t]
    first = names[0]
    if m == "drop_field":
        # a required field missing: every frame but hello/ping/list has one; v2 frames
        # are positional, so a missing required element is a short array
        required = {
            "start": "agent",
            "resume": "epoch",
            "ack": "seq",
            "cancel": "stream",
            "refresh": "token",
        }
        if t in required:
            fields = {k: v for k, v in fields.items() if k != required[t]}
            if version == "v2":
                arr: list[Any] = [V2_TAGS[t]]
                for name in names:
                    if name == required[t]:
                        break
                    v = fields.get(name)
                    arr.append(json.dumps(v) if (t, name) == ("start", "input") else v)
                return msgspec.msgpack.encode(arr)
            return encode_fields(version, t, fields)
        m = "wrong_type"
    if m == "wrong_type":
        # a value of a type the field never takes
        name = {
            "start": "req",
            "resume": "after",
            "ack": "seq",
            "ping": "n",
            "list": "n",
            "hello": "caps",
        }.get(t, first)
        bad = [wrong] if isinstance(wrong, str) or wrong is None else {"x": wrong}
        return encode_fields(version, t, {**fields, name: bad})
    if m == "extra_field":
        if version == "v1":
            m = "dup_key"  # an unknown field is ignored in v1: not a bad frame
        else:
            arr = msgspec.msgpack.decode(encode_fields(version, t, fields))
            return msgspec.msgpack.encode([*arr, *([None] * (len(names) + 1 - len(arr))), 1])
    if m == "dup_key":
        if version == "v1":
            text = encode_fields(version, t, fields)
            assert isinstance(text, str)
            return text[:-1] + ',"t":"' + t + '"}'
        m = "truncate"
    if m == "unknown_type":
        if version == "v1":
            return json.dumps({**fields, "t": "launch"}, default=lambda b: b.hex())
        return msgspec.msgpack.encode([99, *fields.values()])
    if m == "nan":
        if version == "v1":
            name = {"ack": "seq", "ping": "n", "list": "n", "resume": "after"}.get(t)
            if name is None:
                return encode_fields(version, t, fields)[:-1] + ',"x":NaN}'  # type: ignore[operator]
            return json.dumps(
                {
                    "t": t,
                    **{k: (v.hex() if isinstance(v, bytes) else v) for k, v in fields.items()},
                    name: math.nan,
                }
            )
        if t in ("ack", "ping", "list", "resume"):
            arr = msgspec.msgpack.decode(encode_fields(version, t, fields))
            arr[-1 if t in ("ping", "list", "ack") else 2] = math.nan
            return msgspec.msgpack.encode(arr)
        m = "not_object"
    if m == "deep":
        if version == "v1":
            return '{"t":"' + t + '","x":' + "[" * 5000 + "]" * 5000 + "}"
        return b"\x92" + bytes([V2_TAGS[t]]) + b"\x91" * 5000 + b"\x00"
    if m == "big_string":
        return encode_fields(version, t, {**fields, first: "x" * (MAX_CLIENT_FRAME + 10)})
    if m == "bad_utf8":
        data = encode_fields(version, t, {**fields, first: "\udcff"} if False else fields)
        if version == "v1":
            assert isinstance(data, str)
            return BadText(data.encode()[:-1] + b',"x":"\xff\xfe"}')
        if t == "start":
            return msgspec.msgpack.encode([17, "r", "count"])[:-0] + b"\xa2\xff\xfe"
        return b"\x92" + bytes([V2_TAGS[t]]) + b"\xa2\xff\xfe"
    if m == "truncate":
        data = encode_fields(version, t, fields)
        return data[: max(1, len(data) // 2)]
    if m == "trailing":
        data = encode_fields(version, t, fields)
        return data + (" x" if isinstance(data, str) else b"\x00")
    if m == "wrong_kind":
        data = encode_fields(version, t, fields)
        return data.encode() if isinstance(data, str) else json.dumps({"t": t})
    # not_object
    return "[1,2]" if version == "v1" else msgspec.msgpack.encode({"t": V2_TAGS[t]})


_BOMB: list[bytes] = []


def zlib_bomb() -> bytes:
    """64 MiB of zeros, deflated (about 64 KB), made once."""
    if not _BOMB:
        _BOMB.append(zlib.compress(b"\0" * (64 * 1024 * 1024), 9))
    return _BOMB[0]


class BadText(bytes):
    """Bytes sent as a *text* message (invalid UTF-8 in a text frame)."""


# ------------------------------------------------------------------ running
def tag(f: Any) -> str:
    """A decoded server frame's type (v1 objects; v2 ``events`` as a tuple)."""
    if isinstance(f, tuple):
        return str(f[0])
    return str(type(f).__struct_config__.tag)


class Violation(AssertionError):
    pass


@dataclass
class Fuzz:
    """One fuzz connection: sends a script's frames and checks every answer."""

    h: Harness
    script: Script
    ws: ClientConnection | None = None
    epoch: str = ""
    own: list[str] = field(default_factory=list)  # streams started here
    heads: dict[str, int] = field(default_factory=dict)  # last seq received per stream
    handles: frames_v2.ClientCodec = field(default_factory=frames_v2.ClientCodec)
    frames: list[Any] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    reader: asyncio.Task[None] | None = None
    got: asyncio.Event = field(default_factory=asyncio.Event)
    log: list[str] = field(default_factory=list)
    problem: Exception | None = None
    next_seq: dict[str, int] = field(default_factory=dict)  # per attached stream
    principal: str = "alice"
    twins: list[asyncio.Task[None]] = field(default_factory=list)
    #: the last resume sent: (stream, after, the answers §10 allows, frames before it)
    resume_want: tuple[str, Any, set[str], int] | None = None

    def fail(self, why: str) -> None:
        raise Violation(f"{why}\nscript: {self.script}\nsent/recv: {self.log[-30:]}")

    # -------------------------------------------------------------- reading
    async def _read(self) -> None:
        assert self.ws is not None
        zlib = self.script.version == "v2" and "zlib" in self.script.caps
        try:
            async for message in self.ws:
                for f in self._decode(message, zlib):
                    self._note(f)
                    if tag(f) == "events":
                        await self._check_events(f)
                self.got.set()
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.problem = exc
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd else None
            self.close_reason = rcvd.reason if rcvd else ""
            self.got.set()

    def _decode(self, message: bytes | str, zlib: bool) -> list[Any]:
        try:
            if self.script.version == "v1":
                if not isinstance(message, str):
                    self.fail("binary message from the server on v1")
                return [decode_server(line) for line in message.split("\n")]
            if not isinstance(message, bytes):
                self.fail("text message from the server on v2")
            out = []
            for raw in frames_v2.ClientCodec.split(message, 16 * 1024 * 1024, inflate=zlib):
                f = self.handles.decode(raw, 16 * 1024 * 1024)
                if isinstance(f, frames_v2.EventsV2):
                    f = ("events", self.handles.stream_of(f.handle), f.seq, len(f.items), f.h)
                out.append(f)
            return out
        except ProtocolError as exc:
            self.fail(f"the server sent a bad frame: {exc}")
            raise

    def _note(self, f: Any) -> None:
        t = tag(f)
        self.log.append(f"<- {t} {f!r}"[:300])
        self.frames.append(f)
        if t == "events":
            stream, seq, n = (
                (f[1], f[2], f[3]) if isinstance(f, tuple) else (f.stream, f.seq, len(f.items))
            )
            want = self.next_seq.get(stream)
            if want is None:
                self.fail(f"events for {stream}, not started or resumed here")
            if seq != want:
                self.fail(f"events of {stream} from seq {seq}, expected {want} (a gap or a repeat)")
            self.next_seq[stream] = seq + n
            self.heads[stream] = seq + n - 1
        elif t == "resumed":
            self.next_seq[f.stream] = f.from_ + 1
        elif t == "welcome":
            self.epoch = f.epoch
        elif t == "started":
            self.next_seq[f.stream] = 1
            if f.stream not in self.own:
                self.own.append(f.stream)
        elif t == "error":
            self.h.seen[f"error {f.code}"] += 1
            if f.code not in ERRORS:
                self.fail(f"undocumented error code {f.code!r}: {f}")
        elif t == "gone" and f.reason not in GONE:
            self.fail(f"undocumented gone reason {f.reason!r}")

    async def _check_events(self, f: Any) -> None:
        """The frame's ``h`` is the log's digest after its last event."""
        if isinstance(f, tuple):
            _, stream, seq, n, h = f
        else:
            stream, seq, n, h = f.stream, f.seq, len(f.items), bytes.fromhex(f.h)
        logged = await self.h.digest_at(stream, seq + n - 1)
        if logged is None or logged[: len(h)] != h:
            self.fail(f"events of {stream} up to {seq + n - 1}: h {h.hex()} != log's {logged!r}")

    async def wait_for(self, pred: Any, limit: float = TIMEOUT) -> bool:
        """Until ``pred()`` or the connection closed; True if ``pred()``."""
        async with asyncio.timeout(limit):
            while not pred():
                if self.problem is not None:
                    raise self.problem
                if self.reader is not None and self.reader.done():
                    return bool(pred())
                self.got.clear()
                await self.got.wait()
        return True

    # -------------------------------------------------------------- resolving refs
    def stream_of(self, ref: str, i: int) -> str:
        if ref.startswith("fixed:"):
            return ref[6:]
        if ref == "own" and self.own:
            return self.own[i % len(self.own)]
        if ref == "canary" and self.h.canary_stream:
            return self.h.canary_stream
        if ref == "alice_prev" and self.h.alice_streams:
            return self.h.alice_streams[i % len(self.h.alice_streams)]
        if ref == "bad_id":
            return ["", "a b", "x" * 65, "ünï", "a\nb"][i % 5]
        return secrets.token_urlsafe(16)

    async def seq_of(self, ref: str, stream: str) -> Any:
        head = self.heads.get(stream, 0)
        if stream and stream not in self.heads and ref in ("head", "head+1", "back"):
            head = (await self.h.head_of(stream))[0] if ref != "head+1" else head
        return {
            "head": head,
            "head+1": head + 1,
            "head+big": head + 10**6,
            "zero": 0,
            "back": max(0, head - 2),
            "max": MAX_SEQ,
            "max+1": MAX_SEQ + 1,
            "neg": -1,
            "float": 1.5,
        }[ref]

    # -------------------------------------------------------------- one step
    async def fields_of(self, step: Step, i: int) -> tuple[str, dict[str, Any], bool]:
        """The frame's type, fields, and whether the frame is valid as typed (its
        fields in range: a frame that is not is a bad frame, close 4000)."""
        t = step.kind
        epoch = self.epoch or self.h.app.store.epoch
        if t == "hello":
            return t, {"token": "alice-token"}, True
        if t == "start":
            ok = 1 <= len(step.req) <= 128 and all(0x21 <= ord(c) <= 0x7E for c in step.req)
            ok = ok and step.agent != "bad agent!"
            return t, {"req": step.req, "agent": step.agent, "input": step.input}, ok
        if t in ("ping", "list"):
            n = await self.seq_of(step.seq, "")
            return t, {"n": n}, isinstance(n, int) and 0 <= n <= MAX_SEQ
        if t == "refresh":
            return t, {"token": step.token}, len(step.token) <= 16384
        stream = self.stream_of(step.stream, i)
        id_ok = 1 <= len(stream) <= 64 and all(
            c.isascii() and (c.isalnum() or c in "_-") for c in stream
        )
        if t == "cancel":
            return t, {"stream": stream}, id_ok
        seq = await self.seq_of(step.seq, stream)
        seq_ok = isinstance(seq, int) and 0 <= seq <= MAX_SEQ
        if t == "ack":
            return t, {"stream": stream, "seq": seq}, id_ok and seq_ok
        # resume
        ep = {"right": epoch, "forged": "forged-epoch", "bad": "bad epoch"}[step.epoch]
        h: Any = None
        h_ok = True
        h_right = step.h == "none" and seq == 0
        if step.h != "none":
            d = None
            if seq_ok and id_ok and step.h in ("right", "upper", "short"):
                d = await self.h.digest_at(stream, seq) if seq else seed(stream, epoch)
                h_right = d is not None and step.h in ("right", "upper")
            if d is None or step.h == "forged":
                d = secrets.token_bytes(16)
            if step.h == "short":
                d, h_ok = d[:8], False
            h = d
            if step.h == "upper":
                h, h_ok = (d.hex().upper(), False) if self.script.version == "v1" else (d, True)
        fields = {"stream": stream, "after": seq, "epoch": ep, "h": h}
        # the answer protocol §10 decides, in its order of checks
        meta = await self.h.app.store.meta(stream) if id_ok else None
        if step.epoch == "forged":
            want = {"gone:epoch"}
        elif meta is None or meta.owner != self.principal:
            want = {"gone:forbidden"}
        elif isinstance(seq, int) and seq > meta.head:
            # past the head: diverged, unless the run wrote that far meanwhile
            want = {"gone:diverged"} if meta.status != "running" else {"gone:diverged", "resumed"}
        elif not h_right:
            want = {"gone:diverged"}
        else:
            want = {"resumed"}
        self.resume_want = (stream, seq, want, len(self.frames))
        return t, fields, id_ok and seq_ok and h_ok and step.epoch != "bad"

    def twin(self, step: Step, i: int) -> None:
        ref = f"fixed:{self.stream_of(step.stream, i)}"
        then = {
            "read": (),
            "cancel": (Step("cancel", stream=ref),),
            "ack": (Step("ack", stream=ref, seq="head"),),
        }[step.agent]
        script = Script(
            step.req,
            "ok",
            ("batch", "zlib"),
            (Step("resume", stream=ref, seq=step.seq), *then),
            False,
            "close",
        )
        other = Fuzz(self.h, script)
        other.principal = self.principal
        if self.principal != "alice":  # the twin is alice: bob's streams are foreign to it
            script = Script(step.req, "ok", (), (), False, "close")
            other = Fuzz(self.h, script)
        self.log.append(f"twin {script}")
        self.twins.append(asyncio.get_running_loop().create_task(other.run()))

    async def send(self, data: bytes | str) -> None:
        assert self.ws is not None
        self.log.append(f"-> {data[:200]!r}")
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(data, text=True if isinstance(data, BadText) else None)

    async def expect_close(self, codes: set[int], why: str) -> None:
        assert self.reader is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), TIMEOUT)
        except TimeoutError:
            self.fail(f"{why}: expected a close {sorted(codes)}, the connection stayed open")
        self.h.seen[f"close {self.close_code}"] += 1
        if self.close_code not in codes:
            self.fail(
                f"{why}: closed {self.close_code} {self.close_reason!r}, expected {sorted(codes)}"
            )

    async def run(self) -> None:
        s = self.script
        sub = "unbroken.v2" if s.version == "v2" else "unbroken.v1"
        self.ws = await connect(
            self.h.url,
            subprotocols=[sub],
            max_size=None,
            ping_interval=None,  # type: ignore[list-item]
            open_timeout=TIMEOUT,
            close_timeout=2,
            compression=None,
        )
        if self.ws.subprotocol != sub:
            self.fail(f"subprotocol {self.ws.subprotocol}")
        self.reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self._run()
            if self.problem is not None:
                raise self.problem
            for twin in self.twins:
                await asyncio.wait_for(twin, TIMEOUT)
        finally:
            for twin in self.twins:
                twin.cancel()
            if s.end == "abort" or self.close_code is not None:
                self.ws.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), TIMEOUT)
            self.ws.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, TIMEOUT)

    async def _run(self) -> None:
        s = self.script
        v = s.version
        # -------- hello
        if s.hello == "none":
            if not s.steps:
                return
            step = s.steps[0]
            if step.kind == "hello" and not step.mutation:
                hello_ok = True  # the step is the hello
                await self.send(
                    encode_fields(v, "hello", {"token": "alice-token", "caps": list(s.caps)})
                )
                steps = s.steps[1:]
            else:
                # anything but a hello first is refused: 4001 (or the size/UTF-8/shape closes)
                await self.send_step(step, 0)
                await self.expect_close({4000, 4001, 1007, 1009}, "a first frame that is not hello")
                return
        elif s.hello == "mutated":
            await self.send(
                apply_mutation(
                    v, "hello", {"token": "alice-token", "caps": list(s.caps)}, "wrong_type", 5
                )
            )
            await self.expect_close({4000, 4001}, "a bad hello")
            return
        else:
            tok = {"ok": "alice-token", "bad_token": "junk", "bob": "bob-token"}[s.hello]
            self.principal = TOKENS.get(tok, "")
            await self.send(encode_fields(v, "hello", {"token": tok, "caps": list(s.caps)}))
            if s.hello == "bad_token":
                await self.expect_close({4002}, "a refused token")
                return
            hello_ok = True
            steps = s.steps
        assert hello_ok
        if not await self.wait_for(lambda: bool(self.epoch)):
            self.fail(f"no welcome: closed {self.close_code} {self.close_reason!r}")
        # -------- the steps
        for i, step in enumerate(steps):
            closes = await self.send_step(step, i)
            if closes:
                await self.expect_close(closes, f"step {i} {step}")
                return
            if self.close_code is not None or (self.reader is not None and self.reader.done()):
                self.fail(
                    f"closed {self.close_code} {self.close_reason!r} after a valid step {i} {step}"
                )
            if not s.pipelined:
                await self.settle(step)
        # -------- still served: a ping round trip
        n = 4242
        await self.send(encode_fields(v, "ping", {"n": n}))
        ok = await self.wait_for(lambda: any(tag(f) == "pong" and f.n == n for f in self.frames))
        if not ok:
            self.fail(f"no pong after valid frames: closed {self.close_code} {self.close_reason!r}")

    async def settle(self, step: Step) -> None:
        """Wait for a step's answer where it has one (a ping round trip otherwise)."""
        n = 7000 + len(self.frames)
        await self.send(encode_fields(self.script.version, "ping", {"n": n}))
        await self.wait_for(lambda: any(tag(f) == "pong" and f.n == n for f in self.frames))
        want, self.resume_want = self.resume_want, None
        if step.kind != "resume" or step.mutation or want is None or self.close_code is not None:
            return
        # the memory log answers a resume where it reads it: before the pong
        stream, after, allowed, start = want
        answers = [
            f for f in self.frames[start:] if tag(f) in ("gone", "resumed") and f.stream == stream
        ]
        if not answers:
            self.fail(f"no answer to the resume of {stream} before the pong")
        got = answers[-1]
        name = "resumed" if tag(got) == "resumed" else f"gone:{got.reason}"
        if name not in allowed:
            self.fail(f"resume of {stream} after {after} answered {got}, expected {allowed}")
        self.h.seen[f"resume {name}"] += 1
        if name == "resumed" and got.from_ != after:
            self.fail(f"resumed from {got.from_}, asked after {after}")

    async def send_step(self, step: Step, i: int) -> set[int] | None:
        """Send one step; the close codes it must get, or None when it is valid."""
        v = self.script.version
        if step.kind == "raw":
            data = step.raw
            if data in ("zlib-bomb", "zlib-raw"):
                bomb = zlib_bomb()
                data = msgspec.msgpack.encode([13, bomb]) if data == "zlib-bomb" else bomb
                await self.send(data)
                return {4000, 1009}
            await self.send(data)
            if v == "v1" and isinstance(data, bytes):
                return {4000}
            if v == "v2" and isinstance(data, str):
                return {4000}
            if v == "v1":
                try:
                    obj = json.loads(data)
                except ValueError:
                    return {4000}
                # a raw text that is by chance a valid frame: answered or refused
                return None if isinstance(obj, dict) and obj.get("t") == "ping" else {4000}
            return {4000, 1009}  # random bytes are almost never a valid v2 frame
        if step.kind == "twin":
            if step.mutation:  # no frame of its own to mutate: a bad ping
                step = Step("ping", seq="neg")
            else:
                self.twin(step, i)
                return None
        t, fields, valid = await self.fields_of(step, i)
        if step.mutation:
            data = apply_mutation(v, t, fields, step.mutation, step.wrong)
            await self.send(data)
            size = len(data.encode() if isinstance(data, str) else data)
            if size > MAX_CLIENT_FRAME:
                return {1009}
            if step.mutation == "bad_utf8":
                return {1007} if v == "v1" else {4000}
            return {4000}
        await self.send(encode_fields(v, t, fields))
        if not valid:
            return {4000, 1009}
        if t == "hello":
            return {4000}  # a second hello
        if t == "refresh" and step.token in TOKENS and TOKENS[step.token] != self.principal:
            return {4003}  # another principal's token never takes over
        return None


# ------------------------------------------------------------------ HTTP
#: statuses the HTTP transport documents (docs/reference/http-streams.md); never 500
HTTP_STATUSES = {200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 410, 413, 429, 503}


@dataclass(frozen=True)
class HttpReq:
    method: str
    target: str  # agent ui-ai ui-ag stream healthz other
    ref: str  # a STREAM_REFS entry, or a byte stream name
    offset: str
    live: str
    twice: bool
    auth: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


OFFSETS = ["none", "-1", "now", "valid", "forged", "past", "junk", "empty", "neg", "huge", "upper"]
junk_header = st.sampled_from(
    [
        "",
        "-1",
        "0",
        "1",
        "99999999999999999999",
        "abc",
        "true",
        "1e9",
        "\u00ff",
        "0000000000000000_x",
    ]
)
http_reqs = st.builds(
    HttpReq,
    method=st.sampled_from(
        ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    ),
    target=st.sampled_from(
        ["agent", "agent", "agent", "ui-ai", "ui-ag", "stream", "stream", "healthz"]
    ),
    ref=st.sampled_from([*STREAM_REFS, "s1", "s2", "%00", "..", "a" * 300]),
    offset=st.sampled_from(OFFSETS),
    live=st.sampled_from(["", "", "long-poll", "sse", "junk"]),
    twice=st.booleans(),
    auth=st.sampled_from(["alice", "alice", "bob", "canary", "junk", "none", "basic", "huge"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Content-Type",
                    "Stream-TTL",
                    "Stream-Expires-At",
                    "Stream-Seq",
                    "Stream-Closed",
                    "Producer-Id",
                    "Producer-Epoch",
                    "Producer-Seq",
                    "Stream-Forked-From",
                    "Stream-Fork-Offset",
                    "Stream-Fork-Sub-Offset",
                    "If-None-Match",
                    "Last-Event-ID",
                    "Origin",
                    "Range",
                    "Stream-SSE-Data-Encoding",
                ]
            ),
            st.one_of(junk_header, st.sampled_from(["application/json", "text/plain", "s1", "s2"])),
        ),
        max_size=4,
    ).map(tuple),
    body=st.one_of(
        st.just(b""),
        st.binary(max_size=64),
        json_value.map(lambda v: json.dumps(v).encode()),
        st.just(b"[" * 3000 + b"]" * 3000),
        st.just(b"[]"),
    ),
)


async def http_one(h: Harness, client: httpx.AsyncClient, r: HttpReq, i: int) -> str:
    """Send one request; '' if its answer is a documented one, else what is wrong."""
    f = Fuzz(h, Script("v1", "ok", (), (), False, "close"))
    stream = f.stream_of(r.ref, i) if r.ref in STREAM_REFS else r.ref
    base = {
        "agent": "/v1/agent/",
        "ui-ai": "/v1/ui/ai-sdk/",
        "ui-ag": "/v1/ui/ag-ui/",
        "stream": "/v1/stream/",
        "healthz": "/healthz",
    }[r.target]
    path = (
        base
        if r.target == "healthz"
        else base + (stream if r.ref == "%00" else quote(stream, safe=""))
    )
    head, _digest = await h.head_of(stream) if r.ref in STREAM_REFS else (0, b"")
    k = min(head, 1 + i % max(1, head)) if head else 0
    d = await h.digest_at(stream, k) if head else None
    offset = {
        "none": None,
        "-1": "-1",
        "now": "now",
        "valid": f"{k:016d}_{(d or b'').hex()}",
        "forged": f"{k:016d}_{secrets.token_hex(16)}",
        "past": f"{head + 5:016d}_{secrets.token_hex(16)}",
        "junk": "zz_top",
        "empty": "",
        "neg": "-0000000000000005_" + "0" * 32,
        "huge": f"{2**64:020d}_" + "0" * 32,
        "upper": f"{k:016d}_{(d or b'').hex().upper()}",
    }[r.offset]
    params: list[tuple[str, str]] = []
    if offset is not None:
        params.append(("offset", offset))
        if r.twice:
            params.append(("offset", "-1"))
    if r.live:
        params.append(("live", r.live))
    headers: dict[str, Any] = {k: v.encode("latin-1") for k, v in r.headers}
    auth = {
        "alice": "Bearer alice-token",
        "bob": "Bearer bob-token",
        "canary": "Bearer canary-token",
        "junk": "Bearer junk",
        "basic": "Basic YTpi",
        "huge": "Bearer " + "x" * 20000,
        "none": None,
    }[r.auth]
    if auth is not None:
        headers["Authorization"] = auth
    try:
        req = client.build_request(
            r.method, path, params=params, headers=headers, content=r.body or None
        )
        resp = await client.send(req, stream=True)
        try:
            status = resp.status_code
            # read a little of a body (an SSE response goes on for a minute)
            got = 0
            async with asyncio.timeout(0.5 if r.live else 5):
                async for chunk in resp.aiter_raw():
                    got += len(chunk)
                    if got > 200_000 or resp.headers.get("content-type", "").startswith(
                        "text/event-stream"
                    ):
                        break
        finally:
            await resp.aclose()
    except TimeoutError:
        if r.live in ("long-poll", "sse"):
            return ""  # a live read waits: fine
        return f"{r}: no answer within 5 s"
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.ReadTimeout) and r.live in ("long-poll", "sse"):
            return ""  # a long-poll answers after up to 15 s (found in a long run)
        if r.auth == "huge":
            return ""  # h11 refuses a 20 KB header line: the server closes
        return f"{r}: {exc!r}"
    if status not in HTTP_STATUSES:
        return f"{r} -> {status} {path} {params}"
    return ""
