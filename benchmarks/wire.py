"""Wire efficiency: bytes the server sends ÷ payload, and the extra bytes a cut costs.

``unbroken serve benchmarks.paced:app`` (and again with ``--ws-per-message-deflate``)
in its own process; a ``FaultProxy`` in this process counts every byte the server
sends (TCP payload: WebSocket framing, protocol frames, compression included; the
HTTP upgrade included). The client speaks protocol v1 with ``ClientSession`` over
raw ``websockets`` (decodes and verifies every event; deflate negotiated when the
server offers it). Payload = 20 bytes per token. Shapes: one stream written as fast
as the agent can (``fast``), paced at 1,000 tokens/s and at 20 tokens/s (an LLM's
pace: a frame per token). The bare baseline is a plain ``websockets`` server sending
the same paced tokens, one message each.

Cut: the 20 tokens/s stream (a frame per token, so framing is the same from run to
run) run clean, then again with one ``rst`` cut at a
random byte offset; extra = server bytes with the cut − without, against the bytes
of the frames that were in flight (sent by the server, not received by the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.common import finish, meta, module_server, progress, unbroken_server
from unbroken.chaos import FaultProxy
from unbroken.protocol.client_session import ClientSession, StreamEvents
from unbroken.protocol.events import Kind
from unbroken.protocol.frames_v2 import CAP_ZLIB

TOKEN_BYTES = 20
AIM_RATIO, AIM_RATIO_DEFLATE = 1.25, 0.5
VERSIONS = ("v1", "v2")
#: issue 17's aims for v2: fast ≤ 1.1; paced ≤ 2.0 (≤ 1.0 compressed)
AIM_V2_FAST, AIM_V2_PACED, AIM_V2_PACED_DEFLATE = 1.1, 2.0, 1.0


def aim(version: str, shape: str, deflate: bool) -> float:
    """The aim of one row: v1's (1.25, 0.5 with deflate) or v2's."""
    if version == "v2" and shape.startswith("paced"):
        return AIM_V2_PACED_DEFLATE if deflate else AIM_V2_PACED
    if version == "v2" and not deflate:
        return AIM_V2_FAST
    return AIM_RATIO_DEFLATE if deflate else AIM_RATIO


async def _ws(
    port: int, deflate: bool, bare: bool = False, version: str = "v1"
) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{port}{'/' if bare else '/ws'}",
        subprotocols=None if bare else [f"unbroken.{version}"],  # type: ignore[list-item]
        max_size=None,
        ping_interval=None,
        compression="deflate" if deflate else None,
        open_timeout=30,
    )


async def _stream(
    proxy: FaultProxy,
    agent: str,
    inp: dict[str, Any],
    deflate: bool,
    cut_at: int | None,
    version: str = "v1",
    zlib: bool = False,
) -> dict[str, Any]:
    """One stream through the proxy (resuming after a cut); server bytes and frames."""
    cs = ClientSession(caps=(CAP_ZLIB,) if zlib else ())
    frames = events = 0
    sizes: list[int] = []
    started = False
    cut = None
    for _attempt in range(5):
        ws = await _ws(proxy.port, deflate, version=version)
        if cut_at is not None and cut is None:
            live = proxy.connections[-1]
            cut = proxy.cut_after_bytes(live.downstream.sent + cut_at, mode="rst", once=True)
        await ws.send(cs.wire(cs.connect(version=version)))
        cs.receive(await ws.recv())
        for f in cs.after_welcome():
            await ws.send(cs.wire(f))
        if not started:
            f = cs.start(os.urandom(6).hex(), agent, inp)
            assert f is not None
            await ws.send(cs.wire(f))
            started = True
        try:
            async for msg in ws:
                for one in cs.frames_of(msg):  # (a zlib message holds a frame or a batch)
                    out = cs.receive(one)
                    if isinstance(out, StreamEvents):
                        frames += 1
                        sizes.append(len(msg))
                        events += len(out.events)
                for ack in cs.take_acks():
                    await ws.send(cs.wire(ack))
                if isinstance(out, StreamEvents) and out.events[-1].kind is Kind.END:
                    await ws.close()
                    return {
                        "frames": frames,
                        "events": events,
                        "median_frame_bytes": statistics.median(sizes),
                        "cut_record": cut.fired.result().to_json()
                        if cut is not None and cut.fired.done()
                        else None,
                    }
        except Exception:
            pass
        cs.connection_lost()
    raise RuntimeError("stream did not end after 5 connections")


async def measure(
    port: int,
    shape: str,
    deflate: bool,
    cut_at: int | None = None,
    version: str = "v1",
    zlib: bool = False,
) -> dict[str, Any]:
    agent, inp, tokens = {
        "fast": ("quick", {"n": 100_000}, 100_000),
        "paced_1000": ("paced", {"n": 2000, "rate": 1000.0}, 2000),
        "paced_20": ("paced", {"n": 60, "rate": 20.0}, 60),
    }[shape]
    async with FaultProxy(upstream=("127.0.0.1", port)) as proxy:
        t0 = time.process_time()
        r = await _stream(proxy, agent, inp, deflate, cut_at, version, zlib)
        r["client_cpu_s"] = round(time.process_time() - t0, 3)
        server_bytes = sum(c.downstream.received for c in proxy.history)
    payload = tokens * TOKEN_BYTES
    r.update(
        shape=shape,
        version=version + ("+zlib" if zlib else ""),
        deflate=deflate,
        tokens=tokens,
        payload_bytes=payload,
        server_bytes=server_bytes,
        ratio=round(server_bytes / payload, 3),
    )
    return r


async def bare(port: int, tokens: int, rate: float) -> dict[str, Any]:
    async with FaultProxy(upstream=("127.0.0.1", port)) as proxy:
        ws = await _ws(proxy.port, False, bare=True)
        await ws.send(json.dumps({"n": tokens, "rate": rate}))
        async for msg in ws:
            if msg == "END":
                break
        await ws.close()
        server_bytes = sum(c.downstream.received for c in proxy.history)
    payload = tokens * TOKEN_BYTES
    return {
        "shape": f"bare_paced_{int(rate)}",
        "tokens": tokens,
        "payload_bytes": payload,
        "server_bytes": server_bytes,
        "ratio": round(server_bytes / payload, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    res = meta()
    res["benchmark"] = "wire"
    rows: list[dict[str, Any]] = []
    shapes = ["fast", "paced_20"] if quick else ["fast", "paced_1000", "paced_20"]
    for i, deflate in enumerate((False, True)):
        progress(i, 4)
        extra = ("--ws-per-message-deflate",) if deflate else ()
        with unbroken_server("benchmarks.paced:app", *extra) as (port, _):
            rows += [
                asyncio.run(measure(port, s, deflate, version=v)) for v in VERSIONS for s in shapes
            ]
            if not deflate:  # v2's own per-message compression of large messages
                rows += [
                    asyncio.run(measure(port, s, False, version="v2", zlib=True)) for s in shapes
                ]
    with module_server("benchmarks.bare") as (port, _):
        if not quick:
            rows.append(asyncio.run(bare(port, 2000, 1000.0)))
        rows.append(asyncio.run(bare(port, 60, 20.0)))
    progress(2, 4)
    rng = random.Random(8)
    cuts: list[dict[str, Any]] = []
    with unbroken_server("benchmarks.paced:app") as (port, _):
        for _ in range(1 if quick else 5):
            # 20 tokens/s: one frame per token, so the framing of two runs is the same
            clean = asyncio.run(measure(port, "paced_20", False))
            offset = rng.randint(1_500, 7_000)
            with contextlib.suppress(Exception):
                cut = asyncio.run(measure(port, "paced_20", False, cut_at=offset))
                rec = json.loads(cut["cut_record"] or "{}")
                cuts.append(
                    {
                        "offset": offset,
                        "extra_bytes": cut["server_bytes"] - clean["server_bytes"],
                        "median_frame_bytes": clean["median_frame_bytes"],
                        "dropped_by_proxy": (rec.get("dropped") or {}).get("downstream", 0),
                    }
                )
    progress(4, 4)
    res["shapes"] = rows
    res["cuts"] = cuts
    by = {(r.get("version"), r["shape"], r.get("deflate")): r["ratio"] for r in rows}
    extra = [c["extra_bytes"] for c in cuts]
    res["figures"] = [
        {
            "name": f"wire ÷ payload, {v} {s}" + (" (deflate)" if d else ""),
            "value": by[(v, s, d)],
            "aim": aim(v, s, d),
            "met": by[(v, s, d)] <= aim(v, s, d),
            "unit": "×",
        }
        for v in VERSIONS
        for d in (False, True)
        for s in shapes
    ]
    res["figures"] += [
        {
            "name": f"wire ÷ payload, v2+zlib {s}",
            "value": by[("v2+zlib", s, False)],
            "aim": aim("v2", s, True),
            "met": by[("v2+zlib", s, False)] <= aim("v2", s, True),
            "unit": "×",
        }
        for s in shapes
    ]
    res["figures"] += [
        {
            "name": f"wire ÷ payload, bare websockets {r['shape'][11:]} tokens/s",
            "value": r["ratio"],
            "aim": None,
            "met": None,
            "unit": "×",
        }
        for r in rows
        if r["shape"].startswith("bare")
    ]
    if cuts:
        res["figures"].append(
            {
                "name": "extra server bytes per rst cut (median) vs one frame",
                "value": f"{statistics.median(extra):.0f} vs {cuts[0]['median_frame_bytes']:.0f}",
                "aim": "≤ lost + one frame",
                "met": statistics.median(c["extra_bytes"] - c["dropped_by_proxy"] for c in cuts)
                <= cuts[0]["median_frame_bytes"],
                "unit": "B",
            }
        )
    return finish(res)


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    rows = res["shapes"]
    names = [
        f"{r.get('version', '')} {r['shape']}" + (" +deflate" if r.get("deflate") else "")
        for r in rows
    ]
    ax.barh(names, [r["ratio"] for r in rows])
    ax.axvline(AIM_RATIO, color="red", ls=":", lw=0.8, label="aim 1.25")
    ax.axvline(AIM_RATIO_DEFLATE, color="orange", ls=":", lw=0.8, label="aim 0.5 (deflate)")
    ax.set_xscale("log")
    ax.set(xlabel="bytes sent by the server ÷ payload bytes", title="Wire efficiency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
