"""TC10: the JWT expires mid-stream; the token is refreshed in-band, the stream's state
is never lost. The server verifies real signed JWTs (EdDSA, :class:`JWTAuth`); every
token lives 2 s, the answer takes several seconds (7 s quick, 10 s full), so the
credentials run out several times while it streams. The client's token provider is
asked on each ``auth_expiring`` and the new token goes in-band (``refresh``).

- variant ``refresh`` (the seed's): nothing else happens. The token is refreshed in-band
  at least three times, the answer is exact, and there is no reconnect at all.
- variant ``cut``: a network cut (the run's fault proxy, with the fault mode) lands
  during a refresh: the provider is asked for the first refresh, the link is cut before
  its token goes out. The client reconnects with a fresh token and resumes; the
  answer is exact and the refreshes go on in-band on the new connection.
- variant ``provider``: the token provider fails once (it raises for the second
  refresh): the client asks it again after a short backoff, the refresh goes through,
  no reconnect, the answer is exact.

(A provider that fails for good ends the client with a typed ``AuthError`` after a
bounded number of attempts: tests/integration/client/test_refresh.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ...client import Client
from ...server.auth import JWTAuth
from ..context import RunState
from ..run_result import Check, RunResult
from ..spec import RunSpec
from .base import Case, Row

#: How long each token lives (s).
LIFETIME: Final = 2.0
#: The answer's duration by tier (s): several token lifetimes.
PACE: Final = {"quick": 7.0, "full": 10.0}
ISSUER: Final = "https://idp.tc10.example/"
AUDIENCE: Final = "unbroken-tc10"
VARIANTS: Final = ("refresh", "cut", "provider")
#: The provider's call that the variant disturbs (1: the hello's token; 2: the first
#: refresh; 3: the second).
CUT_AT: Final = 2
FAIL_AT: Final = 3


def variant_of(spec: RunSpec) -> str:
    """The run's variant (a run that names none: ``refresh``, the seed's)."""
    return spec.variant or "refresh"


@dataclass
class TokenProvider:
    """A client's token provider: a fresh JWT for ``sub`` signed with ``key``, valid
    ``lifetime`` seconds, per call. ``fail_at``: the call that raises; ``cut_at``: the
    call that has the run's link cut before it returns (a cut during a refresh)."""

    key: Ed25519PrivateKey
    lifetime: float = LIFETIME
    sub: str = "tc10-user"
    run: RunState | None = None
    fail_at: int | None = None
    cut_at: int | None = None
    calls: int = 0
    failed_at: float | None = None
    cut_started: float | None = None
    cut_done: float | None = None

    async def __call__(self) -> str:
        self.calls += 1
        n = self.calls
        if n == self.fail_at:
            self.failed_at = time.monotonic()
            if self.run is not None:
                self.run.mark("token provider fails once (identity provider unreachable)")
            raise RuntimeError("identity provider unreachable")
        if n == self.cut_at and self.run is not None:
            run = self.run
            self.cut_started = run.mark(f"link cut during a refresh ({run.spec.fault})")
            await run.h.proxy.cut_all(run.spec.fault, reason="cut_during_refresh")
            self.cut_done = time.monotonic()
        now = time.time()
        claims = {
            "sub": self.sub,
            "iat": int(now),
            "exp": now + self.lifetime,
            "aud": AUDIENCE,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "tc10"})


@dataclass
class _Seen:
    providers: list[TokenProvider] = field(default_factory=list)


class TC10(Case):
    id = "TC10"
    default_timing = "mid"
    extra_budget = 20.0
    plan_grace = 0.0
    baseline_runs = 1  # a 7 s paced answer (quick tier); no check reads the baseline
    reads_baseline = False

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def disruption(self, spec: RunSpec) -> Literal["recovers", "gives_up", "none"]:
        """Only the ``cut`` variant breaks the connection; a refresh never does."""
        return "recovers" if spec.variant == "cut" else "none"

    def quick_rows(self) -> list[RunSpec]:
        """One run per variant."""
        return [
            self.spec(("small", "mid", "clean", "rst", "refresh")),
            self.spec(("small", "mid", "clean", "rst", "cut")),
            self.spec(("small", "mid", "clean", "rst", "provider")),
        ]

    def full_rows(self) -> list[RunSpec]:
        """Each variant; the cut with each fault mode."""
        rows: list[Row] = [("small", "mid", "clean", "rst", "refresh")]
        rows += [("small", "mid", "clean", f, "cut") for f in ("rst", "fin", "blackhole")]
        rows += [("small", "mid", "clean", "rst", "provider")]
        return [self.spec(r, "full") for r in rows]

    def pace(self, spec: RunSpec) -> float:
        return PACE.get(spec.profile, PACE["quick"])

    def seen(self, run: RunState) -> _Seen:
        return self._seen.setdefault(id(run), _Seen())

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        h = run.h
        key = Ed25519PrivateKey.generate()
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # the built-in app verifies real JWTs from now on (before any client connects)
        h.app.authenticate = JWTAuth(
            key=pem, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
        )
        variant = variant_of(run.spec)
        seen = self.seen(run)
        make_client = h.client

        def client(**options: Any) -> Client:
            provider = TokenProvider(key)
            if run.faulty:
                provider.run = run
                if variant == "cut":
                    provider.cut_at = CUT_AT
                elif variant == "provider":
                    provider.fail_at = FAIL_AT
            seen.providers.append(provider)
            options["token"] = provider
            return make_client(**options)

        h.client = client  # type: ignore[method-assign]
        await python_clients(run)

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        # the variants' faults come from the token provider itself (at a refresh);
        # here only the first in-band refresh is waited for, and marked
        if variant_of(run.spec) == "refresh" and run.watches:
            after = run.t_started
            await asyncio.wait_for(run.watches[0].wait("refreshed", after), 30)
            run.mark("first in-band token refresh")

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        seen = self._seen.pop(id(run), _Seen())
        variant = variant_of(run.spec)
        events = [e for w in run.watches for e in w.events]
        refreshed = [e.at for e in events if e.kind == "refreshed"]
        connects = [e.at for e in events if e.kind == "connected"]
        drops = [e for e in events if e.kind == "disconnected"]
        calls = sum(p.calls for p in seen.providers)
        out: list[Check] = []
        if variant in ("refresh", "provider"):
            out.append(
                Check(
                    "TC10 the token was refreshed in-band at least 3 times (2 s tokens)",
                    len(refreshed) >= 3,
                    f"{len(refreshed)} refreshes, {calls} tokens asked for",
                )
            )
            out.append(
                Check(
                    "TC10 no reconnect: one connection, never dropped",
                    len(connects) == len(run.watches) and not drops,
                    f"{len(connects)} connections, {len(drops)} drops",
                )
            )
        if variant == "provider":
            failed = [p.failed_at for p in seen.providers if p.failed_at is not None]
            retried = [e for e in events if e.kind == "refresh_failed"]
            after = bool(failed) and any(t > failed[0] for t in refreshed)
            out.append(
                Check(
                    "TC10 the provider failed once; asked again, the refresh went through",
                    bool(failed) and len(retried) == 1 and after,
                    f"failures: {len(failed)}, refresh_failed events: {len(retried)}, "
                    f"refreshed after it: {after}",
                )
            )
        if variant == "cut":
            cut = next((p for p in seen.providers if p.cut_done is not None), None)
            if cut is None or cut.cut_started is None:
                out.append(Check("TC10 the link was cut during a refresh", False, "no cut"))
                return out
            back = [t for t in connects if t > cut.cut_started]
            lost_refresh = not any(
                cut.cut_started <= t <= (back[0] if back else float("inf")) for t in refreshed
            )
            out.append(
                Check(
                    "TC10 the link was cut during a refresh; the client reconnected with a "
                    "new token",
                    bool(back) and lost_refresh and bool(drops),
                    f"cut at provider call {CUT_AT}; refresh on the cut connection answered: "
                    f"{not lost_refresh}; reconnected: {bool(back)}",
                )
            )
            later = [t for t in refreshed if back and t > back[0]]
            out.append(
                Check(
                    "TC10 in-band refreshes went on over the new connection",
                    bool(later),
                    f"{len(later)} refreshes after the reconnect, {len(refreshed)} in all",
                )
            )
        return out


CASE = TC10()
