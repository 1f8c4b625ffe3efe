"""A start still creating its stream (its log slow) when a shutdown begins: it is
waited for within the same grace as the runs, and one still creating when the grace
is over is cancelled (its caller told the log did not answer) as the runs are
stopped; no run is ever started behind the drain (the lifespan closes the store
next). The hub alone, over a MemoryStore whose create waits to be let through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.waiting import until
from unbroken.errors import StoreUnavailable
from unbroken.server.agent import Output, Principal, Request
from unbroken.server.hub import Hub
from unbroken.store.base import Created
from unbroken.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """A create waits for :attr:`gate` (the log slow); :attr:`entered` once one is
    waiting, :attr:`cancelled` once one was cancelled while waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.slow: set[str] = set()  # the reqs whose create waits

    async def create(self, owner: str, req: str, now: float, scope: str = "") -> Created:
        if req in self.slow:
            self.entered.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return await super().create(owner, req, now, scope)


def make_hub(store: GatedStore) -> tuple[Hub, asyncio.Event]:
    release = asyncio.Event()

    async def stubborn(_req: Request, _out: Output) -> None:
        """Swallows the hub's cancel until released."""
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    async def forever(_req: Request, _out: Output) -> None:
        await asyncio.Event().wait()

    async def quick(_req: Request, out: Output) -> None:
        await out.text("done")

    agents: dict[str, Any] = {
        "stubborn": (stubborn, None),
        "forever": (forever, None),
        "quick": (quick, None),
    }
    return Hub(store, agents), release


def running(store: GatedStore) -> list[str]:
    return [s for s, st in store._streams.items() if st.status == "running"]


async def test_a_create_that_ends_after_the_grace_starts_no_run_behind_the_drain() -> None:
    """The grace is over while a create waits; a stubborn run keeps the shutdown
    going, and the create's log answers meanwhile: before, its run started after the
    drain had listed its runs and was left running (the store closed under it)."""
    store = GatedStore()
    hub, release = make_hub(store)
    stuck = await hub.start(Principal("p"), "r-stuck", "stubborn", None)
    store.slow.add("r-late")
    late = asyncio.ensure_future(hub.start(Principal("p"), "r-late", "forever", None))
    await store.entered.wait()
    shutdown = asyncio.ensure_future(hub.shutdown(grace=0.0))
    await until(lambda: hub.runs[stuck.stream].stop_reason == "shutdown")
    store.gate.set()  # the log answers as the drain waits for the stubborn run
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(10):
        await shutdown
        with pytest.raises(StoreUnavailable, match="shutdown's grace"):
            await late
    assert store.cancelled.is_set()
    assert not hub.runs
    assert running(store) == []
    assert not hub._creating and not hub._creators and not hub._shed


async def test_creates_and_runs_share_one_grace_and_are_stopped_together() -> None:
    """A create the log never answers and a run that never ends: at the grace's end
    the create is cancelled and the run stopped in the same step (one budget: before,
    the creates had a grace of their own, then the runs another, and the create
    was never cancelled)."""
    store = GatedStore()
    hub, _ = make_hub(store)
    long = await hub.start(Principal("p"), "r-long", "forever", None)
    run = hub.runs[long.stream]
    store.slow.add("r-slow")
    joiners = [
        asyncio.ensure_future(hub.start(Principal("p"), "r-slow", "forever", None))
        for _ in range(2)
    ]  # the second waits for the first's create
    await store.entered.wait()
    seen: list[str] = []

    def stopped_with_the_create() -> None:
        seen.append(run.stop_reason)

    watcher = asyncio.ensure_future(store.cancelled.wait())
    watcher.add_done_callback(lambda _f: stopped_with_the_create())
    async with asyncio.timeout(10):
        await hub.shutdown(grace=0.2)
        results = await asyncio.gather(*joiners, return_exceptions=True)
    assert seen == ["shutdown"]  # the run was told to stop when the create was cancelled
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    meta = await store.meta(long.stream)
    assert meta is not None and (meta.status, meta.error) == ("failed", "shutdown")
    assert not hub.runs and running(store) == []


async def test_a_create_that_ends_within_the_grace_drains_with_the_runs() -> None:
    """The log answers within the grace: the run it starts is waited for (it ends
    completed, not failed: shutdown)."""
    store = GatedStore()
    hub, _ = make_hub(store)
    store.slow.add("r-slow")
    start = asyncio.ensure_future(hub.start(Principal("p"), "r-slow", "quick", None))
    await store.entered.wait()
    shutdown = asyncio.ensure_future(hub.shutdown(grace=30.0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not shutdown.done()
    store.gate.set()
    async with asyncio.timeout(10):
        created = await start
        await shutdown
    meta = await store.meta(created.stream)
    assert meta is not None and (meta.status, meta.error) == ("completed", "")
    assert not store.cancelled.is_set() and not hub.runs


class StubbornStore(GatedStore):
    """A create that swallows its cancel and finishes once the gate opens (a store
    call that does not stop when cancelled)."""

    async def create(self, owner: str, req: str, now: float, scope: str = "") -> Created:
        if req in self.slow:
            self.entered.set()
            while not self.gate.is_set():
                try:
                    await self.gate.wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
        return await MemoryStore.create(self, owner, req, now, scope)


async def test_a_create_that_ignores_the_cancel_has_its_run_stopped_and_drained() -> None:
    store = StubbornStore()
    hub, _ = make_hub(store)
    store.slow.add("r-slow")
    start = asyncio.ensure_future(hub.start(Principal("p"), "r-slow", "forever", None))
    await store.entered.wait()
    shutdown = asyncio.ensure_future(hub.shutdown(grace=0.0))
    await store.cancelled.wait()
    store.gate.set()  # it creates the stream after all
    async with asyncio.timeout(10):
        await shutdown
    assert start.done()
    created = start.result()  # it was not told otherwise: its run ended at once
    meta = await store.meta(created.stream)
    assert meta is not None and (meta.status, meta.error) == ("failed", "shutdown")
    assert not hub.runs and running(store) == []


async def test_a_hub_served_again_after_a_shutdown_runs_its_starts() -> None:
    """The lifespan serves an app again after a shutdown (accepting again): its runs
    are not stopped as the last drain's late ones were."""
    store = GatedStore()
    hub, _ = make_hub(store)
    await hub.shutdown(grace=0.0)
    hub.accepting = True  # what the lifespan does when served again
    created = await hub.start(Principal("p"), "r-again", "forever", None)
    run = hub.runs[created.stream]
    for _ in range(5):
        await asyncio.sleep(0)
    assert run.stop_reason == "" and not run.done.is_set()
    await hub.shutdown(grace=0.0)
    meta = await store.meta(created.stream)
    assert meta is not None and (meta.status, meta.error) == ("failed", "shutdown")
