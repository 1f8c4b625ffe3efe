"""Generate the golden vectors (digest.json; v1: frames.json, invalid.json; v2:
frames_v2.json, invalid_v2.json).

Run once after a deliberate protocol change, review the diff, commit the output:

    .venv/bin/python tests/vectors/generate.py

The tests in tests/unit/protocol/test_vectors.py read these files and check that the
current code reproduces every byte; a future JavaScript client is held to the same
files. The vectors are data, independent of this script: never regenerate them to
make a failing test pass without understanding why the bytes changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from unbroken.errors import ProtocolError
from unbroken.protocol import digest, events, frames, frames_v2
from unbroken.protocol.events import Event, Kind, end, part_end, part_start
from unbroken.protocol.frames import (
    Ack,
    AuthExpiring,
    Cancel,
    ClientFrame,
    Error,
    Events,
    Gone,
    Hb,
    Hello,
    Limits,
    List,
    LiveStream,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Resume,
    Resumed,
    Resync,
    ServerFrame,
    Start,
    Started,
    Streams,
    Welcome,
)

HERE = Path(__file__).resolve().parent
EVENT_FIELDS = (
    "seq",
    "kind",
    "part",
    "body",
    "part_kind",
    "mime",
    "schema",
    "status",
    "error",
    "count",
)


def text(seq: int, part: str, body: str) -> Event:
    return events.chunk(seq, Kind.TEXT, part, body)


def jsonf(seq: int, part: str, body: str) -> Event:
    return events.chunk(seq, Kind.JSON, part, body)


def data(seq: int, part: str, body: str) -> Event:
    return events.chunk(seq, Kind.DATA, part, body)


SCHEMA = '{"type":"object","properties":{"rows":{"type":"array"}},"required":["rows"]}'
CHART = (
    '{"$schema":"https://vega.github.io/schema/vega-lite/v5.json","mark":"bar",'
    '"data":{"values":[{"a":"A","b":28},{"a":"B","b":55}]},'
    '"encoding":{"x":{"field":"a"},"y":{"field":"b","type":"quantitative"}}}'
)

#: (name, stream id, epoch, events). Stream ids look like the server's
#: ``secrets.token_urlsafe(16)``; epochs like ``secrets.token_urlsafe(9)``.
STREAMS: list[tuple[str, str, str, list[Event]]] = [
    (
        "hello: one text part, completed",
        "Xq3v9Lr0bZ2kT8mWc4HnJg",
        "ep0ch-A1b2C3d4",
        [
            part_start(1, "text", "text"),
            text(2, "text", "Hello"),
            text(3, "text", ", "),
            text(4, "text", "world."),
            part_end(5, "text"),
            end(6, "completed"),
        ],
    ),
    (
        "unicode and empty bodies",
        "u_n-1c0de_Stream_000001",
        "e2",
        [
            part_start(1, "text", "text", mime="text/markdown; charset=utf-8"),
            text(2, "text", ""),
            text(3, "text", "héllo wörld – ünïcödé"),
            text(4, "text", "日本語のテキスト"),
            text(5, "text", "emoji 👩‍💻🚀 and flags 🇫🇷"),
            text(6, "text", "عربي RTL ‮mixed‬"),
            text(7, "text", "line\nbreak\ttab\r\n and a NUL \x00 inside"),
            text(8, "text", 'quotes " backslash \\ slash / U+2028 \u2028 U+2029 \u2029'),
            text(9, "text", "control \x01\x1f\x7f and combining e\u0301"),
            text(10, "text", "\U0010ffff last plane"),
            part_end(11, "text"),
            end(12, "completed"),
        ],
    ),
    (
        "multipart: text, json with schema, data with mime, a failed part, interleaved",
        "mUlt1PartStream-xyz_42",
        "Zm9vYmFy",
        [
            part_start(1, "text", "text"),
            text(2, "text", "Here is the report."),
            part_start(3, "summary", "json", mime="application/json", schema=SCHEMA),
            jsonf(4, "summary", '{"rows": ['),
            text(5, "text", " Computing rows…"),
            jsonf(6, "summary", '{"n": 1}, '),
            jsonf(7, "summary", '{"n": 2}'),
            jsonf(8, "summary", "]}"),
            part_end(9, "summary"),
            part_start(10, "chart", "data", mime="application/vnd.vegalite+json"),
            data(11, "chart", CHART),
            part_end(12, "chart"),
            part_start(13, "table.v2", "json", schema='{"type":"array"}'),
            jsonf(14, "table.v2", '{"not": "an array"}'),
            part_end(15, "table.v2", error="schema: {'not': 'an array'} is not of type 'array'"),
            text(16, "text", " Done."),
            part_end(17, "text"),
            end(18, "failed", error="agent raised ValueError: bad input"),
        ],
    ),
    (
        "cancelled before any output: only end",
        "AAAAAAAAAAAAAAAAAAAAAA",
        "e",
        [end(1, "cancelled", error="cancelled by the client")],
    ),
    (
        "long bodies (several BLAKE2b blocks) and a chunk without part_start",
        "long-bodies_0123456789",
        "epoch-long",
        [
            text(1, "text", "a" * 127),
            text(2, "text", "b" * 128),
            text(3, "text", "c" * 129),
            text(4, "text", "0123456789" * 100),
            end(5, "completed"),
        ],
    ),
    (
        "same events as 'hello' in another epoch: different digests",
        "Xq3v9Lr0bZ2kT8mWc4HnJg",
        "ep0ch-B9",
        [
            part_start(1, "text", "text"),
            text(2, "text", "Hello"),
            text(3, "text", ", "),
            text(4, "text", "world."),
            part_end(5, "text"),
            end(6, "completed"),
        ],
    ),
    (
        "part roles in mime parameters: reasoning, a tool call, its result, metadata",
        "r0les-Of-Parts_0123456",
        "epoch-roles",
        [
            part_start(1, "reasoning", "text", "text/plain; role=reasoning"),
            text(2, "reasoning", "Paris first."),
            part_end(3, "reasoning"),
            part_start(
                4,
                "tool-call_1",
                "json",
                'application/json; role=tool-call; tool="get_weather"; call="call_1"',
            ),
            jsonf(5, "tool-call_1", '{"city": '),
            jsonf(6, "tool-call_1", '"Paris"}'),
            part_end(7, "tool-call_1"),
            part_start(
                8,
                "result-call_1",
                "json",
                'application/json; role=tool-result; tool="get_weather"; call="call_1"',
            ),
            jsonf(9, "result-call_1", '{"temp":21}'),
            part_end(10, "result-call_1"),
            part_start(11, "text", "text", "text/plain"),
            text(12, "text", "21 \u00b0C in Paris."),
            part_end(13, "text"),
            part_start(14, "metadata", "json", "application/json; role=metadata"),
            jsonf(15, "metadata", '{"finish_reason":"stop","usage":{"output_tokens":9}}'),
            part_end(16, "metadata"),
            end(17, "completed"),
        ],
    ),
]


def event_json(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(ev, f) for f in EVENT_FIELDS}
    out["kind"] = events.NAME_BY_KIND[ev.kind]
    out["kind_byte"] = int(ev.kind)
    return out


def digest_vectors() -> dict[str, Any]:
    streams = []
    for name, sid, epoch, evs in STREAMS:
        h = digest.seed(sid, epoch)
        rows = []
        for ev in evs:
            p = events.payload(ev)
            step_input = h + ev.seq.to_bytes(8, "big") + bytes([ev.kind]) + p
            h = digest.step(h, ev.seq, ev.kind, p)
            row = event_json(ev)
            row["payload_hex"] = p.hex()
            row["step_input_hex"] = step_input.hex()
            row["digest"] = h.hex()
            rows.append(row)
        streams.append(
            {
                "name": name,
                "stream": sid,
                "epoch": epoch,
                "seed_input_hex": (
                    b"unbroken.v1\x00" + sid.encode() + b"\x00" + epoch.encode()
                ).hex(),
                "seed": digest.seed(sid, epoch).hex(),
                "events": rows,
                "final_digest": h.hex(),
            }
        )
    return {
        "description": "Digest chain of protocol v1 (docs/reference/protocol.md, 'Digest chain').",
        "hash": "BLAKE2b, digest_size 16, no key, no salt, no personalization",
        "seed": "h_0 = BLAKE2b-128('unbroken.v1' 0x00 utf8(stream) 0x00 utf8(epoch))",
        "step": "h_n = BLAKE2b-128(h_{n-1} (16 bytes) || seq (uint64 big-endian) "
        "|| kind (1 byte) || payload)",
        "payload": {
            "text|json|data": "utf8(part) 0x00 utf8(body)",
            "part_start": "utf8(part) 0x00 utf8(part_kind) 0x00 utf8(mime) 0x00 utf8(schema)",
            "part_end": "utf8(part) 0x00 utf8(error)",
            "end": "utf8(status) 0x00 utf8(error) 0x00 ascii(decimal count)",
        },
        "kinds": {name: int(k) for name, k in events.KIND_BY_NAME.items()},
        "streams": streams,
    }


def fields_of(frame: msgspec.Struct) -> dict[str, Any]:
    """Every field of a frame under its wire name, defaults included."""
    out: dict[str, Any] = {"t": type(frame).__struct_config__.tag}
    for f in msgspec.structs.fields(type(frame)):
        out[f.encode_name] = msgspec.to_builtins(getattr(frame, f.name))
    return out


def frame_vectors() -> dict[str, Any]:
    _, sid, epoch, evs = STREAMS[2]
    chain = digest.chain(sid, epoch, evs)
    h0 = digest.seed(sid, epoch)
    client: list[tuple[str, ClientFrame]] = [
        ("hello, minimal", Hello()),
        ("hello with caps and token", Hello(caps=["gzip", "x-trace"], token="eyJhbGciOi.J9.sig")),
        ("hello of an anonymous client, with its key", Hello(anon="pQ0sKx3t_Yv8Lw2nR7-aZg")),
        (
            "start with an object input",
            Start(req="req-0001", agent="report", input={"q": "sales 2024", "n": [1, 2.5, None]}),
        ),
        ("start without input", Start(req="r:2/x~", agent="echo")),
        ("resume from the start (no h)", Resume(stream=sid, after=0, epoch=epoch)),
        (
            "resume from the start with the seed",
            Resume(stream=sid, after=0, epoch=epoch, h=h0.hex()),
        ),
        (
            "resume after seq 7",
            Resume(stream=sid, after=7, epoch=epoch, h=chain[6].hex()),
        ),
        ("ack", Ack(stream=sid, seq=9)),
        ("cancel", Cancel(stream=sid)),
        ("refresh", Refresh(token="eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln")),
        ("ping, default n", Ping()),
        ("ping", Ping(n=42)),
        ("list (cap streams)", List(n=3)),
        ("list, default n", List()),
    ]
    server: list[tuple[str, ServerFrame]] = [
        ("welcome, default limits", Welcome(session="s-1", heartbeat_ms=1000, epoch=epoch)),
        (
            "welcome of an anonymous client, issuing its key",
            Welcome(session="s-2", heartbeat_ms=400, epoch=epoch, anon="pQ0sKx3t_Yv8Lw2nR7-aZg"),
        ),
        (
            "welcome with limits and caps",
            Welcome(
                session="sess_9f8e",
                heartbeat_ms=2500,
                epoch=epoch,
                limits=Limits(max_frame=1048576, window=262144, max_streams=16, max_chunk=65536),
                caps=["resume"],
            ),
        ),
        (
            "welcome with refresh: the credentials expire at auth_exp",
            Welcome(
                session="s-3",
                heartbeat_ms=400,
                epoch=epoch,
                caps=["batch", "refresh"],
                auth_exp=1767225600,
            ),
        ),
        (
            "welcome, auth_exp with a fraction",
            Welcome(session="s-4", heartbeat_ms=400, epoch=epoch, auth_exp=1767225600.25),
        ),
        ("auth_expiring", AuthExpiring(in_ms=1600)),
        ("auth_expiring, already due", AuthExpiring(in_ms=0)),
        ("refreshed", Refreshed(exp=1767225660)),
        ("refreshed, exp with a fraction", Refreshed(exp=1767225660.5)),
        ("refreshed, no longer expires", Refreshed()),
        (
            "error auth_failed (a refresh token refused)",
            Error(code="auth_failed", message="token expired at 1767225600"),
        ),
        ("started", Started(req="req-0001", stream=sid, epoch=epoch)),
        ("resumed", Resumed(stream=sid, from_=7, head=12, status="running")),
        (
            "resumed, stream already completed",
            Resumed(stream=sid, from_=0, head=18, status="failed"),
        ),
        ("resync (reserved)", Resync(stream=sid, reason="replay")),
        *[
            (f"gone {reason}", Gone(stream=sid, reason=reason, message="see docs"))
            for reason in ("unknown", "expired", "epoch", "diverged", "forbidden")
        ],
        (
            "error overloaded with retry_after_ms",
            Error(code="overloaded", message="server full", retry_after_ms=1500),
        ),
        (
            "error about one request",
            Error(code="unknown_agent", message="no agent 'x'", req="req-0001"),
        ),
        ("error about one stream", Error(code="bad_ack", stream=sid)),
        (
            "error unavailable: one stream's log unreachable, resume after retry_after_ms",
            Error(
                code="unavailable",
                message="its log is unreachable",
                stream=sid,
                retry_after_ms=1000,
            ),
        ),
        ("hb", Hb()),
        ("pong", Pong(n=42)),
        (
            "streams (cap streams): one live stream",
            Streams(
                n=3,
                items=[
                    LiveStream(stream=sid, agent="report", epoch=epoch, head=7, h=chain[6].hex())
                ],
            ),
        ),
        ("streams, none live", Streams(n=4)),
    ]
    out_frames: list[dict[str, Any]] = []
    for direction, items in (("client", client), ("server", server)):
        decode = frames.decode_client if direction == "client" else frames.decode_server
        for name, frame in items:
            wire = frames.encode(frame)
            assert decode(wire) == frame, name
            out_frames.append(
                {
                    "name": name,
                    "direction": direction,
                    "frame": wire.decode(),
                    "fields": fields_of(frame),
                }
            )

    # events frames: the multipart stream coalesced three ways, plus one-per-frame samples
    def events_frame(name: str, batch: list[Event]) -> dict[str, Any]:
        last = batch[-1].seq
        wire = frames.encode_events_frame(
            sid, batch[0].seq, frames.encode_items(batch), chain[last - 1]
        )
        decoded = frames.decode_server(wire)
        return {
            "name": name,
            "direction": "server",
            "stream": sid,
            "epoch": epoch,
            "frame": wire.decode(),
            "fields": fields_of(decoded),
            "events": [event_json(ev) for ev in batch],
            "digest_before": (h0 if batch[0].seq == 1 else chain[batch[0].seq - 2]).hex(),
        }

    out_frames.append(events_frame("events: whole multipart stream in one frame", evs))
    out_frames.append(events_frame("events: one event (a text chunk)", evs[1:2]))
    out_frames.append(events_frame("events: one event (part_start with mime and schema)", evs[2:3]))
    out_frames.append(events_frame("events: one event (end with error)", evs[-1:]))
    out_frames.append(
        events_frame("events: frame starting mid-part (explicit chunk first)", evs[5:9])
    )
    out_frames.append(events_frame("events: data chunk and part_end with err", evs[10:15]))
    # part roles (§6.3): the same frames as ever, the roles in the mimes
    _, sid, epoch, evs = STREAMS[-1]
    chain = digest.chain(sid, epoch, evs)
    h0 = digest.seed(sid, epoch)
    out_frames.append(events_frame(ROLES_FRAME, evs))
    return {
        "description": "Frames of protocol v1 as this implementation encodes them "
        "(docs/reference/protocol.md, 'Frames'). 'frame' is the exact text of the WebSocket "
        "message; 'fields' every field under its wire name with defaults filled in; "
        "for events frames 'events' are the events the items stand for, and the "
        "frame's h chains from 'digest_before' over them (stream/epoch given).",
        "subprotocols": list(frames.SUBPROTOCOLS),
        "frames": out_frames,
    }


#: (name, direction, frame text or bytes, max_size or None)
INVALID: list[tuple[str, str, str | bytes, int | None]] = [
    ("empty message", "client", "", None),
    ("not JSON", "client", "hello", None),
    ("JSON array, not an object", "client", '[{"t":"hello"}]', None),
    ("JSON string", "client", '"hello"', None),
    ("JSON null", "server", "null", None),
    ("object without t", "client", '{"caps":[]}', None),
    ("unknown frame type", "client", '{"t":"subscribe","stream":"abc"}', None),
    ("t is not a string", "client", '{"t":1}', None),
    ("server frame sent to a server", "client", '{"t":"hb"}', None),
    ("client frame sent to a client", "server", '{"t":"hello"}', None),
    ("trailing characters", "client", '{"t":"hello"}{"t":"hello"}', None),
    ("NaN literal", "client", '{"t":"start","req":"r","agent":"a","input":NaN}', None),
    ("number out of range", "client", '{"t":"start","req":"r","agent":"a","input":1e400}', None),
    ("missing required field", "client", '{"t":"start","agent":"a"}', None),
    ("wrong type: seq as string", "client", '{"t":"ack","stream":"abc","seq":"1"}', None),
    ("wrong type: seq as float", "client", '{"t":"ack","stream":"abc","seq":1.0}', None),
    ("negative seq", "client", '{"t":"ack","stream":"abc","seq":-1}', None),
    ("seq beyond 2^53", "client", '{"t":"ack","stream":"abc","seq":9007199254740993}', None),
    ("stream id with a forbidden character", "client", '{"t":"cancel","stream":"a/b"}', None),
    ("stream id empty", "client", '{"t":"cancel","stream":""}', None),
    ("stream id longer than 64", "client", '{"t":"cancel","stream":"' + "a" * 65 + '"}', None),
    ("stream id with a trailing newline", "client", '{"t":"cancel","stream":"abc\\n"}', None),
    ("req id with a space", "client", '{"t":"start","req":"a b","agent":"x"}', None),
    (
        "h in upper case",
        "client",
        '{"t":"resume","stream":"abc","after":1,"epoch":"e","h":"' + "AB" * 16 + '"}',
        None,
    ),
    (
        "h too short",
        "client",
        '{"t":"resume","stream":"abc","after":1,"epoch":"e","h":"abcd"}',
        None,
    ),
    ("caps not a list", "client", '{"t":"hello","caps":"gzip"}', None),
    ("token too long", "client", '{"t":"hello","token":"' + "x" * 16385 + '"}', None),
    ("lone surrogate escape", "client", '{"t":"hello","token":"\\ud800"}', None),
    ("bad UTF-8 (lone continuation byte)", "client", b'{"t":"hello","token":"\x80"}', None),
    ("bad UTF-8 (truncated sequence)", "server", b'{"t":"hb","x":"\xe2\x82"}', None),
    ("bad UTF-8 (overlong encoding)", "client", b'{"t":"hello","token":"\xc0\xaf"}', None),
    ("UTF-8 byte order mark", "client", b'\xef\xbb\xbf{"t":"hello"}', None),
    ("frame over the size limit", "client", '{"t":"hello","token":"' + "x" * 64 + '"}', 64),
    (
        "welcome heartbeat_ms 0",
        "server",
        '{"t":"welcome","session":"s","heartbeat_ms":0,"epoch":"e"}',
        None,
    ),
    (
        "welcome with a negative window",
        "server",
        '{"t":"welcome","session":"s","heartbeat_ms":1000,"epoch":"e","limits":{"window":-5}}',
        None,
    ),
    ("auth_expiring without in_ms", "server", '{"t":"auth_expiring"}', None),
    ("auth_expiring with a negative in_ms", "server", '{"t":"auth_expiring","in_ms":-1}', None),
    ("auth_expiring with a fractional in_ms", "server", '{"t":"auth_expiring","in_ms":1.5}', None),
    ("refreshed with exp as a string", "server", '{"t":"refreshed","exp":"1767225660"}', None),
    ("refreshed with a negative exp", "server", '{"t":"refreshed","exp":-1}', None),
    ("refresh without token", "client", '{"t":"refresh"}', None),
    (
        "welcome with auth_exp as a string",
        "server",
        '{"t":"welcome","session":"s","heartbeat_ms":1000,"epoch":"e","auth_exp":"soon"}',
        None,
    ),
    ("gone with an unknown reason", "server", '{"t":"gone","stream":"abc","reason":"lost"}', None),
    (
        "events with no items",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[],"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "events with seq 0",
        "server",
        '{"t":"events","stream":"abc","seq":0,"items":["x"],"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "events without h",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"text","p":"t","d":"x"}]}',
        None,
    ),
    (
        "item of unknown kind",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"audio","p":"t","d":"x"}],"h":"'
        + "0" * 32
        + '"}',
        None,
    ),
    (
        "item that is a number",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[7],"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "part_start with a bad part kind",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":"audio"}],'
        '"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "item whose kind names an object property",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"constructor","p":"t","d":"x"}],'
        '"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "item whose kind is an object",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":{"toString":1},"p":"t","d":"x"}],'
        '"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "part_start whose part kind is an array",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":["text"]}],'
        '"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "part_start whose part kind names an object property",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":"toString"}],'
        '"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "part_start with NUL in mime",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":"text",'
        '"mime":"a\\u0000b"}],"h":"' + "0" * 32 + '"}',
        None,
    ),
    (
        "part id with a space",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"text","p":"my part","d":"x"}],"h":"'
        + "0" * 32
        + '"}',
        None,
    ),
    (
        "end with an unknown status",
        "server",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"end","st":"ok","n":1}],"h":"'
        + "0" * 32
        + '"}',
        None,
    ),
    (
        "streams item that has ended",
        "server",
        '{"t":"streams","items":[{"stream":"abc","agent":"a","epoch":"e","head":3,'
        '"h":"' + "0" * 32 + '","status":"completed"}]}',
        None,
    ),
    (
        "streams item without h",
        "server",
        '{"t":"streams","items":[{"stream":"abc","agent":"a","epoch":"e","head":3}]}',
        None,
    ),
]

#: Frames that decode but whose items do not stand for valid events (checked by events_of).
INVALID_ITEMS: list[tuple[str, str]] = [
    (
        "bare chunk with no current part in the frame",
        '{"t":"events","stream":"abc","seq":1,"items":["x"],"h":"' + "0" * 32 + '"}',
    ),
    (
        "bare chunk after the current part ended",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"text","p":"t","d":"x"},'
        '{"k":"part_end","p":"t"},"y"],"h":"' + "0" * 32 + '"}',
    ),
    (
        "end whose count is not its seq",
        '{"t":"events","stream":"abc","seq":3,"items":[{"k":"end","st":"completed","n":2}],"h":"'
        + "0" * 32
        + '"}',
    ),
    (
        "chunk kind differs from its part's kind",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"part_start","p":"t","pk":"json"},'
        '{"k":"text","p":"t","d":"x"}],"h":"' + "0" * 32 + '"}',
    ),
    (
        "events after end",
        '{"t":"events","stream":"abc","seq":1,"items":[{"k":"end","st":"completed","n":1},'
        '{"k":"text","p":"t","d":"x"}],"h":"' + "0" * 32 + '"}',
    ),
]

#: Server-side sequences: frames a server receives in order, and the close code of the
#: frame at ``fails_at`` (0-based). ``attach`` lists streams started/resumed before.
SERVER_SEQUENCES: list[dict[str, Any]] = [
    {"name": "frame before hello", "frames": ['{"t":"ping"}'], "fails_at": 0, "close_code": 4001},
    {
        "name": "start before hello",
        "frames": ['{"t":"start","req":"r","agent":"a"}'],
        "fails_at": 0,
        "close_code": 4001,
    },
    {
        "name": "hello twice",
        "frames": ['{"t":"hello"}', '{"t":"hello"}'],
        "fails_at": 1,
        "close_code": 4000,
    },
]


def invalid_vectors() -> dict[str, Any]:
    rows = []
    for name, direction, frame, max_size in INVALID:
        decode = frames.decode_client if direction == "client" else frames.decode_server
        try:
            if max_size is None:
                decode(frame)
            else:
                decode(frame, max_size)
        except ProtocolError as exc:
            code = exc.close_code
        else:
            raise AssertionError(f"invalid vector {name!r} decoded")
        row: dict[str, Any] = {"name": name, "direction": direction}
        if isinstance(frame, bytes):
            row["frame_hex"] = frame.hex()
        else:
            row["frame"] = frame
        if max_size is not None:
            row["max_size"] = max_size
        row["close_code"] = code
        rows.append(row)
    items = []
    for name, frame in INVALID_ITEMS:
        decoded = frames.decode_server(frame)
        assert isinstance(decoded, frames.Events)
        try:
            frames.events_of(decoded)
        except ProtocolError as exc:
            items.append({"name": name, "frame": frame, "close_code": exc.close_code})
        else:
            raise AssertionError(f"invalid items vector {name!r} accepted")
    return {
        "description": "Invalid input and the WebSocket close code it must produce "
        "(docs/reference/protocol.md, 'Close codes'). 'frames': rejected by the decoder "
        "(frame text, or frame_hex for bytes that are not UTF-8; max_size when the "
        "test uses a smaller frame limit than the default 16 MiB). 'items': frames "
        "that decode but whose items are not valid events. 'server_sequences': frames "
        "a server receives in order; the one at fails_at closes the connection.",
        "frames": rows,
        "items": items,
        "server_sequences": SERVER_SEQUENCES,
    }


#: the name of the events frame of the part-roles stream (the last row of each file)
ROLES_FRAME = "events: part roles (reasoning, tool call, tool result, metadata) in one frame"


def frame_vectors_v2() -> dict[str, Any]:
    """The frames of :func:`frame_vectors` as protocol v2 encodes them (the same
    meaning, so the same ``fields``), on one connection: ``started`` and ``resumed``
    give handles 0, 1, 2 in order; the events frames name the stream by handle 0."""
    v1 = frame_vectors()
    codec = frames_v2.ServerCodec()
    rows: list[dict[str, Any]] = []
    last: list[dict[str, Any]] = []  # rows added later go after the ones before them
    for row in v1["frames"]:
        out: dict[str, Any] = {"name": row["name"], "direction": row["direction"]}
        if "events" in row:
            decoded = frames.decode_server(row["frame"])
            assert isinstance(decoded, Events)
            evs = frames.events_of(decoded)
            h = bytes.fromhex(decoded.h)
            final = evs[-1].kind is Kind.END
            wire = frames_v2.events_frame(0, evs[0].seq, frames.encode_items(evs), h, final)
            out.update(
                frame_hex=wire.hex(),
                fields=row["fields"],
                handle=0,
                h_bytes=16 if final else 8,
                stream=row["stream"],
                epoch=row["epoch"],
                events=row["events"],
                digest_before=row["digest_before"],
            )
        elif row["direction"] == "client":
            frame = frames.decode_client(row["frame"])
            wire = frames_v2.encode_client(frame)
            out.update(frame_hex=wire.hex(), fields=row["fields"])
        else:
            sframe = frames.decode_server(row["frame"])
            wire = codec.encode(sframe)
            out.update(frame_hex=wire.hex(), fields=row["fields"])
            if isinstance(sframe, Started | Resumed):
                out["handle"] = msgspec.msgpack.decode(wire)[
                    4 if isinstance(sframe, Started) else 2
                ]
        (last if row["name"] == ROLES_FRAME else rows).append(out)
    batch = codec.batch([frames_v2.encode_server(Hb()), frames_v2.encode_server(Pong(n=7))])
    rows.append(
        {
            "name": "batch: hb then pong in one message",
            "direction": "server",
            "frame_hex": batch.hex(),
            "frames": [{"t": "hb"}, {"t": "pong", "n": 7}],
        }
    )
    big = codec.batch([frames_v2.encode_server(Pong(n=i)) for i in range(400)])
    rows.append(
        {
            "name": "zlib: a batch of 400 pongs deflated (cap zlib)",
            "direction": "server",
            "frame_hex": codec.compress(big).hex(),
            "inflated_hex": big.hex(),
            "note": "deflate's output depends on the implementation: check inflating only",
        }
    )
    rows += last
    return {
        "description": "Frames of protocol v2 (docs/reference/protocol.md §19): each is "
        "one binary WebSocket message, 'frame_hex' its bytes (MessagePack), 'fields' "
        "what it means as in frames.json (the v1 field names, defaults filled in). "
        "started/resumed carry the stream's handle ('handle'); an events frame names "
        "its stream by handle and carries the first 8 bytes of h, or all 16 when it "
        "ends the stream ('h_bytes'); 'fields.h' is the whole digest.",
        "subprotocol": frames_v2.SUBPROTOCOL,
        "frames": rows,
    }


def _mp(value: Any) -> str:
    return msgspec.msgpack.encode(value).hex()


def invalid_vectors_v2() -> dict[str, Any]:
    """Input a v2 decoder must refuse, and the close code it gives."""
    sid = "mUlt1PartStream-xyz_42"
    h8 = "00" * 8
    rows: list[dict[str, Any]] = [
        {"name": "empty message", "direction": "client", "frame_hex": "", "close_code": 4000},
        {"name": "not MessagePack", "direction": "client", "frame_hex": "c1", "close_code": 4000},
        {
            "name": "truncated array",
            "direction": "client",
            "frame_hex": "9313",
            "close_code": 4000,
        },
        {
            "name": "a map, not an array",
            "direction": "client",
            "frame_hex": _mp({"t": 16}),
            "close_code": 4000,
        },
        {
            "name": "unknown client tag",
            "direction": "client",
            "frame_hex": _mp([99, sid]),
            "close_code": 4000,
        },
        {
            "name": "a server tag from a client",
            "direction": "client",
            "frame_hex": _mp([8]),
            "close_code": 4000,
        },
        {
            "name": "ack with a string seq",
            "direction": "client",
            "frame_hex": _mp([19, sid, "9"]),
            "close_code": 4000,
        },
        {
            "name": "ack with a negative seq",
            "direction": "client",
            "frame_hex": _mp([19, sid, -1]),
            "close_code": 4000,
        },
        {
            "name": "resume with a short h",
            "direction": "client",
            "frame_hex": _mp([18, sid, 3, "ep", b"\x00" * 8]),
            "close_code": 4000,
        },
        {
            "name": "start input that is not JSON",
            "direction": "client",
            "frame_hex": _mp([17, "r1", "echo", "{nope"]),
            "close_code": 4000,
        },
        {
            "name": "start input repeating a key",
            "direction": "client",
            "frame_hex": _mp([17, "r1", "echo", '{"a":1,"a":2}']),
            "close_code": 4000,
        },
        {
            "name": "trailing bytes after the frame",
            "direction": "client",
            "frame_hex": _mp([22, 1]) + "00",
            "close_code": 4000,
        },
        {
            "name": "an extra element after the frame's fields",
            "direction": "client",
            "frame_hex": _mp([22, 1, 2]),
            "close_code": 4000,
        },
        {
            "name": "too big",
            "direction": "client",
            "frame_hex": _mp([21, "x" * 2000]),
            "max_size": 1024,
            "close_code": 1009,
        },
        {
            "name": "unknown server tag",
            "direction": "server",
            "frame_hex": _mp([77]),
            "close_code": 4000,
        },
        {
            "name": "events with an 4-byte h",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, ["x"], b"\x00" * 4]),
            "close_code": 4000,
        },
        {
            "name": "events with no items",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, [], bytes.fromhex(h8)]),
            "close_code": 4000,
        },
        {
            "name": "events item with an unknown kind",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, [[9, "p", "d"]], bytes.fromhex(h8)]),
            "close_code": 4000,
        },
        {
            "name": "events with a negative handle",
            "direction": "server",
            "frame_hex": _mp([1, -1, 1, ["x"], bytes.fromhex(h8)]),
            "close_code": 4000,
        },
        {
            "name": "a batch inside a batch",
            "direction": "server",
            "frame_hex": _mp([0, [[0, [[8]]]]]),
            "close_code": 4000,
        },
        {
            "name": "zlib frame whose data is not zlib",
            "direction": "server",
            "frame_hex": _mp([13, b"not zlib"]),
            "close_code": 4000,
        },
        {
            "name": "events with a 12-byte h (only 8 or 16)",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, ["x"], bytes(12)]),
            "close_code": 4000,
        },
        {
            "name": "welcome with a float for limits (a map or left out)",
            "direction": "server",
            "frame_hex": _mp([2, "s", 400, "Zm9vYmFy", 1.5]),
            "close_code": 4000,
        },
        {
            "name": "welcome with a nil limit",
            "direction": "server",
            "frame_hex": _mp([2, "s", 400, "Zm9vYmFy", {"window": None}]),
            "close_code": 4000,
        },
        {
            "name": "streams with a nil item",
            "direction": "server",
            "frame_hex": _mp([12, 1, [None]]),
            "close_code": 4000,
        },
        {
            "name": "streams item with a nil h",
            "direction": "server",
            "frame_hex": _mp([12, 1, [[sid, "agent", "Zm9vYmFy", 3, None]]]),
            "close_code": 4000,
        },
        {
            "name": "events part_start whose kind is an array",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, [[4, "p", ["text"]]], bytes.fromhex(h8)]),
            "close_code": 4000,
        },
        {
            "name": "events part_start whose kind names an object property",
            "direction": "server",
            "frame_hex": _mp([1, 0, 1, [[4, "p", "constructor"]], bytes.fromhex(h8)]),
            "close_code": 4000,
        },
    ]
    return {
        "description": "Input a protocol v2 decoder must refuse (frame_hex: the binary "
        "message; max_size when the check uses a small limit) and the close code. A "
        "text message on a v2 connection is refused with 4000 too; so is an events "
        "frame whose handle no started/resumed gave (the client closes 4000).",
        "frames": rows,
    }


def write(name: str, content: dict[str, Any]) -> None:
    path = HERE / name
    path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main() -> None:
    write("digest.json", digest_vectors())
    write("frames.json", frame_vectors())
    write("invalid.json", invalid_vectors())
    write("frames_v2.json", frame_vectors_v2())
    write("invalid_v2.json", invalid_vectors_v2())


if __name__ == "__main__":
    main()
