"""Codec benchmark: events/s through the real protocol code paths, on one core.

Server side (encode + digest): for each event ``digest.step(prev, seq, kind,
payload(event))``, then per frame ``frames.encode_items`` and
``frames.encode_events_frame``.
Client side (decode + verify): ``ClientSession.receive`` on each frame (strict
decode, ``events_of``, the digest chain and the frame's ``h`` check).

The event is a 20-byte text token. Two shapes: one event per frame and 64 per
frame. Wire bytes per token = frame bytes ÷ payload (body) bytes.

Both protocol versions: ``results`` are v1's, ``results_v2`` v2's. The v2 server
path is the real one: v1 items (what the stores keep) re-encoded by
``frames_v2.ServerCodec.events`` (MessagePack, stream handle, 8-byte ``h``); the v2
client path is ``ClientSession.receive`` on a v2 connection.

Run: ``.venv/bin/python -m benchmarks.codec`` (writes benchmarks/results/codec.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import unbroken
from unbroken.protocol import (
    ClientSession,
    Event,
    Kind,
    encode,
    encode_events_frame,
    encode_items,
    payload,
    seed,
    step,
)
from unbroken.protocol.frames import Started, Welcome
from unbroken.protocol.frames_v2 import ServerCodec

STREAM = "Xq3v9Lr0bZ2kT8mWc4HnJg"  # 22 chars, like secrets.token_urlsafe(16) (128 bits)
EPOCH = "e1"
TOKEN_BYTES = 20
AIMS = {
    "encode_events_per_s_batched": 1_000_000,
    "decode_events_per_s_batched": 1_000_000,
    "encode_events_per_s_single": 200_000,
    "decode_events_per_s_single": 200_000,
    "wire_ratio_batched": 1.25,
}
RESULTS = Path(__file__).resolve().parent / "results" / "codec.json"


def token_events(n: int) -> list[Event]:
    """``n`` text chunks of the default part, each a distinct 20-byte token."""
    events = [Event(i, Kind.TEXT, part="text", body=f" token{i:014d}") for i in range(1, n + 1)]
    assert all(len(ev.body.encode()) == TOKEN_BYTES for ev in events)
    return events


def server_encode(events: list[Event], per_frame: int, version: str = "v1") -> list[bytes]:
    """The server's hot path: chain every event, encode every frame."""
    h = seed(STREAM, EPOCH)
    frames: list[bytes] = []
    codec = ServerCodec() if version == "v2" else None
    if codec is not None:
        codec.encode(Started(req="r1", stream=STREAM, epoch=EPOCH))  # the handle
    for i in range(0, len(events), per_frame):
        batch = events[i : i + per_frame]
        for ev in batch:
            h = step(h, ev.seq, ev.kind, payload(ev))
        items = encode_items(batch)
        if codec is not None:
            frames.append(codec.events(STREAM, batch[0].seq, items, h, batch[-1].kind))
        else:
            frames.append(encode_events_frame(STREAM, batch[0].seq, items, h))
    return frames


def client_session(version: str = "v1") -> ClientSession:
    """A client session, welcomed, with the benchmark stream started."""
    session = ClientSession()
    session.connect(version=version)
    codec = ServerCodec() if version == "v2" else None
    enc = codec.encode if codec is not None else encode
    session.receive(enc(Welcome(session="s1", heartbeat_ms=1000, epoch=EPOCH)))
    session.start("r1", "bench", None)
    session.receive(enc(Started(req="r1", stream=STREAM, epoch=EPOCH)))
    return session


def client_decode(frames: list[bytes], session: ClientSession) -> int:
    """The client's hot path: receive every frame (decode, rebuild events, verify)."""
    receive = session.receive
    n = 0
    for frame in frames:
        out = receive(frame)
        n += len(out.events)  # type: ignore[union-attr]
    return n


def best_rate(run: Callable[[], object], events: int, repeats: int) -> tuple[float, float]:
    """(best, median) events/s over ``repeats`` runs, timed in CPU time of this process.

    CPU time, not wall time: on a shared machine other processes take turns on the
    core, and that is not the codec's cost. ``gc`` stays on, as in production.
    """
    rates = []
    for _ in range(repeats):
        t0 = time.process_time()
        run()
        rates.append(events / (time.process_time() - t0))
    return max(rates), statistics.median(rates)


def measure(per_frame: int, n: int, repeats: int, version: str = "v1") -> dict[str, Any]:
    events = token_events(n)
    frames = server_encode(events, per_frame, version)
    enc_best, enc_median = best_rate(lambda: server_encode(events, per_frame, version), n, repeats)

    def decode() -> None:
        session = client_session(version)
        assert client_decode(frames, session) == n
        assert session.by_stream[STREAM].seq == n

    dec_best, dec_median = best_rate(decode, n, repeats)
    wire = sum(len(f) for f in frames)
    body = n * TOKEN_BYTES
    sample = frames[1] if per_frame == 1 else frames[1][:160]
    return {
        "version": version,
        "events_per_frame": per_frame,
        "events": n,
        "encode_events_per_s": round(enc_best),
        "encode_events_per_s_median": round(enc_median),
        "decode_events_per_s": round(dec_best),
        "decode_events_per_s_median": round(dec_median),
        "frame_bytes": wire,
        "payload_bytes": body,
        "wire_ratio": round(wire / body, 4),
        "framing_bytes_per_token": round((wire - body) / n, 2),
        "example_frame": sample.decode() if version == "v1" else sample.hex(),
    }


def pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=64 * 512, help="events per timed run")
    parser.add_argument("--repeats", type=int, default=40, help="timed runs; the best counts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cpu = pin_one_core()
    load_before = os.getloadavg()
    single = measure(1, args.events, args.repeats)
    batched = measure(64, args.events, args.repeats)
    single2 = measure(1, args.events, args.repeats, "v2")
    batched2 = measure(64, args.events, args.repeats, "v2")
    # Bytes only (no timing): how framing overhead falls as the server coalesces more.
    sample = token_events(1024)
    wire_by_batch = {
        n: round(sum(map(len, server_encode(sample, n))) / (len(sample) * TOKEN_BYTES), 4)
        for n in (1, 4, 16, 64, 128, 256, 1024)
    }
    wire_by_batch_v2 = {
        n: round(sum(map(len, server_encode(sample, n, "v2"))) / (len(sample) * TOKEN_BYTES), 4)
        for n in (1, 4, 16, 64, 128, 256, 1024)
    }
    met = {
        "encode_events_per_s_batched": batched["encode_events_per_s"]
        >= AIMS["encode_events_per_s_batched"],
        "decode_events_per_s_batched": batched["decode_events_per_s"]
        >= AIMS["decode_events_per_s_batched"],
        "encode_events_per_s_single": single["encode_events_per_s"]
        >= AIMS["encode_events_per_s_single"],
        "decode_events_per_s_single": single["decode_events_per_s"]
        >= AIMS["decode_events_per_s_single"],
        "wire_ratio_batched": batched["wire_ratio"] <= AIMS["wire_ratio_batched"],
        # issue 17: v2's decode+verify at least v1's
        "v2_decode_at_least_v1_batched": batched2["decode_events_per_s"]
        >= batched["decode_events_per_s"],
        "v2_decode_at_least_v1_single": single2["decode_events_per_s"]
        >= single["decode_events_per_s"],
    }
    result = {
        "benchmark": "codec",
        "unbroken": unbroken.__version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpu_pinned": cpu,
        "cpus": os.cpu_count(),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "clock": "process CPU time (time.process_time), best of repeats; median also given",
        "token_bytes": TOKEN_BYTES,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [single, batched],
        "results_v2": [single2, batched2],
        "wire_ratio_by_events_per_frame": wire_by_batch,
        "wire_ratio_by_events_per_frame_v2": wire_by_batch_v2,
        "aims": AIMS,
        "met": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"unbroken codec, one core, {TOKEN_BYTES}-byte text tokens")
    for col in (
        "version",
        "events/frame",
        "encode+digest ev/s",
        "decode+verify ev/s",
        "wire ÷ payload",
    ):
        table.add_column(col, justify="right")
    for r in (single, batched, single2, batched2):
        table.add_row(
            r["version"],
            str(r["events_per_frame"]),
            f"{r['encode_events_per_s']:,}",
            f"{r['decode_events_per_s']:,}",
            f"{r['wire_ratio']:.3f}",
        )
    console = Console()
    console.print(table)
    ratios = ", ".join(f"{n}: {r:.3f}" for n, r in wire_by_batch.items())
    console.print(f"  wire ÷ payload by events per frame: {ratios}")
    ratios2 = ", ".join(f"{n}: {r:.3f}" for n, r in wire_by_batch_v2.items())
    console.print(f"  v2 wire ÷ payload by events per frame: {ratios2}")
    for name, ok in met.items():
        mark = "[green]met[/]" if ok else "[red]missed[/]"
        target = f"{AIMS[name]:,}" if name in AIMS else "v1's"
        console.print(f"  aim {name} ({target}): {mark}")
    console.print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
