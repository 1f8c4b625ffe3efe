"""Protocol v2 against its golden vectors (tests/vectors/frames_v2.json, invalid_v2.json):
every frame decodes to the meaning frames.json gives it and encodes back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from unbroken.errors import ProtocolError
from unbroken.protocol import digest, frames, frames_v2
from unbroken.protocol.events import Kind
from unbroken.protocol.frames_v2 import ClientCodec, EventsV2, ServerCodec
from unbroken.protocol.items import decode as decode_items

from .strategies import event_from_json

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
FRAMES = json.loads((VECTORS / "frames_v2.json").read_text(encoding="utf-8"))
INVALID = json.loads((VECTORS / "invalid_v2.json").read_text(encoding="utf-8"))
V1 = {r["name"]: r for r in json.loads((VECTORS / "frames.json").read_text("utf-8"))["frames"]}


def by_name(rows: list[dict[str, Any]]) -> Any:
    return [pytest.param(r, id=r["name"]) for r in rows]


def fields_of(frame: msgspec.Struct) -> dict[str, Any]:
    out: dict[str, Any] = {"t": type(frame).__struct_config__.tag}
    for f in msgspec.structs.fields(type(frame)):
        out[f.encode_name] = msgspec.to_builtins(getattr(frame, f.name))
    return out


def test_every_v1_frame_has_its_v2_form() -> None:
    names = {r["name"] for r in FRAMES["frames"]}
    assert set(V1) <= names
    assert FRAMES["subprotocol"] == "unbroken.v2"


@pytest.mark.parametrize("vector", by_name([r for r in FRAMES["frames"] if "fields" in r]))
def test_v2_frame_means_what_the_v1_frame_means_and_reencodes(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["frame_hex"])
    assert vector["fields"] == V1[vector["name"]]["fields"]
    if vector["direction"] == "client":
        frame = frames_v2.decode_client(wire, 1 << 20)
        assert fields_of(frame) == vector["fields"]
        assert frames_v2.encode_client(frame) == wire
        return
    codec = ClientCodec()
    decoded = codec.decode(wire, 1 << 20)
    if isinstance(decoded, EventsV2):
        return  # test_v2_events_frame
    assert fields_of(decoded) == vector["fields"]
    # the same frame encoded by a server codec whose next handle is this one's
    server = ServerCodec()
    for _ in range(vector.get("handle", 0)):
        server.encode(frames.Started("r", "s", "e"))
    assert server.encode(decoded) == wire
    if "handle" in vector:
        assert codec.stream_of(vector["handle"]) == vector["fields"]["stream"]


@pytest.mark.parametrize("vector", by_name([r for r in FRAMES["frames"] if "events" in r]))
def test_v2_events_frame(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["frame_hex"])
    evs = [event_from_json(e) for e in vector["events"]]
    h = bytes.fromhex(vector["digest_before"])
    for ev in evs:
        h = digest.step_event(h, ev)
    assert h.hex() == vector["fields"]["h"]
    final = evs[-1].kind is Kind.END
    assert vector["h_bytes"] == (16 if final else 8)
    # rebuilt from its events (through the v1 items the stores keep)
    assert frames_v2.events_frame(0, evs[0].seq, frames.encode_items(evs), h, final) == wire
    # decoded: the same events, and h is the digest's first h_bytes bytes
    codec = ClientCodec()
    codec.decode(frames_v2.ServerCodec().encode(frames.Started("r", vector["stream"], "e")), 999)
    frame = codec.decode(wire, 1 << 20)
    assert isinstance(frame, EventsV2)
    assert codec.stream_of(frame.handle) == vector["stream"]
    assert decode_items(frame.seq, frame.items) == evs
    assert frame.h == h[: vector["h_bytes"]]
    chain = digest.ChainVerifier(vector["stream"], vector["epoch"])
    chain.reset(evs[0].seq - 1, bytes.fromhex(vector["digest_before"]))
    chain.extend(evs, frame.h)


def test_v2_zlib_vector() -> None:
    (row,) = [r for r in FRAMES["frames"] if "inflated_hex" in r]
    wire, inflated = bytes.fromhex(row["frame_hex"]), bytes.fromhex(row["inflated_hex"])
    # (deflate's output depends on the implementation: only inflating is pinned)
    parts = ClientCodec.split(wire, 1 << 20, inflate=True)
    assert len(parts) == 400 and b"".join(map(bytes, parts)) == inflated[5:]


def test_v2_batch_vector() -> None:
    (row,) = [r for r in FRAMES["frames"] if "frames" in r]
    wire = bytes.fromhex(row["frame_hex"])
    parts = ClientCodec.split(wire, 1 << 20)
    codec = ClientCodec()
    decoded = [fields_of(codec.decode(p, 1 << 20)) for p in parts]
    assert decoded == row["frames"]
    assert ServerCodec().batch(list(map(bytes, parts))) == wire


@pytest.mark.parametrize("vector", by_name(INVALID["frames"]))
def test_v2_invalid_input_is_refused_with_its_close_code(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["frame_hex"])
    size = vector.get("max_size", 1 << 20)
    with pytest.raises(ProtocolError) as info:
        if vector["direction"] == "client":
            frames_v2.decode_client(wire, size)
        else:
            codec = ClientCodec()
            for one in codec.split(wire, size, inflate=True):
                codec.decode(one, size)
    assert info.value.close_code == vector["close_code"]
    assert "\n" not in str(info.value) and len(str(info.value)) <= frames.MAX_ERROR_TEXT


def test_v2_refuses_text_and_unknown_handles() -> None:
    with pytest.raises(ProtocolError, match="text frames are not part of protocol v2"):
        frames_v2.decode_client('{"t":"hello"}', 1024)
    with pytest.raises(ProtocolError, match="text frames"):
        ClientCodec().decode('{"t":"hb"}', 1024)
    with pytest.raises(ProtocolError, match="unknown stream handle 5") as info:
        ClientCodec().stream_of(5)
    assert info.value.close_code == 4000
