"""Protocol v2 (pure): v1 and v2 encodings of the same events round-trip to the same
events and digests (Hypothesis), handles and the carried current part, the short h,
and bad v2 input refused with its close code."""

from __future__ import annotations

import zlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.errors import ChainMismatch, IntegrityError, ProtocolError
from unbroken.protocol import digest, frames, frames_v2
from unbroken.protocol.client_session import ClientSession, StreamEvents
from unbroken.protocol.events import Event, Kind
from unbroken.protocol.frames import Events, Started, Welcome
from unbroken.protocol.frames_v2 import ClientCodec, EventsV2, ServerCodec
from unbroken.protocol.items import PartEndItem2
from unbroken.protocol.items import decode as decode_items
from unbroken.protocol.server_session import ServerSession

from .strategies import EPOCH, STREAM, client_frames, server_frames, splits, streams


def _v2_frames(batches: list[list[Event]], codec: ServerCodec) -> list[bytes]:
    """What a v2 server sends for these batches: through the v1 items the stores keep."""
    h = digest.seed(STREAM, EPOCH)
    out = []
    for batch in batches:
        for ev in batch:
            h = digest.step_event(h, ev)
        items = frames.encode_items(batch)
        out.append(codec.events(STREAM, batch[0].seq, items, h, int(batch[-1].kind)))
    return out


def _v1_frames(batches: list[list[Event]]) -> list[bytes]:
    h = digest.seed(STREAM, EPOCH)
    out = []
    for batch in batches:
        for ev in batch:
            h = digest.step_event(h, ev)
        out.append(frames.encode_events_frame(STREAM, batch[0].seq, frames.encode_items(batch), h))
    return out


def _session(version: str) -> tuple[ClientSession, ServerCodec | None]:
    """A client session that started one stream and got ``started`` (v2: handle 0)."""
    cs = ClientSession()
    codec = ServerCodec() if version == "v2" else None
    cs.connect(version=version)
    welcome = Welcome(session="s", heartbeat_ms=400, epoch=EPOCH)
    cs.receive(codec.encode(welcome) if codec else frames.encode(welcome))
    cs.start("r1", "a", None)
    started = Started("r1", STREAM, EPOCH)
    cs.receive(codec.encode(started) if codec else frames.encode(started))
    return cs, codec


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_v1_and_v2_give_the_same_events_and_digests(data: st.DataObject) -> None:
    evs = data.draw(streams())
    batches = data.draw(splits(evs))
    got: dict[str, tuple[list[Event], list[bytes]]] = {}
    for version in ("v1", "v2"):
        cs, codec = _session(version)
        wire = _v2_frames(batches, codec) if codec is not None else _v1_frames(batches)
        events: list[Event] = []
        digests: list[bytes] = []
        for msg in wire:
            if version == "v2":
                assert isinstance(msg, bytes) and msg[1] == frames_v2.T_EVENTS
            out = cs.receive(msg)
            assert isinstance(out, StreamEvents)
            events += out.events
            digests.append(out.digest)
        got[version] = (events, digests)
    assert got["v1"] == got["v2"]
    assert got["v2"][0] == evs
    assert got["v2"][1][-1] == digest.chain(STREAM, EPOCH, evs)[-1]


@settings(max_examples=80, deadline=None)
@given(frame=client_frames)
def test_client_frames_round_trip_through_v2(frame: frames.ClientFrame) -> None:
    wire = frames_v2.encode_client(frame)
    assert frames_v2.decode_client(wire, 1 << 22) == frame


@settings(max_examples=80, deadline=None)
@given(frame=server_frames)
def test_server_frames_round_trip_through_v2(frame: frames.ServerFrame) -> None:
    if isinstance(frame, Events):
        return  # events go by handle: test_v1_and_v2_give_the_same_events_and_digests
    wire = ServerCodec().encode(frame)
    assert ClientCodec().decode(wire, 1 << 22) == frame


def test_the_current_part_carries_from_frame_to_frame() -> None:
    codec = ServerCodec()
    codec.encode(Started("r1", STREAM, EPOCH))
    evs = [
        Event(1, Kind.PART_START, part="t", part_kind="text"),
        Event(2, Kind.TEXT, part="t", body="a"),
        Event(3, Kind.TEXT, part="t", body="b"),
    ]
    _, second = _v2_frames([evs[:2], evs[2:]], codec)
    assert msgspec.msgpack.decode(second)[3] == ["b"]  # bare: the part carried over
    # resumed on the connection: a fresh handle, and nothing carried
    codec.encode(frames.Resumed(STREAM, 2, 3))
    (again,) = _v2_frames([evs[2:]], codec)
    assert msgspec.msgpack.decode(again)[1] == 1
    assert msgspec.msgpack.decode(again)[3] == [[1, "t", "b"]]
    # a bare chunk with nothing carried is refused
    with pytest.raises(ProtocolError, match="bare chunk with no current part"):
        decode_items(3, ["b"], {}, ["", None])


def test_h_is_8_bytes_until_the_frame_that_ends_the_stream() -> None:
    cs, codec = _session("v2")
    assert codec is not None
    evs = [
        Event(1, Kind.PART_START, part="t", part_kind="text"),
        Event(2, Kind.TEXT, part="t", body="a"),
        Event(3, Kind.PART_END, part="t"),
        Event(4, Kind.END, status="completed", count=4),
    ]
    a, b = _v2_frames([evs[:2], evs[2:]], codec)
    assert len(msgspec.msgpack.decode(a)[4]) == 8
    assert len(msgspec.msgpack.decode(b)[4]) == 16
    cs.receive(a)
    out = cs.receive(b)
    assert isinstance(out, StreamEvents) and out.digest == digest.chain(STREAM, EPOCH, evs)[-1]


def test_a_short_h_that_is_wrong_is_an_integrity_error() -> None:
    cs, codec = _session("v2")
    assert codec is not None
    (good,) = _v2_frames([[Event(1, Kind.PART_START, part="t", part_kind="text")]], codec)
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(IntegrityError):
        cs.receive(bytes(bad))


def test_end_with_a_short_h_is_refused() -> None:
    cs, _ = _session("v2")
    h = digest.chain(STREAM, EPOCH, [Event(1, Kind.END, status="completed", count=1)])[-1]
    wire = frames_v2.encode_events(0, 1, [[6, "completed", 1]], h, final=False)
    with pytest.raises(ProtocolError, match="all 16 bytes"):
        cs.receive(wire)


def test_a_digest_prefix_check_needs_8_bytes() -> None:
    chain = digest.ChainVerifier(STREAM, EPOCH)
    ev = Event(1, Kind.PART_START, part="t", part_kind="text")
    with pytest.raises(ChainMismatch):
        chain.extend([ev], b"")
    h = digest.chain(STREAM, EPOCH, [ev])[-1]
    chain.extend([ev], h[:8])


def test_events_for_an_unknown_handle_close_4000() -> None:
    cs, _ = _session("v2")
    wire = frames_v2.encode_events(7, 1, [[1, "t", "x"]], b"\0" * 16, final=False)
    with pytest.raises(ProtocolError, match="unknown stream handle 7") as info:
        cs.receive(wire)
    assert info.value.close_code == 4000


def test_the_server_session_refuses_bad_v2_input() -> None:
    s = ServerSession(max_frame=4096, max_hello_frame=1024, version="v2")
    with pytest.raises(ProtocolError, match="text frames") as info:
        s.receive('{"t":"hello"}')
    assert info.value.close_code == 4000
    s = ServerSession(max_frame=4096, max_hello_frame=1024, version="v2")
    with pytest.raises(ProtocolError, match="first frame must be hello") as info:
        s.receive(frames_v2.encode_client(frames.Ping(3)))
    assert info.value.close_code == 4001
    s = ServerSession(max_frame=4096, max_hello_frame=1024, version="v2")
    with pytest.raises(ProtocolError) as info:
        s.receive(frames_v2.encode_client(frames.Hello(token="x" * 2000)))
    assert info.value.close_code == 1009
    s = ServerSession(max_frame=4096, max_hello_frame=1024, version="v2")
    assert isinstance(s.receive(frames_v2.encode_client(frames.Hello())), frames.Hello)
    with pytest.raises(ProtocolError, match="hello sent twice"):
        s.receive(frames_v2.encode_client(frames.Hello()))
    for bad in (b"\x91\x63", b"\xc1", msgspec.msgpack.encode([19, "s", "nine"])):
        with pytest.raises(ProtocolError) as info:
            s.receive(bad)
        assert info.value.close_code == 4000


def test_events_v2_is_decoded_to_its_struct() -> None:
    h = b"\x01" * 8
    wire = frames_v2.encode_events(0, 5, ["x", [5, "t"]], h, final=False)
    f = ClientCodec().decode(wire, 1024)
    assert f == EventsV2(0, 5, ["x", PartEndItem2("t")], h)


def test_a_stale_read_of_a_reattached_stream_leaves_the_new_attachment_alone() -> None:
    codec = ServerCodec()
    codec.encode(Started("r1", STREAM, EPOCH))
    old = codec.attached(STREAM)
    h = digest.seed(STREAM, EPOCH)
    start = frames.encode_items([Event(1, Kind.PART_START, part="t", part_kind="text")])
    codec.events(STREAM, 1, start, h, int(Kind.PART_START), old)
    codec.encode(frames.Resumed(STREAM, 1, 3))  # attached again while a read was out
    new = codec.attached(STREAM)
    assert new == [1, None] and old[0] == 0
    chunk = frames.encode_items([Event(2, Kind.TEXT, part="t", body="x")])
    stale = codec.events(STREAM, 2, chunk, h, int(Kind.TEXT), old)  # dropped by the server
    assert msgspec.msgpack.decode(stale)[1:4] == [0, 2, ["x"]]
    assert new == [1, None]
    fresh = codec.events(STREAM, 2, chunk, h, int(Kind.TEXT), new)
    assert msgspec.msgpack.decode(fresh)[1:4] == [1, 2, [[1, "t", "x"]]]


def test_zlib_frames_inflate_to_the_message_and_are_bounded() -> None:
    codec = ServerCodec()
    big = frames_v2.encode_events(0, 1, ["token " * 10] * 200, b"\0" * 8, final=False)
    packed = codec.compress(big)
    assert packed[:2] == bytes((0x92, frames_v2.T_ZLIB)) and len(packed) < len(big) // 5
    assert ClientCodec.split(packed, 1 << 20, inflate=True) == [big]
    # a batch inside is split as usual
    batch = codec.batch([big, frames_v2.encode_server(frames.Hb())])
    assert ClientCodec.split(codec.compress(batch), 1 << 20, inflate=True)[1] == b"\x91\x08"
    # small or incompressible messages go as they are
    assert codec.compress(b"\x91\x08") == b"\x91\x08"
    cases = [
        (packed, 1 << 20, False, 4000, "without the zlib cap"),
        (packed, 1000, True, 1009, "inflates past the limit"),
        (msgspec.msgpack.encode([13, b"not zlib"]), 1 << 20, True, 4000, "zlib"),
        (msgspec.msgpack.encode([13, zlib.compress(packed)]), 1 << 20, True, 4000, "inside"),
        (msgspec.msgpack.encode([13, zlib.compress(big)[:-3]]), 1 << 20, True, 4000, "incomplete"),
    ]
    for wire, limit, inflate, code, text in cases:
        with pytest.raises(ProtocolError, match=text) as info:
            ClientCodec.split(wire, limit, inflate)
        assert info.value.close_code == code


def test_a_zip_bomb_is_refused_without_inflating_it_whole() -> None:
    bomb = msgspec.msgpack.encode([13, zlib.compress(b"\0" * (64 << 20), 9)])
    assert len(bomb) < 100_000
    with pytest.raises(ProtocolError) as info:
        ClientCodec.split(bomb, 1 << 20, inflate=True)
    assert info.value.close_code == 1009
