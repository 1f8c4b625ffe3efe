"""The memory log's arena: whatever the mix of parts and kinds, however the
producer batched the appends and wherever a reader starts or stops, a read
decodes to exactly the events written, with the chain digest of the log.

No sockets here: this pins the encoding the socket tests rely on."""

from __future__ import annotations

import random

import pytest

from unbroken.protocol.digest import chain
from unbroken.protocol.digest import seed as seed_of
from unbroken.protocol.events import Event, Kind
from unbroken.protocol.frames import Events, decode_server, encode_events_frame, events_of
from unbroken.server.producer import Producer
from unbroken.store.base import Retention
from unbroken.store.memory import MemoryStore

ALPHABET = 'ab "\\\n\x01é😀/\u2028'


def random_events(rng: random.Random, n: int) -> list[Event]:
    """A plausible answer: parts opened and closed, chunks of each, some interleaved."""
    out: list[Event] = []
    open_parts: dict[str, Kind] = {}
    kinds = {"text": Kind.TEXT, "json": Kind.JSON, "data": Kind.DATA}
    for i in range(n):
        roll = rng.random()
        if roll < 0.06 or not open_parts:
            pk = rng.choice(list(kinds))
            part = f"p{i}"
            open_parts[part] = kinds[pk]
            out.append(Event(0, Kind.PART_START, part=part, part_kind=pk, mime="m/x"))
        elif roll < 0.1:
            part = rng.choice(list(open_parts))
            del open_parts[part]
            out.append(Event(0, Kind.PART_END, part=part, error=rng.choice(["", "bad"])))
        else:
            # mostly the same part as before (long runs), sometimes another one
            part = out[-1].part if out[-1].part in open_parts and rng.random() < 0.9 else None
            part = part or rng.choice(list(open_parts))
            body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
            out.append(Event(0, open_parts[part], part=part, body=body))
    out.append(Event(0, Kind.END, status="completed"))
    return [
        Event(
            seq,
            e.kind,
            part=e.part,
            body=e.body,
            part_kind=e.part_kind,
            mime=e.mime,
            schema=e.schema,
            status=e.status,
            error=e.error,
            count=seq if e.kind is Kind.END else 0,
        )
        for seq, e in enumerate(out, 1)
    ]


@pytest.mark.parametrize("seed", range(12))
async def test_reads_decode_to_the_events_written_with_the_logs_digests(seed: int) -> None:
    rng = random.Random(seed)
    events = random_events(rng, rng.randint(1, 600))
    store = MemoryStore(Retention())
    created = await store.create("o", f"r{seed}", 0.0)
    producer = Producer(store, created.stream, created.epoch, created.producer)
    for ev in events[:-1]:
        if ev.kind in (Kind.TEXT, Kind.JSON, Kind.DATA):
            producer.add_chunk(ev.kind, ev.part, ev.body)
        else:
            producer.add(ev)
        if rng.random() < 0.05:
            await producer.flush()
    await producer.finish("completed", "", 1.0)
    digests = chain(created.stream, created.epoch, events)
    meta = await store.meta(created.stream)
    assert meta is not None and meta.head == len(events) and meta.digest == digests[-1]
    assert list((await store.read_all(created.stream))[1]) == events
    assert list(await store.read_digests(created.stream)) == digests

    for _ in range(12):
        after = rng.randint(0, len(events) - 1)
        budget = rng.choice([1, 64, 300, 5000, 1 << 20])
        got: list[Event] = []
        kinds: dict[str, str] = {
            e.part: e.part_kind for e in events[:after] if e.kind is Kind.PART_START
        }
        while True:
            batch = await store.read(created.stream, after, budget)
            if batch is None:
                break
            frame = encode_events_frame(created.stream, batch.first, batch.items, batch.digest)
            decoded = decode_server(frame)
            assert isinstance(decoded, Events)
            evs = events_of(decoded, kinds)
            assert len(evs) == batch.count
            assert batch.digest == digests[batch.first + batch.count - 2]
            got.extend(evs)
            after = batch.first + batch.count - 1
        assert got == events[len(events) - len(got) :]
        assert got[-1].kind is Kind.END
        # digests at every position a resume could name
        seq = rng.randint(0, len(events))
        expected = digests[seq - 1] if seq else seed_of(created.stream, created.epoch)
        assert await store.digest_at(created.stream, seq) == expected
