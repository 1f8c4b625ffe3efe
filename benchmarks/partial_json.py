"""Partial JSON: jiter's partial mode (what unbroken uses) against the hand-written
parser it replaced, on the work a client does while a JSON part streams: parse the
part's text so far at each fragment.

Each document is a generated report (nested objects, arrays, numbers, strings with
escapes and non-ASCII) serialised compact; a "stream" cuts it into fragments of
``--fragment`` characters and parses every prefix ending at a fragment boundary (what
``JsonFragment.partial()`` does per fragment). Both parsers give the same value for
every prefix (tests/unit/protocol/test_partial_json.py checks it with Hypothesis); this
measures the time.

Run: ``.venv/bin/python -m benchmarks.partial_json [--quick]`` (writes
benchmarks/results/partial_json.json and .png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from unbroken.client.response import parse_partial_json

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ the baseline
# The parser unbroken shipped before jiter (unbroken/client/response.py up to this
# change), kept verbatim as the benchmark's baseline and the test's reference.
def hand_written(text: str) -> Any:
    """Parse a JSON prefix as far as it goes; ``None`` if nothing usable yet.

    Open strings, arrays and objects are closed; a key without a value, a
    trailing comma or an unfinished literal are dropped.
    """
    # stack of [closer, state]; object states: k(ey) c(olon) v(alue) a(fter);
    # array states: v(alue) a(fter)
    stack: list[list[str]] = []
    safe = 0
    safe_closers = ""
    i, n = 0, len(text)
    pending_string_value = False
    string_start = 0

    def closers() -> str:
        return "".join(e[0] for e in reversed(stack))

    def value_done(end: int) -> None:
        nonlocal safe, safe_closers
        if stack:
            stack[-1][1] = "a"
        safe, safe_closers = end, closers()

    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        top = stack[-1] if stack else None
        if ch == '"':
            j, esc = i + 1, False
            while j < n:
                c = text[j]
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    break
                j += 1
            if j >= n:  # unterminated string
                pending_string_value = not (top is not None and top[0] == "}" and top[1] == "k")
                string_start = i + 1
                break
            if top is not None and top[0] == "}" and top[1] == "k":
                top[1] = "c"
            else:
                value_done(j + 1)
            i = j + 1
        elif ch in "[{":
            stack.append(["]" if ch == "[" else "}", "v" if ch == "[" else "k"])
            safe, safe_closers = i + 1, closers()
            i += 1
        elif ch in "]}":
            if stack:
                stack.pop()
            value_done(i + 1)
            i += 1
        elif ch == ",":
            if top is not None:
                top[1] = "k" if top[0] == "}" else "v"
            i += 1
        elif ch == ":":
            if top is not None:
                top[1] = "v"
            i += 1
        else:  # number or literal
            j = i
            while j < n and text[j] not in ",]}: \t\r\n":
                j += 1
            if j >= n:  # may be unfinished: try it, else fall back
                try:
                    json.loads(text[i:j])
                    value_done(j)
                except ValueError:
                    pass
                break
            value_done(j)
            i = j
    candidates: list[str] = []
    if pending_string_value:
        candidates.append(_whole_escapes(text, string_start) + '"' + closers())
    candidates.append(text[:safe] + safe_closers)
    for cand in candidates:
        try:
            return json.loads(cand)
        except ValueError:
            continue
    return None


def _whole_escapes(text: str, start: int) -> str:
    """``text`` up to the end of the last whole character of the open string that begins
    at ``start``: a half-typed escape (``\\``, ``\\u00``) or the first half of an escaped
    surrogate pair is left out until the rest of it arrives."""
    k, good, n = start, start, len(text)
    while k < n:
        if text[k] != "\\":
            k += 1
        elif k + 1 >= n:
            break
        elif text[k + 1] != "u":
            k += 2
        else:
            if k + 6 > n:
                break
            try:
                code = int(text[k + 2 : k + 6], 16)
            except ValueError:
                break
            if 0xD800 <= code <= 0xDBFF:  # a high surrogate: wait for its low half
                if k + 12 > n:
                    break
                k += 12 if text[k + 6 : k + 8] == "\\u" else 6
            else:
                k += 6
        good = k
    return text[:good]


# ------------------------------------------------------------------ the workload
def document(size: int, seed: int = 1) -> str:
    """A compact JSON report of about ``size`` characters."""
    rng = random.Random(seed)
    words = ["revenue", "région", "quarter", "forecast", "naïve", "growth", "line\nbreak", "q"]
    rows: list[dict[str, Any]] = []
    text = ""
    while len(text) < size:
        rows.append(
            {
                "id": len(rows),
                "name": " ".join(rng.choice(words) for _ in range(rng.randint(1, 6))),
                "value": round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)),
                "ok": rng.random() < 0.5,
                "tags": [rng.choice(words) for _ in range(rng.randint(0, 4))],
                "note": None if rng.random() < 0.3 else '"quoted" \\ ' + rng.choice(words),
            }
        )
        text = json.dumps({"title": "report", "rows": rows}, separators=(",", ":"))
    return text


def stream_time(parse: Any, text: str, fragment: int, repeat: int) -> float:
    """Best-of-``repeat`` seconds to parse every fragment-boundary prefix of ``text``."""
    cuts = [*range(fragment, len(text), fragment), len(text)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for end in cuts:
            parse(text[:end])
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False, fragment: int = 64) -> dict[str, Any]:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    repeat = 2 if quick else 5
    rows = []
    for size in sizes:
        text = document(size)
        cuts = len(range(fragment, len(text), fragment)) + 1
        for end in range(0, len(text) + 1, max(1, len(text) // 400)):  # same values
            assert parse_partial_json(text[:end]) == hand_written(text[:end]), end
        old = stream_time(hand_written, text, fragment, repeat)
        new = stream_time(parse_partial_json, text, fragment, repeat)
        rows.append(
            {
                "doc_chars": len(text),
                "fragment_chars": fragment,
                "prefixes_parsed": cuts,
                "hand_written_s": round(old, 6),
                "jiter_s": round(new, 6),
                "hand_written_mb_per_s": round(sum(range(0, len(text), fragment)) / old / 1e6, 2),
                "jiter_mb_per_s": round(sum(range(0, len(text), fragment)) / new / 1e6, 2),
                "speedup": round(old / new, 1),
            }
        )
        print(
            f"{len(text):>8} chars, {cuts} prefixes: hand-written {old * 1e3:9.2f} ms, "
            f"jiter {new * 1e3:8.2f} ms, x{old / new:.1f}",
            flush=True,
        )
    return {
        "benchmark": "partial_json",
        "quick": quick,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
        "median_speedup": statistics.median(r["speedup"] for r in rows),
    }


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["results"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = range(len(rows))
    ax.bar(
        [i - 0.2 for i in x], [r["hand_written_s"] * 1e3 for r in rows], 0.4, label="hand-written"
    )
    ax.bar([i + 0.2 for i in x], [r["jiter_s"] * 1e3 for r in rows], 0.4, label="jiter")
    ax.set_xticks(list(x), [f"{r['doc_chars']:,} chars" for r in rows])
    ax.set(yscale="log", ylabel="ms to parse every prefix", title="Partial JSON while streaming")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--fragment", type=int, default=64, help="characters per fragment")
    args = ap.parse_args(argv)
    res = run(args.quick, args.fragment)
    name = "partial_json.quick" if args.quick else "partial_json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    try:
        chart(res, RESULTS / f"{name}.png")
    except ImportError:
        print("no matplotlib: pip install 'unbroken[report]' for the chart", file=sys.stderr)


if __name__ == "__main__":
    main()
