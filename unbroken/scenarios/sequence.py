"""What each resume asked for and what the server re-sent, read back from the server's
sequence trace (:class:`~unbroken.scenarios.harness.WireTap`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .harness import WireTap

#: Largest ``events`` frame the server sends (the app's default ``frame_cap``).
FRAME_CAP = 256 * 1024


@dataclass(slots=True)
class Episode:
    """One resume of one stream: on connection ``conn`` the client asked for the events
    after ``after``; the server had sent up to ``max_sent`` before."""

    stream: str
    conn: int
    after: int
    max_sent: int
    first_replayed: int | None
    inflight: float
    resent: float
    resent_events: int

    @property
    def position_ok(self) -> bool:
        return (self.first_replayed is None or self.first_replayed == self.after + 1) and (
            self.after <= self.max_sent
        )

    @property
    def within_limit(self) -> bool:
        return self.resent <= self.inflight + FRAME_CAP

    def describe(self) -> str:
        return (
            f"stream {self.stream[:8]} conn {self.conn}: resume after {self.after}, first "
            f"replayed {self.first_replayed}, server had sent up to {self.max_sent}; "
            f"re-sent {self.resent:,.0f} B for {self.inflight:,.0f} B in flight"
        )


def resend_episodes(tap: WireTap | None, streams: Iterable[str]) -> list[Episode]:
    """Per stream and reconnection: what the client asked for, what the server re-sent,
    and what had been in flight (from the server's sequence trace)."""
    if tap is None:
        return []
    frames = tap.frames()
    ids = {s for s in streams if s}
    by_stream: dict[str, list[Any]] = {s: [] for s in ids}
    for f in frames:
        if f.stream in by_stream and f.kind in ("events", "resume"):
            by_stream[f.stream].append(f)
    out: list[Episode] = []
    for stream, fs in by_stream.items():
        latest: dict[int, float] = {}  # seq -> bytes of its latest send (prorated)
        max_sent = 0
        conns: list[int] = []
        for f in fs:
            if f.conn not in conns:
                conns.append(f.conn)
        for conn in conns:
            here = [f for f in fs if f.conn == conn]
            resume = next((f for f in here if f.kind == "resume"), None)
            evs = [f for f in here if f.kind == "events"]
            if resume is not None and (max_sent or conn != conns[0]):
                after = resume.seq
                inflight = sum(latest.get(s, 0.0) for s in range(after + 1, max_sent + 1))
                resent = 0.0
                resent_events = 0
                for f in evs:
                    overlap = max(0, min(f.last, max_sent) - f.seq + 1)
                    if overlap:
                        resent += f.nbytes * overlap / f.count
                        resent_events += overlap
                out.append(
                    Episode(
                        stream,
                        conn,
                        after,
                        max_sent,
                        evs[0].seq if evs else None,
                        inflight,
                        resent,
                        resent_events,
                    )
                )
            for f in evs:
                per = f.nbytes / f.count if f.count else 0.0
                for s in range(f.seq, f.last + 1):
                    latest[s] = per
                max_sent = max(max_sent, f.last)
    return out
