"""Figures of the JS client in Chromium (issue 14), printed as JSON.

    .venv/bin/python -m tests.browser.measure [--cuts 100] [--freeze 30] [--pace 0.02]
        [--only-recovery] [--out FILE]

``python -m benchmarks.browser`` runs it twice (as fast as it can, and paced) for
``benchmarks/results/browser.json``.

* recovery in the page after a fin or rst cut at a random point (10–90 %) of a
  300 kB answer: from the page's ``disconnected`` event to the next event it
  receives (the first missing one), p50 / p99 / max over ``--cuts`` runs;
* silent drop (blackhole) found: from the last event received to ``disconnected``;
* resume after a Page Lifecycle freeze of ``--freeze`` seconds: from ``resume`` to
  the first new event;
* events decoded and verified per second in the page (64-event frames, no network),
  and end to end (1.1 MB answer over loopback);
* bundle size, minified and minified + gzip;
* where a recovery's time goes (medians over the cuts), from a probe wrapping the
  page's WebSocket: ``close_to_lost`` (the old socket's ``close`` → the client's
  ``disconnected``), ``lost_to_new_socket`` (→ the client opens the next socket: its
  backoff and token), ``connect`` (→ ``open``: TCP, the proxy, the upgrade),
  ``hello_welcome`` (→ ``welcome``), so ``reconnect`` in all; ``resume`` (→ the first
  ``events`` message: resume, resumed and the server's catch-up read), ``verify``
  (the client's handler of that message: decode, verify, queue its events),
  ``deliver`` (→ the first event in the page's ``for await``), the size of that
  first message, and ``first_connect`` (``connect`` of the page's first socket, to
  an idle server: the floor a reconnect cannot beat on this machine).

The server, the proxy and Playwright share this process's event loop; the agent
writes as fast as it can unless ``--pace`` (then the page keeps up, as with a
model's tokens). The machine's load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import signal
import statistics
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from playwright.async_api import async_playwright

from unbroken.chaos import FaultProxy
from unbroken.testing import serve

from .conftest import ARGS, BUNDLE, CHROMIUM, _Site, mixed_app, start_own_chromium

DONE = "window.log && window.log.done === true"
#: wire bytes per answer byte (protocol v2 without zlib; v1: 1.25)
WIRE = 1.03
ROOT = Path(__file__).resolve().parents[2]

# Records, for every message a socket of the page gets: [socket number, arrival,
# end of the client's handler, length, first 24 characters] (performance.now() ms).
WS_PROBE = """(() => {
  const Base = window.WebSocket;
  const probe = (window.__ws = { opened: [], messages: [], open: {}, closed: {} });
  let count = 0;
  // a message's length and what it starts with: v1, its first 24 characters; v2
  // (MessagePack, binary), the tag of its first frame as v1 names it ('"t":"events"')
  const TAGS = { 1: "events", 2: "welcome", 3: "started", 4: "resumed", 7: "error", 8: "hb" };
  const head = (d) => {
    if (typeof d === "string") return [d.length, d.slice(0, 24)];
    const b = new Uint8Array(d);
    // [0, [frame, …]] (a batch: array header of 1 or 3 bytes), else [tag, …]
    const tag = b[1] === 0 ? b[(b[2] === 0xdc ? 5 : 3) + 1] : b[1];
    return [b.length, `"t":"${TAGS[tag] ?? tag}"`];
  };
  window.WebSocket = class extends Base {
    constructor(...args) {
      super(...args);
      const id = count++;
      probe.opened.push([id, performance.now()]);
      this.addEventListener("open", () => (probe.open[id] = performance.now()));
      this.addEventListener("close", () => (probe.closed[id] = performance.now()));
      let handler = null;
      Object.defineProperty(this, "onmessage", {
        get: () => handler,
        set: (f) => {
          handler = f;
          super.onmessage = f === null ? null : (ev) => {
            const t = performance.now();
            try { f(ev); } finally {
              probe.messages.push([id, t, performance.now(), ...head(ev.data)]);
            }
          };
        },
      });
    }
  };
})()"""

DECODE_BENCH = """async (n) => {
  const m = await import('/testing.js');
  const stream = 'benchStream0123456789', epoch = 'ep';
  const events = [m.makeEvent(1, m.Kind.PART_START, {part: 'text', partKind: 'text'})];
  for (let i = 2; i <= n; i++) {
    events.push(m.makeEvent(i, m.Kind.TEXT, {part: 'text', body: 'token ' + i + ' of it'}));
  }
  const v = new m.ChainVerifier(stream, epoch);
  const frames = [];
  for (let i = 0; i < n; i += 64) {
    const batch = events.slice(i, i + 64);
    const h = m.toHex(v.extend(batch));
    const items = m.encodeItems(batch);
    frames.push(m.encode({t: 'events', stream, seq: batch[0].seq, items, h}));
  }
  // what the client does with each frame: decode, expand the items, chain, compare h
  const c = new m.ChainVerifier(stream, epoch), kinds = new Map();
  const t0 = performance.now();
  for (const f of frames) {
    const frame = m.decodeServer(f);
    c.extend(m.eventsOf(frame, kinds), frame.h);
  }
  const ms = performance.now() - t0;
  return {events: n, ms, per_second: Math.round(n / ms * 1000)};
}"""


# the same in protocol v2: MessagePack frames, the part carried (bare chunks), 8 bytes of h
DECODE_BENCH_V2 = """async (n) => {
  const m = await import('/testing.js');
  const stream = 'benchStream0123456789', epoch = 'ep', MAX = 1 << 24;
  const events = [m.makeEvent(1, m.Kind.PART_START, {part: 'text', partKind: 'text'})];
  for (let i = 2; i <= n; i++) {
    events.push(m.makeEvent(i, m.Kind.TEXT, {part: 'text', body: 'token ' + i + ' of it'}));
  }
  const v = new m.ChainVerifier(stream, epoch);
  const frames = [];
  for (let i = 0; i < n; i += 64) {
    const batch = events.slice(i, i + 64);
    const h = v.extend(batch).slice(0, 8);
    const items = batch.map((e) => (e.kind === m.Kind.PART_START ? [4, 'text', 'text'] : e.body));
    frames.push(m.encodeV2({t: 'events', handle: 0, seq: batch[0].seq, items, h}));
  }
  const c = new m.ChainVerifier(stream, epoch), kinds = new Map(), carried = {part: '', kind: 0};
  const t0 = performance.now();
  for (const f of frames) {
    for (const [value] of m.framesOfV2(f, MAX)) {
      const frame = m.decodeServerV2(value);
      c.extend(m.eventsOfV2(frame.seq, frame.items, kinds, carried), frame.h);
    }
  }
  const ms = performance.now() - t0;
  return {events: n, ms, per_second: Math.round(n / ms * 1000)};
}"""

# the server of --server-process: the page and the mixed agent, on a port it prints
SERVER = """
import asyncio
from unbroken.testing import serve
from tests.browser.conftest import _Site, mixed_app

async def main():
    async with serve(_Site(mixed_app({})), path="/ws") as server:
        print(server.port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class _Port:
    port: int


@contextlib.asynccontextmanager
async def own_process() -> AsyncIterator[_Port]:
    """The server in a process of its own (its own event loop and core, as deployed);
    the fault proxy and Playwright stay in this one."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        yield _Port(int(line))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def breakdown(log: dict[str, Any]) -> dict[str, float] | None:
    """Where the one recovery of a page's run went (see the module's docstring)."""
    lost = next((c["at"] for c in log["conn"] if c["kind"] == "disconnected"), None)
    ws = log.get("ws")
    if lost is None or not ws or len(ws["opened"]) < 2:
        return None
    second = ws["opened"][1][0]
    msgs = [m for m in ws["messages"] if m[0] == second]
    first_events = next((m for m in msgs if '"t":"events"' in m[4]), None)
    if not msgs or first_events is None:
        return None
    recovered = lost + log["recoveries"][0]
    opened = ws["open"].get(str(second))
    first_closed = ws["closed"].get(str(ws["opened"][0][0]))
    o0 = ws["open"].get(str(ws["opened"][0][0]))
    return {
        "first_connect": o0 - ws["opened"][0][1] if o0 is not None else 0.0,
        "close_to_lost": lost - first_closed if first_closed is not None else 0.0,
        "lost_to_new_socket": ws["opened"][1][1] - lost,
        "connect": (opened if opened is not None else msgs[0][1]) - ws["opened"][1][1],
        "hello_welcome": msgs[0][1] - (opened if opened is not None else msgs[0][1]),
        "reconnect": msgs[0][1] - lost,
        "resume": first_events[1] - msgs[0][1],
        "verify": first_events[2] - first_events[1],
        "deliver": recovered - first_events[2],
        "first_message_kB": first_events[3] / 1000,
    }


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50_ms": pct(xs, 0.5),
        "p99_ms": pct(xs, 0.99),
        "max_ms": round(max(xs), 2),
        "mean_ms": round(statistics.mean(xs), 2),
    }


#: The page bundle's files as the server sends them: the core a page loads, then what
#: it loads only when needed (protocol v1's codec, when a server speaks v1; BLAKE2b in
#: JavaScript, where WebAssembly is refused).
BUNDLE_FILES = ("unbroken.js", "unbroken-v1.js", "unbroken-blake2b.js")


def bundle_sizes() -> dict[str, Any]:
    """Minified and gzip -9 bytes of each file of the page bundle; ``min_gzip_bytes``
    is the core entry's (what every page loads), ``total_min_gzip_bytes`` all files'."""
    files = {}
    for name in BUNDLE_FILES:
        raw = (BUNDLE.parent / name).read_bytes()
        files[name] = {"min_bytes": len(raw), "min_gzip_bytes": len(gzip.compress(raw, 9))}
    core = files[BUNDLE.name]
    return {
        "min_bytes": core["min_bytes"],
        "min_gzip_bytes": core["min_gzip_bytes"],
        "total_min_bytes": sum(f["min_bytes"] for f in files.values()),
        "total_min_gzip_bytes": sum(f["min_gzip_bytes"] for f in files.values()),
        "files": files,
        "apps": app_sizes(),
    }


def app_sizes() -> dict[str, Any]:
    """An app's bundle (esbuild, minified) of the minimal app (import ``Client``,
    start, iterate, await the answer) on ``unbroken-client/core`` and on
    ``unbroken-client``, and the core app with each opt-in feature: ``node
    bench/size.mjs --json``'s ``apps`` (``{}`` without Node or the build)."""
    import subprocess

    js = BUNDLE.parents[1]
    try:
        cmd = ["node", "bench/size.mjs", "--json"]
        run = subprocess.run(cmd, cwd=js, capture_output=True, text=True, check=True, timeout=120)
        out = run.stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    apps: dict[str, Any] = json.loads(out).get("apps", {})
    return apps


async def run_page(browser: Any, url: str) -> dict[str, Any]:
    ctx = await browser.new_context()
    try:
        await ctx.add_init_script(WS_PROBE)
        page = await ctx.new_page()
        await page.goto(url)
        await page.wait_for_function(DONE, timeout=60_000, polling=20)
        log: dict[str, Any] = await page.evaluate(
            "({error: log.error, recoveries: log.recoveries, detections: log.detections,"
            " received: log.received, elapsed: log.elapsed, digest: log.digest,"
            " conn: log.conn, ws: window.__ws})"
        )
        assert log["error"] is None, log["error"]
        return log
    finally:
        await ctx.close()


async def decode_in_page(browser: Any, port: int) -> dict[str, Any]:
    """Events decoded and verified per second in a page (v1 and v2, 3 runs each)."""
    ctx = await browser.new_context()
    try:
        page = await ctx.new_page()
        await page.goto(f"http://127.0.0.1:{port}/?ws=ws://127.0.0.1:1/ws&agent=none")
        return {
            "decode_verify_in_page": [await page.evaluate(DECODE_BENCH, 200_000) for _ in range(3)],
            "decode_verify_in_page_v2": [
                await page.evaluate(DECODE_BENCH_V2, 200_000) for _ in range(3)
            ],
        }
    finally:
        await ctx.close()


async def main(
    cuts: int,
    freeze: float,
    seed: int,
    only_recovery: bool = False,
    pace: float = 0.0,
    server_process: bool = False,
    only_decode: bool = False,
) -> dict[str, Any]:
    rng = random.Random(seed)
    calls: dict[str, int] = {}
    app = mixed_app(calls)
    out: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    out["bundle"] = bundle_sizes()
    out["server_process"] = server_process
    async with (
        own_process() if server_process else serve(_Site(app), path="/ws") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        # (no zlib cap: the cuts below are placed by byte counts of the answer)
        base = (
            f"http://127.0.0.1:{server.port}/?ws=ws://127.0.0.1:{proxy.port}/ws&agent=mixed"
            "&compression=0"
        )
        if only_decode:
            out.update(await decode_in_page(browser, server.port))
            await browser.close()
            return out
        size = 300_000
        rec: dict[str, list[float]] = {"fin": [], "rst": []}
        parts: list[dict[str, float]] = []
        for i in range(cuts):
            mode: Literal["fin", "rst"] = "fin" if i % 2 == 0 else "rst"
            proxy.cut_after_bytes(int(size * WIRE * rng.uniform(0.1, 0.9)), mode=mode)
            log = await run_page(browser, f"{base}&size={size}&pace={pace}")
            assert len(log["recoveries"]) == 1, log
            rec[mode].append(log["recoveries"][0])
            b = breakdown(log)
            if b is not None:
                parts.append(b)
        slow = sorted(parts, key=lambda p: -(p["reconnect"] + p["resume"] + p["verify"]))
        slow = slow[: max(1, len(slow) // 10)] if slow else []
        out["recovery_after_cut"] = {
            "answer_bytes": size,
            "pace_s": pace,
            "fin": summary(rec["fin"]),
            "rst": summary(rec["rst"]),
            "all": summary(rec["fin"] + rec["rst"]),
            "breakdown_p50_ms": {
                "n": len(parts),
                **{
                    k: round(statistics.median(p[k] for p in parts), 2)
                    for k in (parts[0] if parts else {})
                },
            },
            # the slowest tenth of the recoveries: which part made them slow
            "breakdown_of_slowest_tenth_mean_ms": {
                k: round(statistics.mean(p[k] for p in slow), 2) for k in (slow[0] if slow else {})
            },
        }
        if only_recovery:
            await browser.close()
            return out
        det = []
        for _ in range(5):
            proxy.cut_after_bytes(int(size * WIRE * rng.uniform(0.2, 0.8)), mode="blackhole")
            log = await run_page(browser, f"{base}&size={size}")
            det.append(log["detections"][0])
        out["blackhole_found"] = summary(det)
        ends = [await run_page(browser, f"{base}&size=1100000") for _ in range(3)]
        out["end_to_end_1_1MB"] = {
            "events": ends[0]["received"],
            "elapsed_ms": [round(e["elapsed"]) for e in ends],
            "events_per_second": [round(e["received"] / e["elapsed"] * 1000) for e in ends],
        }
        out.update(await decode_in_page(browser, server.port))
        await browser.close()
        if freeze > 0:
            async with start_own_chromium() as own:
                page = own.page
                # the agent writes for about 3 s: the tab freezes while it runs
                await page.goto(f"{base}&size=1100000&pace=0.03")
                cdp = await own.context.new_cdp_session(page)
                await cdp.send("Page.enable")
                await page.wait_for_function("window.log.received > 2000", polling=10)
                await cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
                await asyncio.sleep(freeze)
                await cdp.send("Page.setWebLifecycleState", {"state": "active"})
                await page.wait_for_function(DONE, timeout=60_000, polling=20)
                log = await page.evaluate("window.log")
                assert log["error"] is None, log["error"]
                assert any(e[0] == "freeze" for e in log["lifecycle"])
                out["resume_after_freeze"] = {
                    "freeze_s": freeze,
                    "resume_to_first_event_ms": [round(x, 1) for x in log["afterResume"]],
                }
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=100)
    ap.add_argument("--freeze", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--only-recovery", action="store_true", help="measure only the cuts")
    ap.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="the agent sleeps this long every 500 tokens (0: it writes as fast as it can"
        " and the page reads a backlog; 0.02: ~25k tokens/s, the page keeps up)",
    )
    ap.add_argument(
        "--only-decode", action="store_true", help="measure only decode and verify in the page"
    )
    ap.add_argument("--out", help="also write the figures (JSON) to this file")
    ap.add_argument(
        "--server-process",
        action="store_true",
        help="run the server in a process of its own (default: on this event loop)",
    )
    a = ap.parse_args()
    result = asyncio.run(
        main(a.cuts, a.freeze, a.seed, a.only_recovery, a.pace, a.server_process, a.only_decode)
    )
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
