"""Streams belong to principals: another principal's resume, cancel and ack are
answered exactly as a forged or unknown stream id is (nothing reveals that a stream
exists), and the owner's stream goes on to an exact end. Real sockets, real JWTs."""

from __future__ import annotations

import base64
import secrets

import pytest

from unbroken.protocol.client_session import Cursor
from unbroken.protocol.digest import seed
from unbroken.protocol.frames import Ack, Cancel, Error

from .conftest import ServeKit, token
from .jwt_kit import AUDIENCE, ISSUER, SigningKey, ed_key
from .wire import Wire, assert_exact, text_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return ed_key("ed-1")


async def test_another_principal_learns_nothing_a_forged_id_would_not_tell(
    served: ServeKit, key: SigningKey
) -> None:
    from unbroken.server.auth import JWTAuth

    auth = JWTAuth(key=key.public_pem(), algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    kit, srv = await served(authenticate=auth)
    alice = await Wire.open(srv.url, token=key.token("alice"))
    stream = await alice.start("r1", "count", {"n": 300, "pause_at": 120, "gate": "g"})
    await kit.reached["g"].wait()
    epoch = alice.cs.by_stream[stream].epoch
    forged = secrets.token_urlsafe(16)

    bob = await Wire.open(srv.url, token=key.token("bob"))
    answers: dict[str, list[tuple[str, str, str]]] = {}
    for sid in (stream, forged):
        got: list[tuple[str, str, str]] = []
        # resume from the start (the seed is no secret: stream id and epoch)
        await bob.send(bob.cs.adopt(f"probe-{sid}", Cursor(sid, 0, seed(sid, epoch).hex(), epoch)))
        await bob.until(lambda _o, s=sid: s in bob.gone)
        g = bob.gone.pop(sid)
        got.append(("gone", g.reason, g.message))
        bob.cs.forget(f"probe-{sid}")
        # cancel and ack
        for frame in (Cancel(stream=sid), Ack(stream=sid, seq=5)):
            n = len(bob.errors)
            await bob.send(frame)
            await bob.until(lambda _o, n=n: len(bob.errors) > n)
            e: Error = bob.errors[-1]
            got.append((e.code, "<id>" if e.stream == sid else str(e.stream), e.message))
        answers[sid] = [(a, b, c.replace(sid, "<id>")) for a, b, c in got]
    assert answers[stream] == answers[forged]
    assert [(a[0], a[1]) for a in answers[stream]] == [
        ("gone", "forbidden"),
        ("forbidden", "<id>"),
        ("bad_ack", "<id>"),
    ]
    # alice's stream is untouched: not cancelled, and it ends exact
    kit.gates["g"].set()
    events = await alice.read_to_end(stream)
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(300))
    meta = await kit.meta(stream)
    assert meta is not None and meta.status == "completed"
    # bob's connection was never closed for trying
    await bob.ping()
    # alice resumes her own stream on a new connection: accepted
    again = await Wire.open(srv.url, token=key.token("alice"))
    await again.replay(stream, epoch)
    replayed = await again.read_to_end(stream)
    assert replayed == events
    for w in (alice, bob, again):
        await w.close()


async def test_stream_ids_are_128_random_bits(served: ServeKit, key: SigningKey) -> None:
    _kit, srv = await served()
    w = await Wire.open(srv.url)
    ids = [await w.start(f"r{i}", "echo", i) for i in range(64)]
    for sid in ids:
        assert len(sid) == 22
        raw = base64.urlsafe_b64decode(sid + "==")
        assert len(raw) == 16, sid  # secrets.token_urlsafe(16): 128 bits
    assert len(set(ids)) == len(ids)
    # and no two ids share a long prefix (they are random, not counters)
    assert len({sid[:6] for sid in ids}) == len(ids)
    await w.close()
