"""Plays a run's network condition through the chaos toolkit (the fault proxy's cuts,
the :class:`~unbroken.chaos.NetworkSimulator`, the kernel's faults in network
namespaces) at the spec's timing point. A case's own fault plan builds on these (see
:meth:`.cases.Case.plan_faults`); nothing here knows a scenario."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..chaos import GeneratedAnswer
from ..chaos.toxics import CutMode
from .context import RunState
from .harness import Hold, reap
from .spec import KERNEL_CONDITIONS, RunSpec

if TYPE_CHECKING:
    from ..chaos.kernel import Topology

#: A throttled link never goes below this (bytes/s): handshakes and heartbeats still pass.
THROTTLE_FLOOR = 16_000


async def play(
    run: RunState,
    condition: str,
    fault: CutMode,
    *,
    ramp: float | None = None,
    cut_done: float | None = None,
) -> None:
    """Play ``condition`` now, with ``fault`` as the way connections die (a gradual
    degradation cuts when its ramp is over). ``cut_done``: the first cut already happened
    then (an exact byte-offset cut), for the conditions that start with one."""
    p = run.h.proxy
    prof = run.spec.profile_info
    net = run.simulator()
    if cut_done is not None:
        run.mark(f"{condition}: cut at the timing point ({fault})", cut_done)
    if condition == "throttled":
        await throttle(run)
        if cut_done is None:
            run.mark(f"cut on the throttled link ({fault})")
            await p.cut_all(fault, reason="throttled")
    elif condition == "receive_only":
        t = run.mark(f"client's frames dropped {prof.receive_only:.1f} s, then {fault}")
        run.down_until = t + prof.receive_only
        await net.simulate_asymmetric_failure("upstream", prof.receive_only, then=fault)
        # (the direction came back when the failure's time was up; the cut after it may
        # take a moment, a new connection may not)
        run.t_restored = run.down_until
        run.faults.append((time.monotonic(), "receive-only failure over"))
    elif condition == "long_outage":
        if cut_done is None:
            run.mark(f"silent outage {prof.long_outage:.0f} s ({fault})")
        run.down_until = time.monotonic() + prof.long_outage
        await net.simulate_silent_outage(prof.long_outage, mode=fault)
        run.t_restored = run.down_until
        run.faults.append((time.monotonic(), "silent outage over"))
    elif condition in KERNEL_CONDITIONS:
        await play_kernel(run, condition, fault, cut_done=cut_done)
    elif condition == "clean":
        if cut_done is None:
            run.mark(f"clean disconnect ({fault})")
            await p.cut_all(fault, reason="clean_disconnect")
    elif condition == "gradual":
        duration = ramp if ramp is not None else prof.ramp
        run.faults.append((time.monotonic(), f"degradation starts ({duration:.2f} s ramp)"))
        await net.simulate_gradual_degradation(
            1.0 / duration, max_latency=0.3, start_rate=1_000_000.0, min_rate=32_000.0
        )
        run.mark(f"cut after degradation ({fault})")
        # the link dies and the path the client reconnects over is a healthy one
        await asyncio.gather(p.cut_all(fault, reason="after_degradation"), net.restore())
    elif condition == "intermittent":
        for k in range(3):
            if k == 0 and cut_done is not None:
                continue
            if k:
                await asyncio.sleep(prof.drop_every)  # the fault's own rhythm
            run.mark(f"intermittent drop {k + 1}/3 ({fault})")
            await p.cut_all(fault, reason=f"intermittent_{k + 1}")
    elif condition == "outage":
        if cut_done is None:
            run.mark(f"outage {prof.outage:.1f} s ({fault})")
        await net.simulate_complete_outage(prof.outage, mode=fault)
        run.faults.append((time.monotonic(), "outage over"))
    elif condition == "asymmetric":
        run.mark(f"answer direction dropped {prof.asymmetric:.1f} s, then {fault}")
        await net.simulate_asymmetric_failure("downstream", prof.asymmetric, then=fault)
        run.faults.append((time.monotonic(), "asymmetric over"))
    else:  # pragma: no cover - the catalog is closed
        raise ValueError(condition)


async def kernel_loss(run: RunState) -> None:
    """Random loss both ways on the router (every connection, new ones too), from the
    start of the answer to its end. Installed once."""
    if run.kernel:
        return
    pct = run.spec.profile_info.loss_percent(run.spec.repeat)
    fault = await asyncio.to_thread(run.topology.faults.loss, pct, "both")
    run.kernel.append(fault)
    run.loss_percent = pct
    run.faults.append((fault.installed_at, f"kernel: {pct:g} % of packets lost both ways"))


async def play_kernel(
    run: RunState, condition: str, fault: CutMode, *, cut_done: float | None
) -> None:
    """A kernel-level condition, on the topology's router. Loss: installed (if not yet)
    and the connection cut with the fault mode on the proxy. Receive-only and blackhole:
    the router drops the client's data segments (bare ACKs pass) or every packet both
    ways for the profile's time, new connections included; then the connections still
    open from before it are cut with the fault mode (``blackhole``: left as they are)."""
    p = run.h.proxy
    prof = run.spec.profile_info
    faults = run.topology.faults
    if condition == "kernel_loss":
        await kernel_loss(run)
        if cut_done is None:
            run.mark(f"cut on the lossy path ({fault})")
            await p.cut_all(fault, reason="kernel_loss")
        return
    before = {c.id for c in p.connections}
    if condition == "kernel_receive_only":
        seconds, what = prof.receive_only, "client's data segments dropped (kernel)"
        installed = await asyncio.to_thread(faults.drop_data, "upstream")
    else:
        seconds, what = prof.kernel_blackhole, "every packet dropped both ways (kernel)"
        installed = await asyncio.to_thread(faults.blackhole, "both")
    run.kernel.append(installed)
    t = run.mark(f"{what} {seconds:.1f} s, then {fault}", installed.installed_at)
    run.down_until = t + seconds
    try:
        await asyncio.sleep(max(0.0, run.down_until - time.monotonic()))  # the fault's length
    finally:
        await asyncio.to_thread(installed.remove)
    assert installed.removed_at is not None
    run.t_restored = installed.removed_at
    run.faults.append(
        (installed.removed_at, f"kernel fault removed ({installed.dropped()} packets dropped)")
    )
    if fault != "blackhole":
        stale = [c for c in p.connections if c.id in before and c.is_live]
        await asyncio.gather(*(c.cut(fault, f"after_{condition}") for c in stale))


async def throttle(run: RunState) -> None:
    """Cap the link (both directions, every connection, new ones too) at the profile's
    fraction of the rate the fault-free run used per connection; it stays until the run
    ends. Installed once."""
    if run.throttle:
        return
    base = run.baseline
    per_conn = base.wire_bytes / max(1, len(run.clients)) if base is not None else 0.0
    seconds = base.total_s if base is not None and base.total_s > 0 else 1.0
    rate = max(THROTTLE_FLOOR, run.spec.profile_info.throttle * per_conn / seconds)
    run.throttle_rate = rate
    run.throttle = await run.simulator().simulate_bandwidth_throttling(int(rate))
    run.faults.append((time.monotonic(), f"link throttled to {rate / 1000:,.0f} KB/s both ways"))


#: The proxy's records that put a fault on the wire (a cut, a toxic, a refusal).
_FAULT_RECORDS = frozenset({"cut", "toxic_added", "disabled", "asymmetric"})
#: A record this close before the fault's mark is the fault itself (an exact byte cut is
#: marked from its record's wall-clock time, translated to the monotonic clock).
_SAME_INSTANT = 0.005


def point_holds(run: RunState, answers: Sequence[GeneratedAnswer]) -> list[Hold]:
    """Where each answer's agent waits in a faulty run whose plan plays the condition at
    a fraction of the answer (:func:`timed_play`): before its last event, until the
    fault is on the wire (:func:`release_when_played`); then on at its pace (its
    schedule moved by the wait). So the answer cannot end before the fault, however
    fast the agent or late a loaded client loop counts what arrived (the flake: a fault
    at 95 % played after the answer had fully arrived).

    Before the *last* event, not at the timing point itself: a run whose fault comes in
    time never waits, so what is measured is as before. (Held at the point, the agent
    could no longer run ahead of a client that lags it, and a 10 MB answer's recovery,
    timed from the fault to the answer's end, grew from 1.3 s to 3-5 s.)"""
    return [Hold(max(0, len(a.events) - 1)) for a in answers]


async def open_gate_when_held(run: RunState, holds: Sequence[Hold]) -> None:
    """Every agent waits before its last event: the timing point is reached, whatever
    the count of events says (a point at 98 % of short answers can count more events
    than all but the last ones)."""
    if not holds:
        return  # nothing holds: the count alone says when the point is reached
    await asyncio.gather(*(asyncio.wrap_future(h.reached) for h in holds))
    run.gate.open()


async def release_when_played(run: RunState, holds: Sequence[Hold]) -> None:
    """Release the held agents once the run's first fault is on the wire: a proxy record
    of a cut, toxic or refusal at (or just before: an exact byte cut) its mark, or a
    kernel fault installed then."""
    try:
        await run.faulted.wait()
        assert run.t_fault is not None
        since = run.t_fault - _SAME_INSTANT
        wall = time.time() - (time.monotonic() - since)
        p = run.h.proxy

        def played() -> bool:
            if any(f.installed_at >= since for f in run.kernel):
                return True
            return any(r.kind in _FAULT_RECORDS and r.time >= wall for r in reversed(p.records))

        await p.wait_until(played)
    finally:
        for hold in holds:
            hold.release()


async def trigger(run: RunState, total_events: int) -> None:
    """Wait for the spec's timing point."""
    timing = run.spec.timing_info
    if timing.at is not None:
        await asyncio.sleep(max(0.0, run.t_started + timing.at - time.monotonic()))
        return
    fraction = timing.fraction(run.spec.repeat)
    await run.gate.reached(max(1, int(fraction * total_events)))


async def timed_play(run: RunState, total_events: int) -> None:
    """Play the condition at the timing point. A gradual degradation starts a ramp
    earlier, so that the link is degraded *before* it fails at the timing point."""
    spec, prof = run.spec, run.spec.profile_info
    timing = spec.timing_info
    if spec.condition == "throttled":
        await throttle(run)  # from the start: the answer flows over a throttled link
    if spec.condition == "kernel_loss":
        await kernel_loss(run)  # from the start: the answer flows over a lossy path
    if spec.condition == "gradual" and timing.at is None and run.baseline is not None:
        fraction = timing.fraction(spec.repeat)
        point = run.t_started + fraction * run.baseline.total_s
        await asyncio.sleep(max(0.0, point - prof.ramp - time.monotonic()))  # the schedule
        # a ramp that cannot fit before the point is shortened (never below 50 ms); the
        # link fails when the ramp is over: at the point, as the fault-free run paced it
        ramp = min(prof.ramp, max(0.05, point - time.monotonic()))
        await play(run, spec.condition, spec.fault, ramp=ramp)
        return
    if timing.at is None and spec.condition in (
        "clean",
        "intermittent",
        "outage",
        "long_outage",
        "throttled",
        "kernel_loss",
    ):
        cut_at = await cut_at_point(run, total_events)
        await play(run, spec.condition, spec.fault, cut_done=cut_at)
        return
    await trigger(run, total_events)
    short = min(prof.ramp, timing.at) if timing.at is not None else None
    await play(run, spec.condition, spec.fault, ramp=short)


async def cut_at_point(run: RunState, total_events: int) -> float | None:
    """Cut right after the byte at the timing point (an exact byte-offset cut in the
    proxy, so a fast answer cannot outrun it, nor a busy client loop that consumes
    events later than the proxy forwards them), unless the user reaches the point
    first. One client: its connection's bytes. Several: the bytes over all of them, and
    every connection is cut in the same instant (one network event). Returns the cut's
    time, or None (nothing cut yet)."""
    spec, base = run.spec, run.baseline
    fraction = spec.timing_info.fraction(spec.repeat)
    user = asyncio.ensure_future(run.gate.reached(max(1, int(fraction * total_events))))
    if base is None or not base.conn_bytes:
        await user
        return None
    p = run.h.proxy
    if len(run.clients) == 1:
        cut = p.cut_after_bytes(int(fraction * base.conn_bytes), mode=spec.fault)
    else:
        already = p.totals()["downstream"]["sent"]
        target = max(1, int(fraction * base.wire_bytes) - already)
        cut = p.cut_after_bytes(target, mode=spec.fault, total=True)
    fired = asyncio.ensure_future(cut.wait())
    waits: set[asyncio.Future[Any]] = {fired, user}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not fired.done():
            cut.cancel()
        for fut in waits:
            if not fut.done():
                await reap(fut)
    if fired.done() and not fired.cancelled() and fired.exception() is None:
        record = fired.result()  # its wall-clock time, on the monotonic clock
        return time.monotonic() - max(0.0, time.time() - record.time)
    return None


def heal(topo: Topology) -> None:
    """Remove the run's kernel faults (their drop counts are kept)."""
    for fault in list(topo.faults.active):
        fault.remove()


async def topology(spec: RunSpec, stack: contextlib.ExitStack) -> Topology | None:
    """For a kernel condition: a :class:`~unbroken.chaos.kernel.Topology` (deleted when
    ``stack`` closes), with this thread in its client namespace until then, so the
    proxy and the clients made here live there; the server thread serves from the
    server namespace. None for the other conditions."""
    if spec.condition not in KERNEL_CONDITIONS:
        return None
    from ..chaos.kernel import Topology

    topo = await asyncio.to_thread(Topology().open)
    stack.callback(topo.close)
    stack.enter_context(topo.client.entered())
    return topo
