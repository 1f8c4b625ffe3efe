"""The HTTP transport's pure pieces: agent-stream offsets (server and reader agree,
order by seq), the Durable Streams cursor rule, SSE event encoding (no payload can
end an event or forge another)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.client.http_reader import format_offset as reader_format
from unbroken.client.http_reader import parse_offset as reader_parse
from unbroken.server.http_agent import format_offset, parse_offset
from unbroken.server.http_common import CURSOR_EPOCH, CURSOR_INTERVAL, cursor, sse_event

seqs = st.integers(min_value=0, max_value=2**53)
digests = st.binary(min_size=16, max_size=16)


@settings(deadline=None)
@given(seqs, digests)
def test_offsets_round_trip_and_server_and_reader_agree(seq: int, digest: bytes) -> None:
    off = format_offset(seq, digest)
    assert off == reader_format(seq, digest)
    assert parse_offset(off) == reader_parse(off) == (seq, digest)
    assert not set(off) & set(",&=?/")  # the protocol's forbidden characters
    assert off not in ("-1", "now")


@settings(deadline=None)
@given(seqs, digests, seqs, digests)
def test_offsets_sort_by_seq(a: int, da: bytes, b: int, db: bytes) -> None:
    if a < b:
        assert format_offset(a, da) < format_offset(b, db)


@settings(deadline=None)
@given(st.floats(min_value=CURSOR_EPOCH, max_value=CURSOR_EPOCH + 10**9), st.integers(0, 10**12))
def test_a_cursor_never_goes_back_from_the_clients(now: float, theirs: int) -> None:
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    got = int(cursor(now, str(theirs)))
    assert got >= current
    if theirs >= current:
        assert got > theirs  # strictly past an echoed cursor: no cache loop
    assert int(cursor(now, None)) == current


def _parse(stream: bytes) -> list[tuple[str, str]]:
    """A spec SSE parser (CR, LF and CRLF end lines; one leading space stripped)."""
    events: list[tuple[str, str]] = []
    kind, data = "", list[str]()
    for line in re.split(r"\r\n|\r|\n", stream.decode()):
        if not line:
            if data:
                events.append((kind or "message", "\n".join(data)))
            kind, data = "", []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    return events


@settings(deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200))
def test_any_payload_is_one_data_event(payload: str) -> None:
    body = sse_event("data", payload) + sse_event("control", '{"x":1}', "id1")
    events = _parse(body)
    expected = re.sub(r"\r\n|\r", "\n", payload)  # line ends are normalised, nothing else
    assert events == [("data", expected), ("control", '{"x":1}')]
