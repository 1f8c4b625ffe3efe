"""A 2 s silent outage costs about 2 s, not a handshake timeout more.

After a drop the client's connection attempts run into the blackhole too (accepted,
never answered). When the path heals, the next fresh attempt, started at most one
``attempt_stagger`` later, must be the one that resumes the stream: no backoff wait and
no further attempt in between.
"""

from __future__ import annotations

import asyncio

from unbroken import BackoffPolicy
from unbroken.chaos import FaultProxy, NetworkSimulator
from unbroken.chaos.toxics.reset_peer import ResetPeer
from unbroken.chaos.toxics.timeout import Timeout
from unbroken.client import Client, ConnectionEvent
from unbroken.server import Unbroken
from unbroken.testing import serve

T = 20.0


async def test_a_two_second_blackhole_resumes_with_the_first_attempt_after_the_heal() -> None:
    gate = asyncio.Event()
    app = Unbroken(allow_anonymous=True, heartbeat=0.2)

    @app.agent("two_halves")
    async def two_halves(req, out):  # type: ignore[no-untyped-def]
        for i in range(100):
            await out.text(f"a{i} ")
        await gate.wait()
        for i in range(100):
            await out.text(f"b{i} ")

    expected = "".join(f"a{i} " for i in range(100)) + "".join(f"b{i} " for i in range(100))
    marks: list[tuple[str, object]] = []
    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port), close_grace=0.2) as proxy,
    ):
        net = NetworkSimulator(proxy)

        def seen(ev: ConnectionEvent) -> None:
            # which proxy connection was the newest when this happened
            marks.append((ev.kind, len(proxy.history)))

        async with Client(
            f"ws://127.0.0.1:{proxy.port}/ws",
            policy=BackoffPolicy(deadline=30),
            on_event=seen,
            ping_every=0.1,
        ) as client:
            events = client.connection_events()
            st = await client.start("two_halves")
            async for ev in st:
                if ev.seq >= 50:
                    break
            outage = asyncio.create_task(net.simulate_silent_outage(2.0, mode="blackhole"))
            # the outage lasts beyond the drop's detection and the first attempts
            while not any(kind == "disconnected" for kind, _ in marks):
                await asyncio.wait_for(anext(events), T)
            gate.set()
            await asyncio.wait_for(outage, T)
            healed_at = len(proxy.history)  # connections accepted before the heal
            marks.append(("healed", healed_at))
            async for _ in st:
                pass
            answer = await asyncio.wait_for(st.wait(), T)
    assert answer.text == expected
    kinds = [k for k, _ in marks if k != "healed"]
    # one reconnect for the whole outage: the heal is met by an attempt, never by a
    # failed open followed by a backoff wait (before: disconnected, reconnecting again)
    assert kinds == ["connected", "disconnected", "reconnecting", "connected", "resumed"], marks
    connected_via = next(n for k, n in marks[::-1] if k == "connected")
    assert isinstance(connected_via, int)
    # attempts made in the blackhole never got through; the one that did was made
    # after the heal (at the latest the first one), or just as it healed
    assert healed_at - 1 <= connected_via <= healed_at + 1, marks


async def test_a_long_blackhole_never_leaves_more_than_a_stagger_between_openings() -> None:
    """Openings that time out in a blackhole are followed by the next within one
    stagger (the backoff's growing delays are for refusals, which answer at once):
    after a heal, the next attempt is at most a stagger away however long it lasted."""
    gate = asyncio.Event()
    app = Unbroken(allow_anonymous=True, heartbeat=0.2)

    @app.agent("two_halves")
    async def two_halves(req, out):  # type: ignore[no-untyped-def]
        await out.text("a ")
        await gate.wait()
        await out.text("b")

    marks: list[ConnectionEvent] = []
    stagger = 0.2
    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port), close_grace=0.2) as proxy,
    ):
        net = NetworkSimulator(proxy)
        async with Client(
            f"ws://127.0.0.1:{proxy.port}/ws",
            policy=BackoffPolicy(deadline=60, max_attempts=None),
            on_event=marks.append,
            ping_every=0.1,
            open_timeout=0.5,
            attempt_stagger=stagger,
            seed=7,
        ) as client:
            st = await client.start("two_halves")
            async for _ in st:
                break
            # ~8 openings time out: the backoff's ceilings reach 0.1 * 2^6 = 6.4 s
            await asyncio.wait_for(net.simulate_silent_outage(5.0, mode="blackhole"), T)
            gate.set()
            answer = await asyncio.wait_for(st.wait(), T)
    assert answer.text == "a b"
    waits = [e for e in marks if e.kind == "reconnecting"]
    assert len(waits) >= 5, [(e.kind, e.cause) for e in marks]
    assert all(e.delay <= stagger for e in waits), [(e.attempt, e.delay) for e in waits]
    assert client.backoff is not None and client.backoff.attempts == len(waits)


async def test_a_reset_that_ends_a_silent_spell_is_retried_within_a_stagger() -> None:
    """The path comes back by resetting what it held (a proxy or a NAT that lost its
    state answers the young opening with RST): that quick failure ends a silent spell,
    so the next attempt is within one stagger too, not the backoff's grown ceiling.
    (Under load ``simulate_silent_outage``'s end reset an opening younger than a
    stagger, and the client then waited up to 6.4 s.)"""
    gate = asyncio.Event()
    app = Unbroken(allow_anonymous=True, heartbeat=0.2)

    @app.agent("two_halves")
    async def two_halves(req, out):  # type: ignore[no-untyped-def]
        await out.text("a ")
        await gate.wait()
        await out.text("b")

    marks: list[ConnectionEvent] = []
    silent_openings = asyncio.Event()
    reset_seen = asyncio.Event()
    reset_at: list[int] = []

    def mark(e: ConnectionEvent) -> None:
        marks.append(e)
        if e.kind == "reconnecting" and e.attempt >= 5:
            silent_openings.set()  # the backoff's ceiling is 1.6 s by now
        answered = not e.cause.startswith("TimeoutError")  # the reset, not a timeout
        if e.kind == "disconnected" and answered and silent_openings.is_set() and not reset_at:
            reset_at.append(len(marks) - 1)
            reset_seen.set()

    stagger = 0.2
    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port), close_grace=0.2) as proxy,
        Client(
            f"ws://127.0.0.1:{proxy.port}/ws",
            policy=BackoffPolicy(deadline=60, max_attempts=None),
            on_event=mark,
            ping_every=0.1,
            open_timeout=0.3,
            attempt_stagger=stagger,
            seed=7,
        ) as client,
    ):
        st = await client.start("two_halves")
        async for _ in st:
            break
        # a blackhole: openings are accepted and hear nothing (each times out)
        silent = [
            proxy.add_toxic(Timeout(timeout=0.0), stream=d, name=f"silent_{d}")
            for d in ("upstream", "downstream")
        ]
        await proxy.cut_all("blackhole", reason="test")
        await asyncio.wait_for(silent_openings.wait(), T)
        # the path comes back resetting: the next opening gets RST at once
        proxy.add_toxic(ResetPeer(timeout=0.0), stream="upstream", name="reset")
        for toxic in silent:
            proxy.remove_toxic(toxic.name)
        await asyncio.wait_for(reset_seen.wait(), T)
        proxy.remove_toxic("reset")
        gate.set()
        answer = await asyncio.wait_for(st.wait(), T)
    assert answer.text == "a b"
    after = marks[reset_at[0] :]
    waits = [e for e in after if e.kind == "reconnecting"]
    assert waits, [(e.kind, e.cause) for e in marks]
    assert waits[0].delay <= stagger, [(e.kind, e.attempt, e.delay, e.cause) for e in marks]


async def test_a_slow_handshake_is_not_hedged_every_stagger() -> None:
    """An upgrade that takes ~1.2 s (0.6 s of latency each way) is slow, not lost: once
    the client has seen one succeed, it spaces fresh attempts at least twice that
    apart, so a reconnect opens one connection, not one per stagger (100 clients
    against a slow server once opened 26,000 handshakes in one round)."""
    from unbroken.chaos.toxics import Latency

    gate = asyncio.Event()
    app = Unbroken(allow_anonymous=True)

    @app.agent("two_halves")
    async def two_halves(req, out):  # type: ignore[no-untyped-def]
        await out.text("a ")
        await gate.wait()
        await out.text("b")

    async with (
        serve(app) as srv,
        FaultProxy(upstream=("127.0.0.1", srv.port), close_grace=0.2) as proxy,
    ):
        for stream in ("upstream", "downstream"):
            proxy.add_toxic(Latency(latency=0.6), stream=stream)  # type: ignore[arg-type]
        async with Client(
            f"ws://127.0.0.1:{proxy.port}/ws",
            policy=BackoffPolicy(base=0.01, cap=0.05, deadline=60),
            open_timeout=10,
            attempt_stagger=0.3,
            silence_factor=20,
        ) as client:
            first_round = len(proxy.history)
            assert first_round >= 2  # the first opening did hedge: nothing was known yet
            events = client.connection_events()
            st = await client.start("two_halves")
            async for ev in st:
                if ev.seq >= 2:
                    break
            before = len(proxy.history)
            await proxy.cut_all("rst")
            while True:
                ev = await asyncio.wait_for(anext(events), T)
                if ev.kind == "resumed":
                    break
            gate.set()
            answer = await asyncio.wait_for(st.wait(), T)
            assert len(proxy.history) - before == 1, proxy.history[before:]
    assert answer.text == "a b"
