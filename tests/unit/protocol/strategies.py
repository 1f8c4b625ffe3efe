"""Hypothesis strategies and helpers for the protocol tests: valid streams, frames."""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import strategies as st

from unbroken.protocol import digest, frames
from unbroken.protocol.events import KIND_BY_NAME, Event, Kind, chunk, end, part_end, part_start
from unbroken.protocol.frames import (
    Ack,
    Cancel,
    Error,
    Gone,
    Hb,
    Hello,
    Limits,
    Ping,
    Pong,
    Refresh,
    Resume,
    Resumed,
    Resync,
    Start,
    Started,
    Welcome,
)

STREAM = "Xq3v9Lr0bZ2kT8mWc4HnJg"
EPOCH = "ep0ch-A1b2C3d4"

PART_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))

#: Any Unicode scalar value (no surrogates): what a JSON string can carry.
texts = st.text(max_size=40)
no_nul_texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
part_ids = st.text(PART_ALPHABET, min_size=1, max_size=64)
stream_ids = st.text(ID_ALPHABET, min_size=1, max_size=64)
req_ids = st.text(PRINTABLE, min_size=1, max_size=128)
seqs = st.integers(0, 2**53)
hex16 = st.binary(min_size=16, max_size=16).map(bytes.hex)
CHUNK_OF = {"text": Kind.TEXT, "json": Kind.JSON, "data": Kind.DATA}


@st.composite
def streams(draw: st.DrawFn, max_events: int = 30, with_end: bool = True) -> list[Event]:
    """A valid event sequence: parts opened, chunked (interleaved), closed, then ``end``.

    Includes chunks of parts that were never started (like the default ``text``
    part), empty bodies, any Unicode, mime types and schemas.
    """
    events: list[Event] = []
    open_parts: dict[str, str] = {}
    used: set[str] = set()
    n = draw(st.integers(0 if with_end else 1, max_events))
    for _ in range(n):
        seq = len(events) + 1
        ops = ["start", "loose"]
        if open_parts:
            ops += ["chunk"] * 4 + ["close"]
        op = draw(st.sampled_from(ops))
        if op == "start":
            pid = draw(part_ids)
            if pid in used or pid.startswith("loose"):
                pid = f"{pid[:40]}.{seq}"
            used.add(pid)
            kind = draw(st.sampled_from(["text", "json", "data"]))
            open_parts[pid] = kind
            events.append(
                part_start(
                    seq,
                    pid,
                    kind,  # type: ignore[arg-type]
                    mime=draw(no_nul_texts),
                    schema=draw(texts),
                )
            )
        elif op == "loose":  # a chunk of a part never started (kind known only from the item)
            pid = "loose" + draw(st.sampled_from(["", "-a", "-b"]))
            kind_name = {"loose": "text", "loose-a": "json", "loose-b": "data"}[pid]
            events.append(chunk(seq, CHUNK_OF[kind_name], pid, draw(texts)))
        elif op == "chunk":
            pid = draw(st.sampled_from(sorted(open_parts)))
            events.append(chunk(seq, CHUNK_OF[open_parts[pid]], pid, draw(texts)))
        else:
            pid = draw(st.sampled_from(sorted(open_parts)))
            del open_parts[pid]
            events.append(part_end(seq, pid, error=draw(st.sampled_from(["", "bad"]) | texts)))
    if with_end:
        status = draw(st.sampled_from(["completed", "failed", "cancelled"]))
        events.append(end(len(events) + 1, status, error=draw(texts)))  # type: ignore[arg-type]
    return events


@st.composite
def splits(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """``events`` cut into consecutive non-empty frames at random points."""
    n = len(events)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n))) if n > 1 else []
    bounds = [0, *cuts, n]
    return [events[a:b] for a, b in itertools.pairwise(bounds)]


def encode_frames(
    batches: list[list[Event]], stream: str = STREAM, epoch: str = EPOCH
) -> list[bytes]:
    """The ``events`` frames a server sends for these batches (real encoders, real digests)."""
    h = digest.seed(stream, epoch)
    out = []
    for batch in batches:
        for ev in batch:
            h = digest.step_event(h, ev)
        out.append(frames.encode_events_frame(stream, batch[0].seq, frames.encode_items(batch), h))
    return out


def renumber(events: list[Event]) -> list[Event]:
    """Give events the seqs 1..n (and ``end`` a matching count), as a forger would."""
    out = []
    for i, ev in enumerate(events, 1):
        count = i if ev.kind is Kind.END else ev.count
        out.append(msgspec.structs.replace(ev, seq=i, count=count))
    return out


def content(ev: Event) -> tuple[int, bytes]:
    """What the digest covers of an event besides its seq."""
    from unbroken.protocol.events import payload

    return int(ev.kind), payload(ev)


def event_from_json(row: dict[str, object]) -> Event:
    """An :class:`Event` from a vector row (kind given by name)."""
    fields = {k: v for k, v in row.items() if k in Event.__struct_fields__}
    fields["kind"] = KIND_BY_NAME[str(row["kind"])]
    return Event(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ frames
client_frames = st.one_of(
    st.builds(
        Hello,
        caps=st.lists(st.text(max_size=64), max_size=32),
        token=st.none() | st.text(max_size=200),
    ),
    st.builds(
        Start,
        req=req_ids,
        agent=st.text(PART_ALPHABET, min_size=1, max_size=128),
        input=st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | texts,
            lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4),
            max_leaves=10,
        ),
    ),
    st.builds(
        Resume,
        stream=stream_ids,
        after=seqs,
        epoch=stream_ids,
        h=st.none() | hex16,
    ),
    st.builds(Ack, stream=stream_ids, seq=seqs),
    st.builds(Cancel, stream=stream_ids),
    st.builds(Refresh, token=st.text(max_size=200)),
    st.builds(Ping, n=seqs),
)

server_frames = st.one_of(
    st.builds(
        Welcome,
        session=st.text(max_size=64),
        heartbeat_ms=st.integers(1, 2**31),
        epoch=stream_ids,
        limits=st.builds(
            Limits,
            max_frame=st.integers(1, 2**40),
            window=st.integers(1, 2**40),
            max_streams=st.integers(1, 10**6),
            max_chunk=st.integers(1, 2**40),
        ),
        caps=st.lists(st.text(max_size=64), max_size=32),
    ),
    st.builds(Started, req=req_ids, stream=stream_ids, epoch=stream_ids),
    st.builds(
        Resumed,
        stream=stream_ids,
        from_=seqs,
        head=seqs,
        status=st.sampled_from(["running", "completed", "failed", "cancelled"]),
    ),
    st.builds(Resync, stream=stream_ids, reason=st.text(max_size=100)),
    st.builds(
        Gone,
        stream=stream_ids,
        reason=st.sampled_from(["unknown", "expired", "epoch", "diverged", "forbidden"]),
        message=st.text(max_size=100),
    ),
    st.builds(
        Error,
        code=st.text(max_size=64),
        message=st.text(max_size=100),
        stream=st.none() | stream_ids,
        req=st.none() | req_ids,
        retry_after_ms=st.none() | st.integers(0, 2**40),
    ),
    st.just(Hb()),
    st.builds(Pong, n=seqs),
)
