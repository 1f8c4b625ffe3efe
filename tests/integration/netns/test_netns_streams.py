"""A real server in one namespace, the real client in another, the path between them
broken in the kernel of a third: every answer must end exactly as the fault-free one.

Exactness is checked against the answer computed without streaming (the end digest
from the stream id and epoch, and each part's body), the same reference a fault-free run
meets (``test_fault_free_answer_crosses_the_router_and_is_exact``). The client runs with
its default settings throughout.
"""

from __future__ import annotations

import time

from unbroken.chaos.kernel.app import AnswerSpec
from unbroken.client import Client

from .conftest import PORT, Net
from .watch import Watch, assert_exact, epoch_of, poll, start


async def test_fault_free_answer_crosses_the_router_and_is_exact(net: Net) -> None:
    spec = AnswerSpec(size=200_000, seconds=1.0, kind="multipart", seed=3)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            stream = await start(client, watch, spec.to_input())
            answer = await watch.answer()
    assert_exact(spec, answer, epoch_of(watch))
    assert watch.kinds() == ["connected"]
    # the server saw the client namespace's address: the bytes went through the router
    net.server.wait_line(rf"run started stream={stream.id}", 5)
    assert net.server.find(rf"connect conn=\S+ client={net.topo.addresses.client}:\d+")


async def test_blackhole_both_ways_spanning_a_reconnect_attempt_is_exact(net: Net) -> None:
    spec = AnswerSpec(size=300_000, seconds=3.0, seed=4)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(30)
            with net.topo.faults.blackhole("both") as fault:
                lost = await watch.until_event("disconnected", 10, after=fault.installed_at)
                # hold the outage until the client's next attempt is stuck in it
                await watch.until_event("reconnecting", 10, after=lost.at)
                await poll(
                    lambda: bool(net.topo.client.tcp_sockets("syn-sent", PORT)),
                    10,
                    "connection attempt stuck in SYN-SENT",
                )
            resumed = await watch.until_event("resumed", 20, after=fault.removed_at or 0)
            answer = await watch.answer()
    assert lost.code == 4004, lost.cause  # found by silence, not by TCP
    assert fault.dropped() > 0
    assert resumed.from_seq >= 30
    assert_exact(spec, answer, epoch_of(watch))


async def test_send_only_failure_is_detected_by_the_client_and_the_answer_is_exact(
    net: Net,
) -> None:
    spec = AnswerSpec(size=300_000, seconds=3.0, seed=5)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(30)
            with net.topo.faults.blackhole("downstream") as fault:
                lost = await watch.until_event("disconnected", 10, after=fault.installed_at)
            resumed = await watch.until_event("resumed", 20, after=lost.at)
            answer = await watch.answer()
    assert lost.code == 4004, lost.cause  # the client heard nothing: silence
    assert fault.dropped() > 0
    assert resumed.from_seq >= 30
    assert_exact(spec, answer, epoch_of(watch))


async def test_one_way_blackhole_of_the_client_stalls_tcp_and_is_found_by_silence(
    net: Net,
) -> None:
    # dropping every client packet drops TCP's ACKs too: the server's TCP stops once its
    # congestion window is in flight, so the client hears silence (unlike bare data loss)
    spec = AnswerSpec(size=3_000_000, seconds=2.0, seed=11)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(50)
            with net.topo.faults.blackhole("upstream") as fault:
                lost = await watch.until_event("disconnected", 10, after=fault.installed_at)
            resumed = await watch.until_event("resumed", 20, after=lost.at)
            answer = await watch.answer()
    assert lost.code == 4004, lost.cause
    assert fault.dropped() > 0
    assert resumed.from_seq >= 50
    assert_exact(spec, answer, epoch_of(watch))


async def test_answer_under_10_percent_loss_both_ways_is_exact(net: Net) -> None:
    spec = AnswerSpec(size=200_000, seconds=2.0, kind="multipart", seed=7)
    watch = Watch()
    with net.topo.client.entered(), net.topo.faults.loss(10, "both") as fault:
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            answer = await watch.answer(60)
    assert fault.dropped() > 0
    assert_exact(spec, answer, epoch_of(watch))


async def test_reset_by_ss_kill_on_the_server_is_resumed_and_exact(net: Net) -> None:
    spec = AnswerSpec(size=300_000, seconds=3.0, seed=8)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(30)
            t_kill = time.monotonic()
            killed = net.topo.faults.reset(PORT, side="server")
            lost = await watch.until_event("disconnected", 10, after=t_kill)
            resumed = await watch.until_event("resumed", 20, after=lost.at)
            answer = await watch.answer()
    assert killed == 1
    assert lost.code != 4004, lost.cause  # the RST told the client: no silence needed
    assert resumed.from_seq >= 30
    assert_exact(spec, answer, epoch_of(watch))


async def test_reconnect_under_20_percent_loss_is_exact(net: Net) -> None:
    spec = AnswerSpec(size=100_000, seconds=1.5, seed=9)
    watch = Watch()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(10)
            with net.topo.faults.loss(20, "both") as fault:
                t_kill = time.monotonic()
                # aborted on the client's side: the reconnect itself runs under loss
                assert net.topo.faults.reset(PORT, side="client") == 1
                await watch.until_event("resumed", 40, after=t_kill)
                answer = await watch.answer(60)
    assert fault.dropped() > 0
    assert_exact(spec, answer, epoch_of(watch))


async def test_answer_throttled_by_tbf_is_exact_and_no_faster_than_the_rate(net: Net) -> None:
    rate = 2_000_000  # bit/s
    spec = AnswerSpec(size=250_000, seconds=0.0, seed=10)
    watch = Watch()
    with net.topo.client.entered(), net.topo.faults.bandwidth(rate, "downstream") as shaper:
        # uncompressed: v2's zlib would carry the text in fewer bytes than it has
        async with Client(net.url, on_event=watch.on_event, compression=False) as client:
            t0 = time.monotonic()
            await start(client, watch, spec.to_input())
            answer = await watch.answer(60)
            elapsed = time.monotonic() - t0
        passed = net.topo.faults.shapers()["ub-rc"]["bytes"]
    assert_exact(spec, answer, epoch_of(watch))
    assert passed >= spec.size  # the answer went through the shaper
    # the shaper held it to its rate (framing overhead only makes the bound looser)
    assert spec.size * 8 / elapsed <= rate * 1.2, (elapsed, shaper.detail)
