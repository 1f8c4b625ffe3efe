"""Answers for store tests: long, plausible mixes of parts and kinds."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from tests.unit.protocol.strategies import renumber
from unbroken.protocol.events import Event, Kind

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
    return renumber(out)


def long_answers(max_events: int = 2000) -> st.SearchStrategy[list[Event]]:
    """:func:`random_events` of up to ``max_events`` events from a drawn seed (long runs
    that span a Redis entry and many memory checkpoints)."""
    return st.builds(random_events, st.randoms(use_true_random=False), st.integers(1, max_events))
