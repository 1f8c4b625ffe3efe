"""``Attachment.chunk_frame`` (a pushed token's frame, issue 21) is ``frame`` of the
chunk's items array, byte for byte, with the same counts and flow, in v1 and v2."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.observe.counts import Counts
from unbroken.protocol.events import Kind
from unbroken.protocol.frames import ServerCodec
from unbroken.protocol.frames_v2 import ServerCodec as ServerCodecV2
from unbroken.protocol.items import chunk_item, chunk_items
from unbroken.protocol.server_session import StreamFlow
from unbroken.server.attach import Attachment
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

_KINDS = st.sampled_from([int(Kind.TEXT), int(Kind.JSON), int(Kind.DATA)])


def _att(v2: bool, stream: str) -> Attachment:
    flow = StreamFlow(0, window=1 << 20, frame_cap=64 << 10)
    codec: ServerCodec | ServerCodecV2 = ServerCodec()
    if v2:
        codec = ServerCodecV2()
        codec._bind(stream)  # (what encoding its ``started`` does)
    return Attachment(MemoryStore(Retention()), stream, flow, Counts(), codec)


def _flow_state(f: StreamFlow) -> tuple[object, ...]:
    return (
        f.sent,
        f.ramp,
        f.inflight_bytes,
        f.sent_bytes,
        f.ended,
        *map(list, f.records()),
    )


@settings(max_examples=50, deadline=None)
@given(
    v2=st.booleans(),
    stream=st.text(min_size=1, max_size=12),
    tokens=st.lists(
        st.tuples(_KINDS, st.text(min_size=1, max_size=8), st.text(max_size=30)),
        min_size=1,
        max_size=6,
    ),
    digest=st.binary(min_size=32, max_size=32),
)
def test_chunk_frame_is_frame_of_chunk_items(
    v2: bool, stream: str, tokens: list[tuple[int, str, str]], digest: bytes
) -> None:
    fast, slow = _att(v2, stream), _att(v2, stream)
    for seq, (kind, part, body) in enumerate(tokens, 1):
        enc = chunk_item(body)
        a = fast.chunk_frame(seq, kind, part, enc, digest)
        b = slow.frame(seq, 1, chunk_items(kind, part, enc), digest, kind)
        assert a == b
        assert _flow_state(fast.flow) == _flow_state(slow.flow)
        assert fast.counts.events_out == slow.counts.events_out == seq
