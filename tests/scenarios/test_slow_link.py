"""A resume over a slow link must complete.

Found by the ``throttled`` condition (full tier, TC1 large mid throttled blackhole: 97 s,
89 reconnections, never complete): after a resume the server coalesces the backlog into
one ``events`` frame of up to ``frame_cap`` (256 KB). On a link of ~100 KB/s that frame
takes longer to arrive than the client's silence limit (about a second here):
the client hears no *complete* frame, declares the link dead (4004 "no frame for …"),
resumes from the same seq, gets the same frame, and so on for ever. Bytes arriving are
proof of life too; or the server must not send one frame that a slow link cannot carry
within the limit.
"""

from __future__ import annotations

import asyncio

import pytest

from unbroken.chaos import NetworkSimulator, StreamingResponseSimulator
from unbroken.scenarios.harness import ChaosHarness

#: 250 KB at 64 KB/s takes ~3.9 s; the bound leaves room for a couple of reconnections.
BOUND = 10.0


@pytest.mark.timeout(60)
async def test_a_resume_over_a_slow_link_completes() -> None:
    answer = StreamingResponseSimulator(seed=3).text_answer(250_000, 48)
    async with ChaosHarness() as h:
        net = NetworkSimulator(h.proxy)
        await net.simulate_bandwidth_throttling(64_000)  # both ways, new connections too
        async with h.client() as client:
            # the agent writes far faster than the link carries: a backlog builds up
            rec = await h.start(client, answer, seconds=0.2)
            await asyncio.wait_for(h.proxy.wait_until(lambda: rec.body_bytes > 20_000), 10)
            await h.proxy.cut_all("rst")
            await asyncio.wait_for(rec.done(), BOUND)
        assert rec.answer is not None and rec.answer.status == "completed"
        assert h.verify_client(rec).ok
