"""Issue 12, bug 2 in the kernel: the client's data is lost on the path while the
server's answer still arrives. Both sides must let go of the dead connection, and the
answer must end exact."""

from __future__ import annotations

import time

from unbroken.chaos.kernel.app import AnswerSpec
from unbroken.client import Client

from .conftest import Net
from .watch import Watch, assert_exact, epoch_of, start


async def test_receive_only_failure_is_detected_and_the_answer_is_exact(net: Net) -> None:
    # the client's data is dropped, bare ACKs pass: the server's answer still arrives
    # but it hears no ack and no ping. The answer is larger than the server's 1 MiB flow
    # window and fast, so the server runs out of window during the failure.
    spec = AnswerSpec(size=3_000_000, seconds=2.0, seed=6)
    watch = Watch()
    t_begin = time.monotonic()
    with net.topo.client.entered():
        async with Client(net.url, on_event=watch.on_event) as client:
            await start(client, watch, spec.to_input())
            await watch.until_seq(50)
            with net.topo.faults.drop_data("upstream") as fault:
                lost = await watch.until_event("disconnected", 10, after=fault.installed_at)
            resumed = await watch.until_event("resumed", 20, after=lost.at)
            answer = await watch.answer()
    assert lost.code == 4004, lost.cause  # declared dead for silence, not by TCP
    assert fault.dropped() > 0
    assert resumed.from_seq >= 50
    assert_exact(spec, answer, epoch_of(watch))
    # the server let the dead connection go too
    found = net.server.find(
        rf"connect conn=(\S+) client={net.topo.addresses.client}:\d+", after=t_begin
    )
    assert found is not None
    net.server.wait_line(rf"close conn={found[1].group(1)} code=", 10)
