"""A UI stream read on another node: the answer is in a real redis-server, written by
node A's agent, read live from node B as an AI SDK stream and as AG-UI events."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest

from unbroken.testing import serve

from ..redis.conftest import RedisServer, redis_server  # noqa: F401 - the fixture
from ..server.conftest import authenticate, make_kit
from .conftest import add_mixed
from .parsers import ag_ui_events, ag_ui_run, ai_sdk_chunks, ai_sdk_message
from .test_ui_streams import ALICE, TIMEOUT, SSEReader, expected_ag_ui, expected_ai_sdk, start_mixed

pytestmark = pytest.mark.timeout(60)


async def test_an_answer_in_redis_is_read_live_on_another_node_in_both_protocols(
    redis_server: RedisServer,  # noqa: F811 - the fixture
) -> None:
    from unbroken.store.redis import RedisStore

    prefix = f"ui-{secrets.token_hex(4)}"
    a = make_kit(store=RedisStore(redis_server.url, prefix=prefix), authenticate=authenticate)
    b = make_kit(store=RedisStore(redis_server.url, prefix=prefix), authenticate=authenticate)
    add_mixed(a)
    try:
        async with serve(a.app) as node_a, serve(b.app) as node_b:
            stream = await start_mixed(node_a.url, {"g1": "g1"})
            async with asyncio.timeout(TIMEOUT):
                await a.reached["g1"].wait()
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                sdk = SSEReader(http, f"{node_b.http}/v1/ui/ai-sdk/{stream}/stream", ALICE)
                agui = SSEReader(http, f"{node_b.http}/v1/ui/ag-ui/{stream}", ALICE)
                await sdk.until(lambda raw: b"text-end" in raw)
                await agui.until(lambda raw: b"TEXT_MESSAGE_END" in raw)
                a.gates["g1"].set()
                chunks, done = ai_sdk_chunks(await sdk.finish())
                assert done and ai_sdk_message(chunks) == expected_ai_sdk(stream)
                assert ag_ui_run(ag_ui_events(await agui.finish())) == expected_ag_ui(stream)
    finally:
        for kit in (a, b):
            await kit.app.store.close()
