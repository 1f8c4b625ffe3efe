"""A stream's owner is kept in Redis: on another node, another principal's resume and
cancel are refused exactly as a forged id is, and the owner resumes there exactly.
Two in-process nodes, each with its own RedisStore on one real redis-server."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.integration.server.jwt_kit import AUDIENCE, ISSUER, SigningKey, rsa_key
from tests.integration.server.wire import Wire, assert_exact, text_of
from unbroken.protocol.client_session import Cursor
from unbroken.protocol.digest import seed
from unbroken.protocol.frames import Cancel
from unbroken.server import Output, Request, Unbroken
from unbroken.server.auth import JWTAuth
from unbroken.store.redis import RedisStore
from unbroken.testing import RunningServer, serve

from .conftest import RedisServer

pytestmark = pytest.mark.timeout(60)
N = 80


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return rsa_key("k1")


@pytest.fixture
async def nodes(redis_server: RedisServer, key: SigningKey) -> AsyncIterator[list[RunningServer]]:
    prefix = f"own{secrets.token_hex(4)}"
    running: list[RunningServer] = []
    stores: list[RedisStore] = []
    cms = []
    for _ in range(2):
        store = RedisStore(redis_server.url, prefix=prefix)
        auth = JWTAuth(key=key.public_pem(), algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        app = Unbroken(store, auth=auth, shutdown_grace=1.0)

        @app.agent("paced")
        async def paced(req: Request, out: Output) -> None:
            for i in range(N):
                await out.text(f"p{i:03d} ")
                await out.flush()
                await asyncio.sleep(0.02)

        cm = serve(app)
        running.append(await cm.__aenter__())
        cms.append(cm)
        stores.append(store)
    yield running
    for cm in reversed(cms):
        await cm.__aexit__(None, None, None)
    for store in stores:
        await store.close()


async def test_the_owner_is_kept_across_nodes(nodes: list[RunningServer], key: SigningKey) -> None:
    a, b = nodes
    alice = await Wire.open(a.url, token=key.token("alice"))
    stream = await alice.start("r1", "paced")
    assert len(base64.urlsafe_b64decode(stream + "==")) == 16  # 128 random bits here too
    await alice.read_until_seq(stream, 10)
    cursor = alice.cs.by_stream[stream].cursor()
    assert cursor is not None
    alice.abort()  # alice's network drops; the run goes on on node a

    bob = await Wire.open(b.url, token=key.token("bob"))
    forged = secrets.token_urlsafe(16)
    seen: dict[str, tuple[str, str, str]] = {}
    for sid in (stream, forged):
        probe = Cursor(sid, 0, seed(sid, cursor.epoch).hex(), cursor.epoch)
        await bob.send(bob.cs.adopt(f"probe-{sid}", probe))
        await bob.until(lambda _o, s=sid: s in bob.gone)
        n = len(bob.errors)
        await bob.send(Cancel(stream=sid))
        await bob.until(lambda _o, n=n: len(bob.errors) > n)
        gone, error = bob.gone[sid], bob.errors[-1]
        seen[sid] = (gone.reason, gone.message, error.message.replace(sid, "<id>"))
    assert seen[stream] == seen[forged]
    assert seen[stream][0] == "forbidden"

    # alice comes back through node b: her stream, resumed exactly where she was
    back = await Wire.open(b.url, token=key.token("alice"))
    await back.send(back.cs.adopt("again", cursor))
    await back.read_to_end(stream)
    events = alice.events[stream] + back.events[stream]
    assert_exact(events)
    assert text_of(events) == "".join(f"p{i:03d} " for i in range(N))
    await bob.close()
    await back.close()
