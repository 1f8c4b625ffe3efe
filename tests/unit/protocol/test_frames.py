"""Frames: round trips, strict decoding, the compact ``events`` items, negotiation."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unbroken.errors import ProtocolError
from unbroken.protocol import digest, frames
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.events import Event, Kind, chunk, end, part_end, part_start
from unbroken.protocol.frames import (
    DataItem,
    EndItem,
    Events,
    JsonItem,
    PartEndItem,
    PartStartItem,
    TextItem,
    decode_client,
    decode_server,
    encode,
    encode_events_frame,
    encode_items,
    events_of,
    negotiate_subprotocol,
)

from .strategies import (
    EPOCH,
    STREAM,
    client_frames,
    encode_frames,
    server_frames,
    splits,
    streams,
)

H0 = "0" * 32
# The three decoder properties below run 4,500 + 4,000 + 1,500 = 10,000 examples.
FUZZ = settings(
    max_examples=4000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Their work is a fixed number of examples, not a time: 37-55 s each at load 12-15 on
# 2 cores, so the suite's 60 s pytest-timeout cut them mid-example under heavier load
# (seen as a flake: Timeout, or Hypothesis' FlakyStrategyDefinition / KeyError when
# the timeout's signal lands inside Hypothesis). The timeout is there for hangs only.
FUZZ_TIMEOUT = pytest.mark.timeout(900)


# ------------------------------------------------------------------ round trips
@settings(max_examples=300, deadline=None)
@given(client_frames)
def test_every_client_frame_round_trips(frame: frames.ClientFrame) -> None:
    wire = encode(frame)
    assert decode_client(wire) == frame
    assert decode_client(wire.decode()) == frame


@settings(max_examples=300, deadline=None)
@given(server_frames)
def test_every_server_frame_round_trips(frame: frames.ServerFrame) -> None:
    wire = encode(frame)
    assert decode_server(wire) == frame
    assert decode_server(wire.decode()) == frame


def test_events_frame_carries_every_item_form() -> None:
    schema = '{"type":"object"}'
    items: list[frames.Item] = [
        PartStartItem("answer", "text", mime="text/markdown", schema=schema),
        "bare chunk of answer",
        TextItem("other", "explicit text"),
        JsonItem("j", '{"a":'),
        DataItem("d", "AAEC"),
        PartEndItem("j", err="schema: missing 'a'"),
        EndItem("failed", 7, err="boom"),
    ]
    frame = Events(stream=STREAM, seq=1, items=items, h="ab" * 16)
    wire = encode(frame)
    assert decode_server(wire) == frame
    assert json.loads(wire)["items"] == [
        {
            "k": "part_start",
            "p": "answer",
            "pk": "text",
            "mime": "text/markdown",
            "schema": schema,
        },
        "bare chunk of answer",
        {"k": "text", "p": "other", "d": "explicit text"},
        {"k": "json", "p": "j", "d": '{"a":'},
        {"k": "data", "p": "d", "d": "AAEC"},
        {"k": "part_end", "p": "j", "err": "schema: missing 'a'"},
        {"k": "end", "st": "failed", "n": 7, "err": "boom"},
    ]


def test_resumed_uses_from_on_the_wire() -> None:
    wire = encode(frames.Resumed(stream="s", from_=3, head=9))
    assert json.loads(wire) == {"t": "resumed", "stream": "s", "from": 3, "head": 9}


def test_defaults_are_omitted_on_the_wire() -> None:
    assert encode(frames.Hello()) == b'{"t":"hello"}'
    assert encode(frames.Hb()) == b'{"t":"hb"}'
    assert encode(frames.Start(req="r", agent="a")) == b'{"t":"start","req":"r","agent":"a"}'


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = decode_client(b'{"t":"ack","stream":"abc","seq":3,"future":{"x":[1]}}')
    assert frame == frames.Ack(stream="abc", seq=3)


# ------------------------------------------------------------------ events <-> items
def test_chunks_of_the_current_part_are_bare_strings() -> None:
    events = [
        part_start(1, "text", "text"),
        chunk(2, Kind.TEXT, "text", "Hel"),
        chunk(3, Kind.TEXT, "text", "lo"),
        part_end(4, "text"),
        end(5, "completed"),
    ]
    assert encode_items(events) == (
        b'[{"k":"part_start","p":"text","pk":"text"},"Hel","lo",'
        b'{"k":"part_end","p":"text"},{"k":"end","st":"completed","n":5}]'
    )


def test_a_frame_starting_mid_part_names_the_part_once() -> None:
    events = [chunk(7, Kind.JSON, "j", "[1,"), chunk(8, Kind.JSON, "j", "2]")]
    assert encode_items(events) == b'[{"k":"json","p":"j","d":"[1,"},"2]"]'


def test_switching_parts_makes_the_next_chunk_explicit() -> None:
    events = [
        chunk(1, Kind.TEXT, "a", "x"),
        chunk(2, Kind.DATA, "b", "y"),
        chunk(3, Kind.TEXT, "a", "z"),
        chunk(4, Kind.TEXT, "a", "w"),
    ]
    assert encode_items(events) == (
        b'[{"k":"text","p":"a","d":"x"},{"k":"data","p":"b","d":"y"},'
        b'{"k":"text","p":"a","d":"z"},"w"]'
    )


def test_a_chunk_of_another_kind_in_the_same_part_is_never_bare() -> None:
    # A malformed sequence must not be silently turned into a different one.
    events = [chunk(1, Kind.TEXT, "p", "x"), chunk(2, Kind.JSON, "p", "y")]
    items = json.loads(encode_items(events))
    assert items[1] == {"k": "json", "p": "p", "d": "y"}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_items_round_trip_for_any_stream_and_any_framing(data: st.DataObject) -> None:
    events = data.draw(streams())
    batches = data.draw(splits(events))
    kinds: dict[str, str] = {}
    decoded: list[Event] = []
    for wire in encode_frames(batches):
        frame = decode_server(wire)
        assert isinstance(frame, Events)
        decoded += events_of(frame, kinds)
    assert decoded == events


def _events_frame(items: str, seq: int = 1) -> Events:
    frame = decode_server(f'{{"t":"events","stream":"s","seq":{seq},"items":{items},"h":"{H0}"}}')
    assert isinstance(frame, Events)
    return frame


@pytest.mark.parametrize(
    "items",
    [
        '["orphan"]',
        '[{"k":"text","p":"t","d":"x"},{"k":"part_end","p":"t"},"after end"]',
        '[{"k":"part_start","p":"t","pk":"json"},{"k":"text","p":"t","d":"x"}]',
        '[{"k":"end","st":"completed","n":1},"x"]',
        '[{"k":"end","st":"completed","n":1},{"k":"end","st":"completed","n":2}]',
        '[{"k":"text","p":"t","d":"x"},{"k":"end","st":"completed","n":9}]',
    ],
    ids=[
        "bare-chunk-without-part",
        "bare-chunk-after-part-end",
        "text-chunk-in-json-part",
        "events-after-end",
        "two-ends",
        "end-count-not-its-seq",
    ],
)
def test_events_of_rejects_items_that_are_not_valid_events(items: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        events_of(_events_frame(items))
    assert exc.value.close_code == CloseCode.BAD_FRAME


def test_events_of_checks_chunk_kinds_against_parts_started_in_earlier_frames() -> None:
    kinds: dict[str, str] = {}
    events_of(_events_frame('[{"k":"part_start","p":"j","pk":"json"}]'), kinds)
    assert kinds == {"j": "json"}
    with pytest.raises(ProtocolError):
        events_of(_events_frame('[{"k":"data","p":"j","d":"x"}]', seq=2), kinds)


def test_events_of_numbers_events_from_the_frame_seq() -> None:
    out = events_of(_events_frame('[{"k":"text","p":"t","d":"a"},"b","c"]', seq=41))
    assert [(e.seq, e.kind, e.part, e.body) for e in out] == [
        (41, Kind.TEXT, "t", "a"),
        (42, Kind.TEXT, "t", "b"),
        (43, Kind.TEXT, "t", "c"),
    ]


def test_encode_events_frame_is_a_valid_events_frame() -> None:
    events = [chunk(1, Kind.TEXT, "text", "hi")]
    h = digest.chain(STREAM, EPOCH, events)[-1]
    wire = encode_events_frame(STREAM, 1, encode_items(events), h)
    assert decode_server(wire) == Events(
        stream=STREAM, seq=1, items=[TextItem("text", "hi")], h=h.hex()
    )
    assert encode(decode_server(wire)) == wire


# ------------------------------------------------------------------ strict decoding
VALID = [
    b'{"t":"hello","caps":["x"],"token":"tok"}',
    b'{"t":"start","req":"r-1","agent":"echo","input":{"q":[1,2,{"z":null}]}}',
    b'{"t":"resume","stream":"abc","after":5,"epoch":"e1","h":"' + b"0f" * 16 + b'"}',
    b'{"t":"ack","stream":"abc","seq":9}',
    b'{"t":"cancel","stream":"abc"}',
    b'{"t":"refresh","token":"t2"}',
    b'{"t":"ping","n":3}',
    b'{"t":"welcome","session":"s","heartbeat_ms":1000,"epoch":"e","limits":{"window":9}}',
    b'{"t":"started","req":"r","stream":"abc","epoch":"e"}',
    b'{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":"json",'
    b'"mime":"m","schema":"{}"},"x",{"k":"data","p":"d","d":"y"},{"k":"part_end","p":"t",'
    b'"err":"e"},{"k":"end","st":"completed","n":5}],"h":"' + b"ab" * 16 + b'"}',
    b'{"t":"resumed","stream":"abc","from":2,"head":7,"status":"running"}',
    b'{"t":"gone","stream":"abc","reason":"epoch","message":"m"}',
    b'{"t":"error","code":"overloaded","retry_after_ms":100,"stream":"abc","req":"r"}',
    b'{"t":"hb"}',
    b'{"t":"pong","n":3}',
]


def _only_protocol_errors(data: bytes | str) -> None:
    """Both decoders either decode ``data`` or raise ProtocolError with a close code."""
    for decode in (decode_client, decode_server):
        try:
            frame = decode(data)
        except ProtocolError as exc:
            assert exc.close_code in (
                CloseCode.BAD_FRAME,
                CloseCode.TOO_BIG,
                CloseCode.INVALID_DATA,
            )
            assert str(exc).isprintable() and len(str(exc)) <= frames.MAX_ERROR_TEXT
        else:
            assert isinstance(frame, msgspec.Struct)
            assert decode(encode(frame)) == frame  # what decodes re-encodes to the same


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame with a few bytes flipped, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert" or i == len(data):
            data[i:i] = draw(st.binary(min_size=1, max_size=3))
        elif op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        else:
            del data[i]
    return bytes(data)


@FUZZ_TIMEOUT
@settings(FUZZ, max_examples=4500)
@given(st.binary(max_size=200) | mutated())
def test_decoders_given_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    _only_protocol_errors(data)


@FUZZ_TIMEOUT
@FUZZ
@given(st.text(max_size=200) | mutated().map(lambda b: b.decode("utf-8", "replace")))
def test_decoders_given_arbitrary_text_raise_only_protocol_error(data: str) -> None:
    _only_protocol_errors(data)


TAGS = [
    "hello",
    "start",
    "resume",
    "ack",
    "cancel",
    "refresh",
    "ping",
    "welcome",
    "started",
    "events",
    "resumed",
    "resync",
    "gone",
    "error",
    "hb",
    "pong",
    "subscribe",
]
FIELDS = [
    "caps",
    "token",
    "req",
    "agent",
    "input",
    "stream",
    "after",
    "epoch",
    "h",
    "seq",
    "n",
    "session",
    "heartbeat_ms",
    "limits",
    "items",
    "from",
    "head",
    "status",
    "reason",
    "message",
    "code",
    "retry_after_ms",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["abc", "e", "0f" * 16, "text", "completed", "epoch", "t", "json"])
)
json_values = st.recursive(
    scalars,
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.sampled_from(["k", "p", "d", "pk", "st", "n", "err"]) | st.text(), c)
    ),
    max_leaves=5,
)
frame_like = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(TAGS) | scalars,
    st.dictionaries(st.sampled_from(FIELDS), scalars | json_values, max_size=4),
)


@FUZZ_TIMEOUT
@settings(FUZZ, max_examples=1500)
@given(json_values | frame_like)
def test_decoders_given_arbitrary_json_values_raise_only_protocol_error(value: object) -> None:
    _only_protocol_errors(json.dumps(value))


@pytest.mark.parametrize("decode", [decode_client, decode_server])
def test_oversized_frame_closes_with_1009(decode: object) -> None:
    frame = b'{"t":"hb","pad":"' + b"x" * 100 + b'"}'
    with pytest.raises(ProtocolError) as exc:
        decode(frame, 64)  # type: ignore[operator]
    assert exc.value.close_code == 1009  # CloseCode.TOO_BIG


def test_frame_size_is_counted_in_utf8_bytes_not_characters() -> None:
    text = '{"t":"hello","token":"' + "é" * 40 + '"}'  # 64 characters, 104 bytes
    assert len(text) == 64
    with pytest.raises(ProtocolError) as exc:
        decode_client(text, 64)
    assert exc.value.close_code == 1009
    assert decode_client(text, 104) == frames.Hello(token="é" * 40)


def test_frame_at_exactly_the_limit_is_accepted() -> None:
    frame = b'{"t":"ping","n":1}'
    assert decode_client(frame, len(frame)) == frames.Ping(n=1)


@pytest.mark.parametrize(
    "data",
    [
        b'{"t":"hello","token":"\xff"}',
        b'{"t":"hello","token":"\xc3"}',
        b'{"t":"hello","token":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"t":"hello","ignored":"\x80"}',  # in a field the decoder skips
        b"\xfe\xff",
    ],
)
def test_bad_utf8_closes_1007_as_rfc_6455_says(data: bytes) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode_client(data)
    assert exc.value.close_code == CloseCode.INVALID_DATA == 1007


@pytest.mark.parametrize(
    "data",
    [
        '{"t":"cancel","stream":"abc\\n"}',
        '{"t":"ack","stream":"abc","seq":1,"stream":"a b"}',
        '{"t":"resume","stream":"abc","after":1,"epoch":"e\\n","h":"' + "0" * 32 + '"}',
        '{"t":"resume","stream":"abc","after":1,"epoch":"e","h":"' + "0" * 32 + '\\n"}',
        '{"t":"start","req":"r\\n","agent":"a"}',
        '{"t":"start","req":"r","agent":"a\\n"}',
    ],
)
def test_identifiers_with_a_trailing_newline_are_rejected(data: str) -> None:
    with pytest.raises(ProtocolError):
        decode_client(data)


def test_part_start_with_nul_in_mime_is_rejected() -> None:
    # Otherwise mime "a\0b" + schema "" and mime "a" + schema "b\0"... would share a digest.
    with pytest.raises(ProtocolError):
        _events_frame('[{"k":"part_start","p":"t","pk":"text","mime":"a\\u0000b"}]')


def test_welcome_limits_must_be_positive() -> None:
    with pytest.raises(ProtocolError):
        decode_server(
            '{"t":"welcome","session":"s","heartbeat_ms":1,"epoch":"e","limits":{"window":0}}'
        )


def test_nesting_too_deep_is_a_protocol_error() -> None:
    deep = '{"t":"start","req":"r","agent":"a","input":' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(ProtocolError):
        decode_client(deep)


# ------------------------------------------------------------------ negotiation
def test_negotiation_picks_v1_from_a_list_that_offers_it() -> None:
    assert negotiate_subprotocol(["unbroken.v2", "unbroken.v1"]) == "unbroken.v1"
    assert negotiate_subprotocol(("unbroken.v1",)) == "unbroken.v1"


def test_negotiation_without_a_common_version_is_none() -> None:
    assert negotiate_subprotocol(["unbroken.v2", "chat"]) is None
    assert negotiate_subprotocol([]) is None


# ------------------------------------------------------------------ hostile input (issue 13)
FORGED = '{"t":"q\\nINFO: hello conn=FORGED principal=root"}'


def test_an_unknown_frame_type_is_escaped_in_the_error_text() -> None:
    """The first frame a peer sends goes into the log as the close reason: a raw
    newline in ``t`` must not start a forged log line."""
    with pytest.raises(ProtocolError) as exc:
        decode_client(FORGED)
    text = str(exc.value)
    assert "\n" not in text
    assert "q\\nINFO: hello" in text  # still readable: the value, escaped


@pytest.mark.parametrize(
    "frame",
    [
        '{"t":"' + "x" * 20_000 + '"}',  # a huge unknown type
        '{"t":"\\u001b[31mred\\u2028\\u202eevil\\r\\t"}',  # ANSI escape, separators, bidi
        '{"t":"hello","caps":"\\u0000\\n"}',
        '{"t":"ping","t":"\\n"}',
    ],
)
def test_error_text_is_printable_and_bounded(frame: str) -> None:
    for decode in (decode_client, decode_server):
        with pytest.raises(ProtocolError) as exc:
            decode(frame)
        text = str(exc.value)
        assert text.isprintable(), text
        assert len(text) <= frames.MAX_ERROR_TEXT


@pytest.mark.full  # the three fuzz tests above check the same on every ProtocolError
@FUZZ_TIMEOUT
@FUZZ
@given(frame_like.map(json.dumps) | st.text(max_size=300))
def test_every_error_text_is_one_printable_bounded_line(data: str) -> None:
    for decode in (decode_client, decode_server):
        try:
            decode(data)
        except ProtocolError as exc:
            assert str(exc).isprintable()
            assert len(str(exc)) <= frames.MAX_ERROR_TEXT


def test_excerpt_escapes_what_is_not_printable_and_cuts_long_text() -> None:
    assert frames.excerpt("plain text") == "plain text"
    assert frames.excerpt("a\nb\r\x1b\u2028\u202e") == "a\\nb\\r\\x1b\\u2028\\u202e"
    cut = frames.excerpt("é" * 500, 50)
    assert len(cut) == 50 and cut.endswith("…")


@pytest.mark.parametrize(
    "frame",
    [
        '{"t":"ack","stream":"abc","seq":1,"seq":2}',
        '{"t":"ack","stream":"abc","seq":1,"seq":1}',  # even when equal
        '{"t":"ping","t":"ping"}',
        '{"t":"hello","token":"a","token":"b"}',
        '{"t":"start","req":"r","agent":"a","input":{"x":1,"x":2}}',  # anywhere in the frame
        '{"t":"start","req":"r","agent":"a","input":[{"y":[{"x":1,"x":2}]}]}',
        '{"t":"ack","stream":"abc","seq":1,"future":1,"future":2}',  # unknown fields too
    ],
)
def test_a_client_frame_with_a_duplicate_key_is_a_bad_frame(frame: str) -> None:
    for data in (frame, frame.encode()):
        with pytest.raises(ProtocolError) as exc:
            decode_client(data)
        assert exc.value.close_code == CloseCode.BAD_FRAME
        assert "duplicate key" in str(exc.value)


def test_keys_that_differ_only_in_escaping_are_duplicates() -> None:
    with pytest.raises(ProtocolError, match="duplicate key"):
        decode_client('{"t":"ack","stream":"abc","seq":1,"s\\u0065q":2}')


def test_the_same_key_in_different_objects_is_fine() -> None:
    frame = decode_client('{"t":"start","req":"r","agent":"a","input":{"x":{"x":1},"y":[{"x":2}]}}')
    assert frame == frames.Start(req="r", agent="a", input={"x": {"x": 1}, "y": [{"x": 2}]})


def test_peek_type_reads_the_type_without_decoding_the_body() -> None:
    import tracemalloc

    body = "[" + ",".join(["[]"] * 200_000) + "]"  # 600 KB that decodes to 200k lists
    frame = ('{"t":"start","req":"r","agent":"a","input":' + body + "}").encode()
    tracemalloc.start()
    try:
        assert frames.peek_type(frame) == "start"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # a full decode allocates ~10 MB here
    assert frames.peek_type('{"caps":[],"t":"hello"}') == "hello"
    with pytest.raises(ProtocolError) as exc:
        frames.peek_type('{"t":"start",')
    assert exc.value.close_code == CloseCode.BAD_FRAME
    with pytest.raises(ProtocolError):
        frames.peek_type('{"type":"hello"}')
    with pytest.raises(ProtocolError) as exc:
        frames.peek_type("x" * 100, 64)
    assert exc.value.close_code == CloseCode.TOO_BIG


def test_welcome_limits_carry_the_client_frame_limit() -> None:
    assert frames.Limits().max_client_frame == frames.DEFAULT_MAX_CLIENT_FRAME == 1024 * 1024
    assert encode(frames.Limits()) == b"{}"  # the default is omitted on the wire
    welcome = decode_server(
        '{"t":"welcome","session":"s","heartbeat_ms":1,"epoch":"e",'
        '"limits":{"max_client_frame":65536}}'
    )
    assert isinstance(welcome, frames.Welcome)
    assert welcome.limits.max_client_frame == 65536
