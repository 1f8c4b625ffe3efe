"""What JWT auth and in-band refresh cost (issue 15).

* **Refresh on the hot path**: one server verifying real JWTs (EdDSA, ``JWTAuth``) and
  one unbroken ``Client`` in this process, over loopback; an agent writes tokens as
  fast as it can for a fixed time. The same run with tokens that live 1.25 s (the
  server's ``auth_expiring`` comes at 80 %: a refresh every second, each verified on
  the server while the stream flows) and with tokens that outlive the run (no
  refresh). Figure: tokens delivered per CPU second of the process (server and client
  both live in it) with refreshes ÷ without, i.e. the tokens/s one core delivers
  (pairs of runs interleaved, repeated, median of the pairs' ratios). Aim ≥ 0.98.
  The wall-clock tokens/s are recorded too, but on a shared machine they measure the
  neighbours' load more than the refresh. Every answer must be complete and verified.
* **Verify cost per handshake**: ``JWTAuth.verify`` of one token (what a ``hello`` or
  a ``refresh`` costs the server), RS256 (2048-bit), ES256, EdDSA and HS256, in µs
  (median of many).

``python -m benchmarks.auth [--quick]`` writes ``benchmarks/results/auth.json`` (and
``python -m benchmarks auth`` the chart too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from benchmarks.common import RESULTS, figure, finish, meta, progress
from unbroken.client import Client
from unbroken.server import Output, Request, Unbroken
from unbroken.server.auth import JWTAuth
from unbroken.testing import serve

AIM_RATIO = 0.98
AUDIENCE = "bench"
ISSUER = "https://idp.bench/"


def _pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _token(private: Any, alg: str, lifetime: float) -> str:
    now = time.time()
    claims = {"sub": "bench", "exp": now + lifetime, "aud": AUDIENCE, "iss": ISSUER}
    return jwt.encode(claims, private, algorithm=alg)


# ------------------------------------------------------------------ refresh on the hot path
async def _stream(seconds: float, lifetime: float) -> dict[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    auth = JWTAuth(key=_pem(key), algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    app = Unbroken(auth=auth, shutdown_grace=1.0)

    @app.agent("flood")
    async def flood(req: Request, out: Output) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + req.input["seconds"]
        while loop.time() < end:
            for _ in range(64):
                await out.text("tok ")

    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        return _token(key, "EdDSA", lifetime)

    async with serve(app) as srv, Client(srv.url, token=provider) as client:
        t0, cpu0 = time.perf_counter(), time.process_time()
        st = await client.start("flood", {"seconds": seconds})
        answer = await asyncio.wait_for(st.wait(), seconds + 60)
        took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        tokens = len(answer.text) // 4
        assert answer.text == "tok " * tokens, "the answer is not exact"
        reconnects = sum(1 for e in client.history if e.kind == "reconnecting")
        return {
            "token_lifetime_s": lifetime,
            "seconds": round(took, 3),
            "tokens": tokens,
            "tokens_per_s": round(tokens / took),
            "cpu_s": round(cpu, 3),
            "tokens_per_cpu_s": round(tokens / cpu),
            "refreshes": client.refreshes,
            "provider_calls": calls,
            "reconnects": reconnects,
        }


def hot_path(quick: bool) -> dict[str, Any]:
    seconds = 1.5 if quick else 4.0
    repeats = 1 if quick else 8
    with_refresh: list[dict[str, Any]] = []
    without: list[dict[str, Any]] = []
    for i in range(repeats):
        # interleaved: a drift in the machine's load hits both alike
        without.append(asyncio.run(_stream(seconds, 3600.0)))
        with_refresh.append(asyncio.run(_stream(seconds, 1.25)))
        progress(i + 1, repeats + 1)
    a = statistics.median(r["tokens_per_s"] for r in with_refresh)
    b = statistics.median(r["tokens_per_s"] for r in without)
    ratios = [
        w["tokens_per_cpu_s"] / o["tokens_per_cpu_s"]
        for w, o in zip(with_refresh, without, strict=True)
    ]
    wall = [
        w["tokens_per_s"] / o["tokens_per_s"] for w, o in zip(with_refresh, without, strict=True)
    ]
    return {
        "stream_seconds": seconds,
        "repeats": repeats,
        "with_refresh": with_refresh,
        "without_refresh": without,
        "tokens_per_s_with_refresh": round(a),
        "tokens_per_s_without": round(b),
        "tokens_per_cpu_s_with_refresh": round(
            statistics.median(r["tokens_per_cpu_s"] for r in with_refresh)
        ),
        "tokens_per_cpu_s_without": round(
            statistics.median(r["tokens_per_cpu_s"] for r in without)
        ),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_per_pair": [round(r, 4) for r in ratios],
        "wall_ratio": round(statistics.median(wall), 4),
        "wall_ratio_per_pair": [round(r, 4) for r in wall],
        "refreshes_per_run": [r["refreshes"] for r in with_refresh],
    }


# ------------------------------------------------------------------ verify cost
def verify_cost(quick: bool) -> list[dict[str, Any]]:
    keys: list[tuple[str, Any, Any]] = [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), None),
        ("ES256", ec.generate_private_key(ec.SECP256R1()), None),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate(), None),
        ("HS256", b"bench-secret-" * 4, None),
    ]
    n = 300 if quick else 3000
    out = []
    for alg, private, _ in keys:
        material = private if alg == "HS256" else _pem(private)
        auth = JWTAuth(key=material, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)
        token = _token(private, alg, 3600)
        for _ in range(50):  # warm
            auth.verify_sync(token)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            auth.verify_sync(token)
            samples.append((time.perf_counter() - t0) * 1e6)
        out.append(
            {
                "alg": alg,
                "verifies": n,
                "us_p50": round(statistics.median(samples), 1),
                "us_mean": round(statistics.fmean(samples), 1),
                "us_p99": round(sorted(samples)[int(0.99 * n)], 1),
                "token_bytes": len(token),
            }
        )
    return out


def run(quick: bool = False) -> dict[str, Any]:
    res = meta()
    res["benchmark"] = "auth"
    res["hot_path"] = hot = hot_path(quick)
    res["verify"] = verify = verify_cost(quick)
    res["figures"] = [
        figure(
            "tokens/s per core delivered with an in-band refresh every second ÷ without",
            hot["ratio"],
            AIM_RATIO,
            hot["ratio"] >= AIM_RATIO,
            "×",
        ),
        *(
            figure(
                f"JWT verify per handshake or refresh, {v['alg']} (p50)",
                v["us_p50"],
                None,
                None,
                "µs",
            )
            for v in verify
        ),
    ]
    return finish(res)


def chart(res: dict[str, Any], path: Path) -> None:
    from benchmarks.common import pyplot

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    hot = res["hot_path"]
    a.bar(
        ["no refresh", "refresh every 1 s"],
        [hot["tokens_per_cpu_s_without"], hot["tokens_per_cpu_s_with_refresh"]],
    )
    a.set(ylabel="tokens per CPU second (median)", title=f"In-band refresh: {hot['ratio']}×")
    v = res["verify"]
    b.bar([x["alg"] for x in v], [x["us_p50"] for x in v])
    b.set(ylabel="µs per verify (p50)", title="JWT verify per handshake")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    res = run(args.quick)
    out = args.out or RESULTS / ("auth.quick.json" if args.quick else "auth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    for f in res["figures"]:
        print(f"{f['name']}: {f['value']} {f['unit']}" + (f" (aim {f['aim']})" if f["aim"] else ""))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
