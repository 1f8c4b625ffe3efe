"""The Python client's wait for a start's or resume's answer: an ``unavailable``
(or a start refused for load) that arrives while the request is still being sent
moves its deadline on, and the wait that begins after the send keeps it."""

from __future__ import annotations

import asyncio

from unbroken.client.client import Client, Stream


async def test_a_deadline_moved_on_during_the_send_is_kept() -> None:
    client = Client(["ws://127.0.0.1:1/"], request_timeout=0.05)
    st = Stream(client, "r1", "a")
    client._streams["r1"] = st
    loop = asyncio.get_running_loop()
    later = loop.time() + 60.0
    # an unavailable processed during `await self._send_frame(frame)`: sent again later
    client._answer_later("r1", later)
    waiting = asyncio.create_task(client._answered(st, "resume"))
    await asyncio.sleep(0)  # one step: _answered has set its deadline and waits
    assert st._answer_by >= later + 0.05  # not overwritten by now + request_timeout
    assert not waiting.done()
    st._started.set_result(None)  # answered
    await asyncio.wait_for(waiting, 5)
