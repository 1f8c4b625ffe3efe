"""The golden vectors in tests/vectors/: the current code reproduces every byte.

A future JavaScript client is held to the same files, so a failure here means the
wire format or the digest changed: that is a protocol change, not a test to update.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from unbroken.errors import ProtocolError
from unbroken.protocol import ServerSession, digest, events, frames
from unbroken.protocol.frames import Events, decode_client, decode_server, encode

from .strategies import event_from_json

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


DIGEST = load("digest.json")
FRAMES = load("frames.json")
INVALID = load("invalid.json")


def by_name(rows: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(row, id=row["name"]) for row in rows]


# ------------------------------------------------------------------ digest.json
def test_digest_vectors_cover_every_kind_unicode_and_empty_bodies() -> None:
    rows = [ev for s in DIGEST["streams"] for ev in s["events"]]
    assert {ev["kind"] for ev in rows} == set(events.KIND_BY_NAME)
    assert any(ev["body"] == "" and ev["kind"] == "text" for ev in rows)
    assert any(not ev["body"].isascii() for ev in rows)
    assert any(ev["error"] and ev["kind"] == "part_end" for ev in rows)
    assert DIGEST["kinds"] == {name: int(k) for name, k in events.KIND_BY_NAME.items()}


@pytest.mark.parametrize("vector", by_name(DIGEST["streams"]))
def test_digest_chain_is_reproduced_byte_for_byte(vector: dict[str, Any]) -> None:
    sid, epoch = vector["stream"], vector["epoch"]
    assert bytes.fromhex(vector["seed_input_hex"]) == (
        b"unbroken.v1\x00" + sid.encode() + b"\x00" + epoch.encode()
    )
    h = digest.seed(sid, epoch)
    assert h.hex() == vector["seed"]
    verifier = digest.ChainVerifier(sid, epoch)
    for row in vector["events"]:
        ev = event_from_json(row)
        assert row["kind_byte"] == int(ev.kind)
        data = events.payload(ev)
        assert data.hex() == row["payload_hex"]
        assert (h + ev.seq.to_bytes(8, "big") + bytes([ev.kind]) + data).hex() == row[
            "step_input_hex"
        ]
        h = digest.step(h, ev.seq, ev.kind, data)
        assert h.hex() == row["digest"]
        verifier.feed(ev, bytes.fromhex(row["digest"]))
    assert h.hex() == vector["final_digest"] == verifier.digest.hex()


# ------------------------------------------------------------------ frames.json
def test_frame_vectors_cover_every_frame_type() -> None:
    tags = {row["fields"]["t"] for row in FRAMES["frames"]}
    every = {
        t.__struct_config__.tag
        for t in (*frames.ClientFrame.__args__, *frames.ServerFrame.__args__)
    }
    assert tags == every
    items = [it for row in FRAMES["frames"] if "events" in row for it in row["fields"]["items"]]
    assert any(isinstance(it, str) for it in items)
    assert {it["k"] for it in items if isinstance(it, dict)} == set(events.KIND_BY_NAME)
    assert FRAMES["subprotocols"] == list(frames.SUBPROTOCOLS)


def fields_of(frame: msgspec.Struct) -> dict[str, Any]:
    out: dict[str, Any] = {"t": type(frame).__struct_config__.tag}
    for f in msgspec.structs.fields(type(frame)):
        out[f.encode_name] = msgspec.to_builtins(getattr(frame, f.name))
    return out


@pytest.mark.parametrize("vector", by_name(FRAMES["frames"]))
def test_frame_is_decoded_and_reencoded_byte_for_byte(vector: dict[str, Any]) -> None:
    wire = vector["frame"].encode("utf-8")
    decode = decode_client if vector["direction"] == "client" else decode_server
    frame = decode(wire)
    assert fields_of(frame) == vector["fields"]
    assert encode(frame) == wire
    # the fields alone (the meaning, defaults spelled out) decode to the same frame
    assert decode(json.dumps(vector["fields"], ensure_ascii=False)) == frame


@pytest.mark.parametrize("vector", by_name([r for r in FRAMES["frames"] if "events" in r]))
def test_events_frame_is_reproduced_from_its_events(vector: dict[str, Any]) -> None:
    evs = [event_from_json(row) for row in vector["events"]]
    h = bytes.fromhex(vector["digest_before"])
    for ev in evs:
        h = digest.step_event(h, ev)
    wire = frames.encode_events_frame(vector["stream"], evs[0].seq, frames.encode_items(evs), h)
    assert wire == vector["frame"].encode("utf-8")
    frame = decode_server(wire)
    assert isinstance(frame, Events)
    assert frames.events_of(frame) == evs
    assert frame.h == h.hex()


# ------------------------------------------------------------------ invalid.json
@pytest.mark.parametrize("vector", by_name(INVALID["frames"]))
def test_invalid_frame_closes_with_its_code(vector: dict[str, Any]) -> None:
    data: bytes | str = (
        bytes.fromhex(vector["frame_hex"]) if "frame_hex" in vector else vector["frame"]
    )
    decode = decode_client if vector["direction"] == "client" else decode_server
    max_size = vector.get("max_size", frames.DEFAULT_MAX_FRAME)
    with pytest.raises(ProtocolError) as exc:
        decode(data, max_size)
    assert exc.value.close_code == vector["close_code"]
    if isinstance(data, str):  # the same as bytes
        with pytest.raises(ProtocolError) as exc:
            decode(data.encode("utf-8", "surrogatepass"), max_size)
        assert exc.value.close_code == vector["close_code"]


@pytest.mark.parametrize("vector", by_name(INVALID["items"]))
def test_frame_with_invalid_items_closes_with_its_code(vector: dict[str, Any]) -> None:
    frame = decode_server(vector["frame"])
    assert isinstance(frame, Events)
    with pytest.raises(ProtocolError) as exc:
        frames.events_of(frame)
    assert exc.value.close_code == vector["close_code"]


@pytest.mark.parametrize("vector", by_name(INVALID["server_sequences"]))
def test_server_sequence_closes_at_the_wrong_frame(vector: dict[str, Any]) -> None:
    server = ServerSession()
    for frame in vector["frames"][: vector["fails_at"]]:
        server.receive(frame)
    with pytest.raises(ProtocolError) as exc:
        server.receive(vector["frames"][vector["fails_at"]])
    assert exc.value.close_code == vector["close_code"]


# ------------------------------------------------------------------ generator
def test_committed_vectors_are_what_generate_py_writes() -> None:
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.digest_vectors() == DIGEST
    assert generate.frame_vectors() == FRAMES
    assert generate.invalid_vectors() == INVALID
    # (the v2 files too: a vector added by hand would be lost the next time it runs)
    assert generate.frame_vectors_v2() == load("frames_v2.json")
    assert generate.invalid_vectors_v2() == load("invalid_v2.json")
