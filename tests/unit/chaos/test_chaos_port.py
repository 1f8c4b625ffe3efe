"""The proxy's port without sockets: records, byte cuts and waiters over fake connections."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from unbroken.chaos.port import ByteCut, ProxyPort
from unbroken.chaos.toxics import CutMode, Direction
from unbroken.chaos.toxics.base import DetailValue


@dataclass
class FakeLink:
    received: int = 0
    sent: int = 0
    dropped: int = 0


@dataclass
class FakeConnection:
    """Enough of a ProxiedConnection for the port: counters, liveness and cuts."""

    port: ProxyPort[FakeConnection]
    id: int
    upstream: FakeLink = field(default_factory=FakeLink)
    downstream: FakeLink = field(default_factory=FakeLink)
    cuts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_live(self) -> bool:
        return not self.cuts

    def link(self, direction: Direction) -> FakeLink:
        return self.upstream if direction == "upstream" else self.downstream

    def cut(
        self,
        mode: CutMode,
        reason: str = "cut",
        *,
        direction: Direction | None = None,
        **detail: DetailValue,
    ) -> asyncio.Future[None]:
        self.cuts.append((mode, reason))
        self.port.record("cut", self, direction, mode=mode, reason=reason, **detail)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def make_port() -> ProxyPort[FakeConnection]:
    return ProxyPort(
        "p",
        ("127.0.0.1", 9),
        seed=1,
        connect_timeout=1.0,
        close_grace=1.0,
        flush_timeout=1.0,
        fault_log=None,
    )


async def test_records_carry_the_connections_offsets_and_drops_only_when_some() -> None:
    port = make_port()
    conn = FakeConnection(port, 1)
    port.opened(conn)
    conn.upstream.sent, conn.downstream.sent = 3, 5
    plain = port.record("x", conn, "upstream", a=1)
    conn.downstream.dropped = 2
    lossy = port.record("y", conn)
    lone = port.record("z")
    assert (plain.connection, plain.direction, plain.detail) == (1, "upstream", {"a": 1})
    assert plain.offsets == {"upstream": 3, "downstream": 5} and plain.dropped == {}
    assert lossy.dropped == {"upstream": 0, "downstream": 2}
    assert lone.connection is None and lone.offsets == {}
    assert port.log.records == [plain, lossy, lone]
    port.closed(conn)
    assert port.live == {} and port.history == [conn]


async def test_a_waiter_wakes_on_notify_and_a_stop_fails_the_rest() -> None:
    port = make_port()
    box = {"n": 0}
    woken = asyncio.ensure_future(port.wait_until(lambda: box["n"] == 1))
    stuck = asyncio.ensure_future(port.wait_until(lambda: False))
    await asyncio.sleep(0)
    box["n"] = 1
    port.notify()
    await asyncio.wait_for(woken, 1)
    port.fail_waiters(RuntimeError("stopped"))
    try:
        await asyncio.wait_for(stuck, 1)
    except RuntimeError as exc:
        assert str(exc) == "stopped"
    else:
        raise AssertionError("the waiter should have failed")


@given(
    offsets=st.lists(st.integers(0, 200), min_size=1, max_size=6),
    link_sent=st.integers(0, 150),
    n=st.integers(1, 100),
)
def test_the_due_byte_cut_is_the_first_offset_the_chunk_reaches(
    offsets: list[int], link_sent: int, n: int
) -> None:
    async def main() -> None:
        port = make_port()
        cuts = [ByteCut(port.byte_cuts, o, "downstream", "rst", True) for o in offsets]
        ByteCut(port.byte_cuts, link_sent, "upstream", "rst", True)  # other direction
        due = port.byte_cut_due("downstream", link_sent, n)
        reached = [c for c in cuts if link_sent <= c.offset <= link_sent + n]
        if not reached:
            assert due is None
        else:
            first = min(c.offset for c in reached)
            assert due is not None and due.offset == first
            assert due is next(c for c in cuts if c.offset == first)

    asyncio.run(main())


async def test_a_total_byte_cut_cuts_every_live_connection_and_fires_once() -> None:
    port = make_port()
    conns = [FakeConnection(port, i) for i in (1, 2, 3)]
    for conn in conns:
        port.opened(conn)
    cut = ByteCut(port.byte_cuts, 10, "downstream", "fin", True, total=True)
    assert cut.armed and port.byte_cuts == [cut]
    port.fire(cut, conns[1], "downstream")
    record = await asyncio.wait_for(cut.wait(), 1)
    assert not cut.armed and cut.count == 1
    assert (record.connection, record.detail["reason"]) == (2, "byte_offset")
    assert conns[1].cuts == [("fin", "byte_offset")]
    assert conns[0].cuts == conns[2].cuts == [("fin", "byte_offset_total")]


async def test_a_cancelled_byte_cut_is_disarmed_and_its_wait_cancelled() -> None:
    port = make_port()
    cut = ByteCut(port.byte_cuts, 10, "upstream", "rst", False)
    cut.cancel()
    assert not cut.armed and cut.fired.cancelled()
