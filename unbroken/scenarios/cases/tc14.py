"""TC14: the wire protocol version changes during an active stream (a node restarted onto
another version mid-answer, as in a rolling upgrade or its rollback). The stream is
begun on one version; while it runs the server's spoken versions change (the next
handshakes see the new ones, the open connection keeps its own: what a restart onto a
new build does), and the condition cuts the connection at the timing point with the
fault mode: the client's resume meets the new versions.

- variant ``upgrade``: the server speaks v1 only, a new client (it offers v2 then v1)
  streams over v1; the server moves to v2 only and the link is cut: the same client
  resumes over v2, exact.
- variant ``downgrade`` (a rollback): the server speaks v1 and v2, the new client
  streams over v2; the server moves to v1 only and the link is cut: the same client
  resumes over v1, exact.
- variant ``refused``: an old client (pinned to v1) streams over v1 from a server that
  speaks both; the server drops v1 and the link is cut: the resume is refused (close
  4005), the client ends at once with the typed
  :class:`~unbroken.errors.UnsupportedVersion` naming both sides' versions (not
  retried); what it received is a verified prefix, and a new client resumes the stream
  from its saved cursor over v2, exact.

The stored events and their digest chain do not depend on the wire version, so the
generic checks (every event once, in order, the end digest of a fault-free run, the
server log intact, the resume from the right seq) hold across the change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ...client import Client, ConnectionEvent
from ...errors import UnsupportedVersion
from ...protocol import versions
from ...protocol.codes import CloseCode
from ..context import RunState
from ..faults import timed_play
from ..harness import ChaosHarness, StreamRecorder
from ..run_result import Check, RunResult
from ..spec import SEED_CONDITIONS, TIMINGS, RunSpec
from .base import FAULT_MODES, Case, Row
from .common import completed_resumes, reconnects_after, refusal_text

Versions = tuple[str, ...]

VARIANTS: Final = ("upgrade", "downgrade", "refused")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a variant's server speaks before and after the change, what its client
    offers (None: the client's default offer, v2 then v1), and the versions its
    connections must speak before and after."""

    before: Versions
    after: Versions
    client: Versions | None
    on_before: str
    on_after: str | None
    """None: the resume is refused."""


PLANS: Final[dict[str, Plan]] = {
    "upgrade": Plan(("v1",), ("v2",), None, "v1", "v2"),
    "downgrade": Plan(("v1", "v2"), ("v1",), None, "v2", "v1"),
    "refused": Plan(("v1", "v2"), ("v2",), ("v1",), "v1", None),
}


def variant_of(spec: RunSpec) -> str:
    """The run's variant (a run that names none: ``upgrade``)."""
    return spec.variant or "upgrade"


def spoken(h: ChaosHarness, protocols: Versions) -> Callable[[], Coroutine[Any, Any, None]]:
    """Set the versions the harness's server speaks (on its loop): the next handshakes
    see them, the connections open keep theirs (as a restart onto a new build)."""

    async def apply() -> None:
        h.app.set_protocols(protocols)

    return apply


@dataclass
class _Seen:
    """What one run's driver saw (read by the checks)."""

    connections: list[tuple[float, str | None]] = field(default_factory=list)
    """(when, version) of every connection the run's clients made."""
    changed_at: float | None = None
    refused: list[BaseException] = field(default_factory=list)
    resumed_on: list[str | None] = field(default_factory=list)


class TC14(Case):
    id = "TC14"
    default_timing = "mid"
    foreign_app = "its fault plan changes the built-in test server's protocol versions"

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def seen(self, run: RunState) -> _Seen:
        return self._seen.setdefault(id(run), _Seen())

    def skip_reason(self, spec: RunSpec) -> str | None:
        if "v2" not in versions.KNOWN:
            return "protocol v2 is not built yet (unbroken.protocol.versions.KNOWN)"
        return None

    def disruption(self, spec: RunSpec) -> Literal["recovers", "gives_up", "none"]:
        """The same client recovers across the change, except an old client refused
        by the new version (another client resumes)."""
        return "gives_up" if variant_of(spec) == "refused" else "recovers"

    def gives_up(self, spec: RunSpec) -> bool:
        return variant_of(spec) == "refused"

    def baseline_family(self, spec: RunSpec) -> str:
        """One fault-free baseline per version the stream begins on (its bytes place
        the cut at the timing point)."""
        return f"{self.id}-{PLANS[variant_of(spec)].on_before}"

    def expected_closes(self, spec: RunSpec) -> frozenset[int]:
        """The refused resume is closed 4005 on purpose (its client logs it)."""
        if variant_of(spec) == "refused":
            return frozenset({CloseCode.UNSUPPORTED_VERSION})
        return frozenset()

    def quick_rows(self) -> list[RunSpec]:
        """Each variant once, small answers (the full tier crosses the timings)."""
        return [
            self.spec(("small", "mid", "clean", "rst", "upgrade")),
            self.spec(("small", "early", "clean", "fin", "downgrade")),
            self.spec(("small", "late", "clean", "rst", "refused")),
        ]

    def full_rows(self) -> list[RunSpec]:
        """Both directions at every timing point with every fault (small answers), a
        medium and a large answer mid-way; the refusal with every fault; both directions
        under the seed's other conditions (every reconnection meets the new versions)."""
        rows: list[Row] = [
            ("small", t, "clean", f, v)
            for v in ("upgrade", "downgrade")
            for t in TIMINGS
            for f in FAULT_MODES
        ]
        rows += [(s, "mid", "clean", "rst", v) for s in ("medium", "large") for v in VARIANTS]
        rows += [("small", "mid", "clean", f, "refused") for f in FAULT_MODES]
        rows += [
            ("small", "mid", c, FAULT_MODES[(i + k) % len(FAULT_MODES)], v)
            for k, v in enumerate(("upgrade", "downgrade"))
            for i, c in enumerate(SEED_CONDITIONS[1:])
        ]
        return [self.spec(r, "full") for r in rows]

    async def drive(
        self, run: RunState, python_clients: Callable[[RunState], Awaitable[None]]
    ) -> None:
        h = run.h
        plan = PLANS[variant_of(run.spec)]
        seen = self.seen(run) if run.faulty else _Seen()
        await h.server.call(spoken(h, plan.before))
        make_client = h.client

        def client(**options: Any) -> Client:
            if plan.client is not None:
                options["protocols"] = plan.client
            watch = options.get("on_event")

            def on_event(ev: ConnectionEvent) -> None:
                if ev.kind == "connected":
                    seen.connections.append((ev.at, made.version))
                if watch is not None:
                    watch(ev)

            options["on_event"] = on_event
            made = make_client(**options)
            return made

        h.client = client  # type: ignore[method-assign]
        await python_clients(run)
        if run.faulty and plan.on_after is None:
            await self._resume_on_new_client(run, make_client)

    async def plan_faults(self, run: RunState, total_events: int) -> None:
        """The versions change once the stream runs (its connection keeps the one it
        chose), then the condition cuts it at the timing point: the resume meets the
        new versions."""
        seen = self.seen(run)
        plan = PLANS[variant_of(run.spec)]
        h = run.h
        await h.server.call(spoken(h, plan.after))
        seen.changed_at = time.monotonic()
        run.faults.append(
            (seen.changed_at, f"server speaks {'+'.join(plan.after)} (was {'+'.join(plan.before)})")
        )
        await timed_play(run, total_events)

    async def _resume_on_new_client(
        self, run: RunState, make_client: Callable[..., Client]
    ) -> None:
        """The streams whose old client was refused: a new client (the default offer)
        picks each up from the cursor the first one saved."""
        seen = self.seen(run)
        for rec in run.recs:
            if rec.error is None:
                continue
            seen.refused.append(rec.error)
            cursor = rec.stream.cursor
            if cursor is None:
                run.notes.append("no cursor saved before the refusal")
                continue
            async with make_client(seed=7) as client:
                st = await asyncio.wait_for(client.resume(cursor), 20)
                new = StreamRecorder(st, rec.expected, key=rec.key + "-resumed")
                await asyncio.wait_for(new.done(), 60)
                seen.resumed_on.append(client.version)
            run.resumed_recs.append(new)

    async def checks(self, run: RunState, result: RunResult) -> list[Check]:
        seen = self._seen.pop(id(run), _Seen())
        plan = PLANS[variant_of(run.spec)]
        t = seen.changed_at
        out: list[Check] = []
        cut = run.t_fault
        open_at_change = (
            t is not None and cut is not None and t <= cut and all(run.open_at(r) for r in run.recs)
        )
        out.append(
            Check(
                "TC14 the versions changed while the stream was open, before the cut",
                open_at_change,
                f"{'+'.join(plan.before)} -> {'+'.join(plan.after)} mid-answer, then the cut"
                if open_at_change
                else "the answer ended before the cut",
            )
        )
        before = [v for at, v in seen.connections if t is None or at < t]
        after = [v for at, v in seen.connections if t is not None and at > t]
        began = bool(before) and all(v == plan.on_before for v in before)
        if plan.on_after is not None:
            moved = bool(after) and all(v == plan.on_after for v in after)
            out.append(
                Check(
                    f"TC14 the stream began on {plan.on_before} and the same client resumed "
                    f"it on {plan.on_after}",
                    began and moved,
                    f"connections before the change: {before}; after: {after}",
                )
            )
            return out
        out.append(
            Check(
                f"TC14 the old client streamed on {plan.on_before} before the change",
                began,
                f"connections before the change: {before}",
            )
        )
        typed = [
            e
            for e in seen.refused
            if isinstance(e, UnsupportedVersion)
            and e.client_versions == plan.client
            and e.server_versions == plan.after
        ]
        tries = reconnects_after(run, t)
        out.append(
            Check(
                "TC14 the old client's resume was refused: UnsupportedVersion naming both "
                "sides' versions (close 4005), not retried",
                bool(seen.refused) and len(typed) == len(seen.refused) and tries <= 1 and not after,
                refusal_text(seen.refused)
                + f"; {tries} reconnect attempt(s), {len(after)} connection(s) after the change",
            )
        )
        resumed = completed_resumes(run)
        out.append(
            Check(
                "TC14 a new client resumed the stream from the saved cursor on v2",
                resumed == len(seen.refused) > 0 and all(v == "v2" for v in seen.resumed_on),
                f"{resumed} of {len(seen.refused)} resumed to the end, on {seen.resumed_on}",
            )
        )
        return out


CASE = TC14()
