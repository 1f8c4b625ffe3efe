"""docs/reference/protocol.md stays true: its worked example runs through both session machines,
and its digest table matches the golden vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

from unbroken.protocol import ClientSession, ServerSession
from unbroken.protocol.client_session import StreamEvents, StreamResumed, StreamStarted, Welcomed
from unbroken.protocol.frames import Resume, decode_client, decode_server, encode

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "reference" / "protocol.md").read_text(encoding="utf-8")
DIGEST = json.loads((ROOT / "tests" / "vectors" / "digest.json").read_text(encoding="utf-8"))


def transcript() -> list[list[tuple[str, str]]]:
    """The example's frames, one list per connection: (direction, frame text)."""
    section = DOC.split("## 16.")[1].split("## 17.")[0]
    block = section.split("```")[1]
    connections: list[list[tuple[str, str]]] = []
    for line in block.splitlines():
        if line.startswith("# connection"):
            connections.append([])
        elif line[:2] in ("→ ", "← "):
            connections[-1].append((line[0], line[2:]))
    return connections


def test_the_worked_example_runs_through_client_and_server_sessions() -> None:
    first, second = transcript()
    client = ClientSession()
    server = ServerSession()
    outputs: list[object] = []
    for n, connection in enumerate((first, second)):
        if n == 1:
            client.connection_lost()
            server = ServerSession()
        sent: list[bytes] = [encode(client.connect(token="secret-token"))]
        for direction, frame in connection:
            if direction == "→":
                assert sent, f"the example sends {frame} but the client has nothing to send"
                assert sent.pop(0) == frame.encode()
                received = server.receive(frame)
                if isinstance(received, Resume):
                    server.attach(received.stream, received.after)
                continue
            out = client.receive(frame)
            outputs.append(out)
            if isinstance(out, StreamEvents):
                client.ack_every = 1
                sent += [encode(a) for a in client.take_acks()]
            elif isinstance(out, Welcomed):
                if n == 0:
                    start = client.start("req-1", "echo", {"text": "Hello, world."})
                    assert start is not None
                    sent.append(encode(start))
                else:
                    sent += [encode(f) for f in client.after_welcome()]
            elif isinstance(out, StreamStarted):
                server.attach(out.stream)
        assert sent == [], f"the client also wanted to send {sent}"
    events = [ev for out in outputs if isinstance(out, StreamEvents) for ev in out.events]
    assert [ev.seq for ev in events] == [1, 2, 3, 4, 5, 6]
    assert "".join(ev.body for ev in events) == "Hello, world."
    assert any(isinstance(out, StreamResumed) for out in outputs)
    cursor = client.by_req["req-1"].cursor()
    assert cursor is not None and cursor.digest == DIGEST["streams"][0]["final_digest"]


CLIENT_TAGS = ("hello", "start", "resume", "ack", "cancel", "refresh", "ping", "list")


def test_every_frame_in_the_document_is_valid_and_canonical() -> None:
    texts = re.findall(r'^(?:[→←] )?(\{"t":.*\})$', DOC, flags=re.MULTILINE)
    assert len(texts) > 30
    for text in texts:
        tag = json.loads(text)["t"]
        decode = decode_client if tag in CLIENT_TAGS else decode_server
        assert encode(decode(text)) == text.encode(), text


def test_the_digest_table_matches_the_vectors() -> None:
    vector = DIGEST["streams"][0]
    section = DOC.split("### 7.2")[1].split("### 7.3")[0]
    assert vector["seed"] in section
    for row in vector["events"]:
        assert re.search(rf"^{row['seq']}\s+{row['kind']}\s.*{row['digest']}$", section, re.M)
    step2 = vector["events"][1]["step_input_hex"]
    step_block = section.split("```")[-2]  # the last code block: the step input, line by line
    hex_lines = re.findall(r"^([0-9a-f]+)\s{2,}", step_block, flags=re.MULTILINE)
    assert "".join(hex_lines) == step2
