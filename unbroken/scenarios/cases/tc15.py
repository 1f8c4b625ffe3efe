"""TC15: cross-origin policy changes. A stream runs for a page of origin A (its client's
handshakes carry ``Origin: A``); mid-answer the server's origin policy is changed live
(``app.policy.update``): A dropped, B added.

- variant ``policy`` (the seed's): nothing else happens. The open stream goes on
  untouched to an exact end over the same connection (no drop, no reconnect); a new
  handshake from A is refused with HTTP 403, one from B is accepted.
- variant ``cut``: right after the change the connection is cut with the fault mode.
  The client's resume is a new handshake, judged by the new policy: refused (403), so
  the client ends with :class:`~unbroken.errors.Forbidden` at once (a refusal is not
  retried: no storm of handshakes). A client of origin B then resumes the stream from
  the cursor the first one saved, to an exact end.

The clients send the header as a browser page's would (``Client(origin=…)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from ...client import Client
from ...errors import Forbidden
from ...protocol.frames import SUBPROTOCOLS
from ...server.policy import OriginPolicy
from ..context import RunState
from ..faults import play, trigger
from ..harness import CHAOS_POLICY, ChaosHarness, StreamRecorder
from ..run_result import Check, RunResult
from ..spec import RunSpec
from .base import Case, Row
from .common import completed_resumes, reconnects_after, refusal_text

#: The page origin the stream runs for, dropped mid-answer.
ORIGIN_A: Final = "https://a.tc15.example"
#: The page origin added mid-answer.
ORIGIN_B: Final = "https://b.tc15.example"
#: The policy before and after the change (the server's own host not allowed either:
#: only the allowlist decides).
BEFORE: Final = OriginPolicy(allowed_origins=(ORIGIN_A,), allow_same_host=False)
AFTER: Final = OriginPolicy(allowed_origins=(ORIGIN_B,), allow_same_host=False)
VARIANTS: Final = ("policy", "cut")


def variant_of(spec: RunSpec) -> str:
    """The run's variant (a run that names none: ``policy``, the seed's)."""
    return spec.variant or "policy"


def origin_clients(h: ChaosHarness, origin: str) -> Callable[..., Client]:
    """``h.client`` for clients of ``origin`` (the same defaults)."""

    def client(*, policy: Any = None, seed: int | None = None, **options: Any) -> Client:
        options.setdefault("ping_every", 0.5)
        options.setdefault("open_timeout", 2.0)
        c = Client(
            h.url,
            origin=origin,
            policy=policy or CHAOS_POLICY,
            seed=h.seed if seed is None else seed,
            **options,
        )
        h.clients.append(c)
        return c

    return client


async def handshake_status(url: str, origin: str) -> int:
    """101 when a handshake from ``origin`` is accepted, else the refusal's status."""
    try:
        ws = await connect(url, origin=Origin(origin), subprotocols=[Subprotocol(SUBPROTOCOLS[0])])
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


@dataclass
class _Seen:
    """What one run's driver saw (read by the checks)."""

    changed_at: float | None = None
    status_a: int | None = None
    status_b: int | None = None
    refused: list[BaseException] = field(default_factory=list)


class TC15(Case):
    id = "TC15"
    default_timing = "mid"
    plan_grace = 5.0  # the probes after the change finish even when the answer is done

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def disruption(self, spec: RunSpec) -> Literal["recovers", "gives_up", "none"]:
        """A policy change cuts nothing; in ``cut`` the refused client ends (another
        one resumes)."""
        return "gives_up" if variant_of(spec) == "cut" else "none"

    def quick_rows(self) -> list[RunSpec]:
        """One run per variant (short answers)."""
        return [
            self.spec(("small", "mid", "clean", "rst", "policy")),
            self.spec(("small", "mid", "clean", "rst", "cut")),
        ]

    def full_rows(self) -> list[RunSpec]:
        """Each variant early, mid and late in the answer; the cut with each fault."""
        rows: list[Row] = [
            ("medium", t, "clean", "rst", "policy") for t in ("early", "mid", "late")
        ]
        rows += [("medium", "mid", "clean", f, "cut") for f in ("rst", "fin", "blackhole")]
        rows += [("large", "late", "clean", "fin", "cut")]
        return [self.spec(r, "full") for r in rows]

    def gives_up(self, spec: RunSpec) -> bool:
        # the cut: the first client ends (refused), another resumes: no recovery to time
        return variant_of(spec) == "cut"

    def seen(self, run: RunState) -> _Seen:
        return self._seen.setdefault(id(run), _Seen())

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        h = run.h
        await h.server.call(_set_policy(h, BEFORE))
        h.client = origin_clients(h, ORIGIN_A)  # type: ignore[method-assign]
        await python_clients(run)
        if run.faulty and variant_of(run.spec) == "cut":
            await self._resume_from_b(run)

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        seen = self.seen(run)
        await trigger(run, total_events)
        h = run.h
        # the change, on the server's loop (as a reload would be): A dropped, B added
        await h.server.call(_set_policy(h, AFTER))
        seen.changed_at = run.mark("origin policy changed: A dropped, B added")
        # new handshakes, straight to the server (the proxy's counters stay the stream's)
        seen.status_a = await handshake_status(h.server.url, ORIGIN_A)
        seen.status_b = await handshake_status(h.server.url, ORIGIN_B)
        if variant_of(run.spec) == "cut":
            await play(run, "clean", run.spec.fault)

    async def _resume_from_b(self, run: RunState) -> None:
        """The streams whose client was refused: a client of origin B picks each up
        from the cursor the first one saved."""
        seen = self.seen(run)
        h = run.h
        for rec in run.recs:
            if rec.error is None:
                continue
            seen.refused.append(rec.error)
            cursor = rec.stream.cursor
            if cursor is None:
                run.notes.append("no cursor saved before the refusal")
                continue
            async with origin_clients(h, ORIGIN_B)(seed=7) as client:
                st = await asyncio.wait_for(client.resume(cursor), 20)
                new = StreamRecorder(st, rec.expected, key=rec.key + "-resumed")
                await asyncio.wait_for(new.done(), 60)
            run.resumed_recs.append(new)

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        seen = self._seen.pop(id(run), _Seen())
        variant = variant_of(run.spec)
        out: list[Check] = []
        t = seen.changed_at
        open_at_change = t is not None and all(
            r.ended_at is None or r.ended_at > t for r in run.recs
        )
        out.append(
            Check(
                "TC15 the policy changed while the stream was open",
                open_at_change,
                "A dropped, B added mid-answer" if open_at_change else "the answer ended first",
            )
        )
        out.append(
            Check(
                "TC15 after the change a new handshake from A is refused (403), from B "
                "accepted (101)",
                seen.status_a == 403 and seen.status_b == 101,
                f"A: {seen.status_a}, B: {seen.status_b}",
            )
        )
        if variant == "policy":
            drops = sum(1 for w in run.watches for e in w.events if e.kind == "disconnected")
            connects = sum(1 for w in run.watches for e in w.events if e.kind == "connected")
            out.append(
                Check(
                    "TC15 the open stream went on untouched: no drop, no reconnect",
                    drops == 0 and connects == len(run.watches),
                    f"{connects} connections, {drops} drops",
                )
            )
        else:
            # a refused upgrade's 403 is Forbidden, typed and final, quoting the reason
            typed = [e for e in seen.refused if isinstance(e, Forbidden) and "403" in str(e)]
            tries = reconnects_after(run, t)
            out.append(
                Check(
                    "TC15 the resume from A was refused by the new policy: a typed error "
                    "(HTTP 403), not retried",
                    bool(seen.refused) and len(typed) == len(seen.refused) and tries <= 1,
                    refusal_text(seen.refused) + f"; {tries} reconnect attempt(s)",
                )
            )
            resumed = completed_resumes(run)
            out.append(
                Check(
                    "TC15 a client of origin B resumed the stream from the saved cursor",
                    resumed == len(seen.refused) > 0,
                    f"{resumed} of {len(seen.refused)} resumed to the end",
                )
            )
        return out


def _set_policy(h: ChaosHarness, policy: OriginPolicy) -> Callable[[], Coroutine[Any, Any, None]]:
    async def apply() -> None:
        h.app.policy.update(policy)

    return apply


CASE = TC15()
