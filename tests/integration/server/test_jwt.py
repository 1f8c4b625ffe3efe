"""JWTAuth for real: tokens signed with real keys (RS256, ES256, EdDSA, HS256), a JWKS
served over HTTP and rotated while streams run, every refusal closing 4002 while a
healthy stream on another connection goes on to an exact end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from unbroken.client import Client
from unbroken.errors import AuthError, ConfigError
from unbroken.protocol.client_session import ClientSession, Welcomed
from unbroken.protocol.frames import CAP_REFRESH, Hello
from unbroken.server import ConnectInfo, Principal
from unbroken.server.auth import JWTAuth

from .conftest import ServeKit, token
from .jwt_kit import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    ec_key,
    ed_key,
    hmac_key,
    hs256_with_public_key,
    jwks_server,
    rsa_key,
    unsigned_token,
)
from .wire import Closed, Wire, assert_exact, text_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="module")
def other_rsa() -> SigningKey:
    return rsa_key("rsa-1")  # the same kid, another key: a forger's


def auth_for(key: SigningKey, **kw: Any) -> JWTAuth:
    material: Any = key.private if key.alg == "HS256" else key.public_pem()
    return JWTAuth(key=material, algorithms=[key.alg], audience=AUDIENCE, issuer=ISSUER, **kw)


# ------------------------------------------------------------------ verification
@pytest.mark.parametrize("make", [rsa_key, ec_key, ed_key, hmac_key], ids=lambda f: f.__name__)
async def test_a_real_signed_token_gives_its_principal_with_expires(make: Any) -> None:
    key = make()
    auth = auth_for(key, leeway=2)
    before = time.time()
    principal = await auth(Hello(token=key.token("alice", lifetime=30, role="admin")))
    assert principal.id == "alice"
    assert principal.claims["role"] == "admin"
    assert principal.expires is not None
    assert before + 30 + 2 - 1 < principal.expires <= time.time() + 30 + 2


def test_configuration_that_would_open_a_hole_is_refused(rsa: SigningKey) -> None:
    pem = rsa.public_pem()
    with pytest.raises(ConfigError, match="none"):
        JWTAuth(key=pem, algorithms=["none"])
    with pytest.raises(ConfigError, match="confusion"):
        JWTAuth(key=pem, algorithms=["RS256", "HS256"])
    with pytest.raises(ConfigError, match="HMAC secret"):
        JWTAuth(key=pem, algorithms=["HS256"])
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        JWTAuth(key="short", algorithms=["HS256"])
    with pytest.raises(ConfigError, match="exactly one"):
        JWTAuth(algorithms=["RS256"])
    with pytest.raises(ConfigError, match="list"):
        JWTAuth(key=pem, algorithms="RS256")
    with pytest.raises(ConfigError, match="public keys"):
        JWTAuth(jwks_url="https://idp.test/jwks", algorithms=["HS256"])
    with pytest.raises(ConfigError, match="http"):
        JWTAuth(jwks_url="file:///etc/passwd", algorithms=["RS256"])


def test_pyjwt_itself_refuses_none_and_hs_rs_confusion_past_the_header_check(
    rsa: SigningKey,
) -> None:
    auth = auth_for(rsa)
    for forged in (unsigned_token(), hs256_with_public_key(rsa)):
        with pytest.raises(AuthError, match="algorithm"):
            auth.verify_with(forged, auth._key)


REFUSALS = {
    "alg none": lambda k, o: unsigned_token(),
    "HS256 signed with the RS public key": lambda k, o: hs256_with_public_key(k),
    "wrong key": lambda k, o: o.token(),
    "expired": lambda k, o: k.token(lifetime=-5),
    "not yet valid": lambda k, o: k.token(nbf=int(time.time()) + 120),
    "wrong aud": lambda k, o: k.token(aud="another-api"),
    "wrong iss": lambda k, o: k.token(iss="https://evil.test/"),
    "no sub": lambda k, o: k.token(sub=""),
    "not a JWT": lambda k, o: "not.a.jwt",
    "no token": lambda k, o: None,
}
MESSAGES = {
    "alg none": "algorithm 'none' is not accepted",
    "HS256 signed with the RS public key": "algorithm 'HS256' is not accepted",
    "wrong key": "signature does not verify",
    "expired": "token expired at",
    "not yet valid": "not valid yet",
    "wrong aud": "audience",
    "wrong iss": "issuer",
    "no sub": "'sub' claim",
    "not a JWT": "well-formed",
    "no token": "token is required",
}


async def test_each_refusal_closes_4002_and_a_stream_alongside_ends_exact(
    served: ServeKit, rsa: SigningKey, other_rsa: SigningKey
) -> None:
    kit, srv = await served(authenticate=auth_for(rsa))
    healthy = await Wire.open(srv.url, token=rsa.token("alice"))
    stream = await healthy.start("r1", "count", {"n": 300, "pause_at": 150, "gate": "g"})
    await kit.reached["g"].wait()
    for name, make in REFUSALS.items():
        bad = make(rsa, other_rsa)
        w = await Wire.open(srv.url, hello=False)
        await w.send(Hello(token=bad))
        with pytest.raises(Closed) as closed:
            await w.recv_raw()
        assert closed.value.code == 4002, name
        assert MESSAGES[name] in closed.value.reason, (name, closed.value.reason)
        for piece in (bad or "").split("."):  # the token is never echoed, nor a part of it
            assert len(piece) < 8 or piece not in closed.value.reason, name
        await healthy.ping()  # the healthy connection is served between refusals
    kit.gates["g"].set()
    events = await healthy.read_to_end(stream)
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(300))
    await healthy.close()


async def test_the_client_with_a_refused_token_raises_auth_error(
    served: ServeKit, rsa: SigningKey
) -> None:
    _kit, srv = await served(authenticate=auth_for(rsa))
    with pytest.raises(AuthError, match="token expired"):
        async with Client(srv.url, token=rsa.token(lifetime=-5)):
            pass


async def test_welcome_tells_when_the_credentials_expire(served: ServeKit, rsa: SigningKey) -> None:
    _kit, srv = await served(authenticate=auth_for(rsa))
    jwt_text = rsa.token(lifetime=120)
    w = await Wire.open(srv.url, hello=False, session=ClientSession(caps=(CAP_REFRESH,)))
    await w.send(w.cs.connect(jwt_text))
    out = await w.next()
    assert isinstance(out, Welcomed)
    claims = (await auth_for(rsa).verify(jwt_text)).claims
    assert out.welcome.auth_exp == pytest.approx(claims["exp"])
    assert CAP_REFRESH in out.welcome.caps
    await w.close()


async def test_a_hook_giving_credentials_already_expired_is_refused_at_hello(
    served: ServeKit,
) -> None:
    async def stale(hello: Hello, info: ConnectInfo) -> Principal:
        return Principal("alice", expires=time.time() - 1)

    _kit, srv = await served(authenticate=stale)
    w = await Wire.open(srv.url, hello=False)
    await w.send(Hello(token="x"))
    with pytest.raises(Closed) as closed:
        await w.recv_raw()
    assert closed.value.code == 4002 and "already expired" in closed.value.reason


# ------------------------------------------------------------------ JWKS
async def test_a_key_rotated_in_mid_stream_is_fetched_once_and_the_stream_ends_exact(
    served: ServeKit,
) -> None:
    k1, k2 = rsa_key("k1"), ec_key("k2")
    with jwks_server([k1]) as idp:
        auth = JWTAuth(
            jwks_url=idp.url,
            algorithms=["RS256", "ES256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            jwks_min_interval=0,
        )
        kit, srv = await served(authenticate=auth)
        first = await Wire.open(srv.url, token=k1.token("alice"))
        stream = await first.start("r1", "count", {"n": 200, "pause_at": 100, "gate": "g"})
        await kit.reached["g"].wait()
        assert idp.requests == 1
        idp.keys = [k1, k2]  # the identity provider rotates: k2 signs from now on
        wires = await asyncio.gather(
            *(Wire.open(srv.url, token=k2.token(f"user{i}")) for i in range(5))
        )
        assert idp.requests == 2, "a new kid is fetched once, whatever the concurrency"
        assert auth.jwks is not None and sorted(auth.jwks.kids) == ["k1", "k2"]
        more = await Wire.open(srv.url, token=k2.token("late"))
        assert idp.requests == 2, "a known kid is served from the cache"
        kit.gates["g"].set()
        events = await first.read_to_end(stream)
        assert_exact(events)
        assert text_of(events) == "".join(token(i) for i in range(200))
        for w in (*wires, more, first):
            await w.close()


async def test_unknown_kids_are_refused_without_hammering_the_jwks(served: ServeKit) -> None:
    k1 = rsa_key("k1")
    with jwks_server([k1]) as idp:
        auth = JWTAuth(
            jwks_url=idp.url,
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            jwks_min_interval=60,
        )
        _kit, srv = await served(authenticate=auth)
        healthy = await Wire.open(srv.url, token=k1.token())
        forger = rsa_key("made-up-kid")

        async def refused() -> int | None:
            w = await Wire.open(srv.url, hello=False)
            await w.send(Hello(token=forger.token()))
            try:
                await w.recv_raw()
            except Closed as exc:
                assert "not in the server's JWKS" in exc.reason
                return exc.code
            return None

        codes = await asyncio.gather(*(refused() for _ in range(20)))
        assert codes == [4002] * 20
        assert idp.requests == 1, "made-up kids within jwks_min_interval fetch nothing"
        await healthy.ping()
        await healthy.close()


async def test_a_slow_jwks_never_blocks_the_event_loop(served: ServeKit) -> None:
    k1 = rsa_key("k1")
    with jwks_server([k1]) as idp:
        auth = JWTAuth(jwks_url=idp.url, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        _kit, srv = await served(allow_anonymous=True)
        # a second app on the same loop verifies with the slow JWKS
        _kit2, srv2 = await served(authenticate=auth)
        other = await Wire.open(srv.url)
        idp.delay = 1.0
        pending = asyncio.ensure_future(Wire.open(srv2.url, token=k1.token()))
        # the loop serves another connection while the JWKS answer is on its way
        for _ in range(5):
            await other.ping()
        assert not pending.done() and not idp.answered.is_set()
        w = await pending
        assert idp.answered.is_set()
        await w.close()
        await other.close()


async def test_an_unreachable_jwks_closes_1011_so_the_client_retries(served: ServeKit) -> None:
    k1 = rsa_key("k1")
    with jwks_server([k1]) as idp:
        idp.fail = True
        auth = JWTAuth(jwks_url=idp.url, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        _kit, srv = await served(authenticate=auth)
        w = await Wire.open(srv.url, hello=False)
        await w.send(Hello(token=k1.token()))
        with pytest.raises(Closed) as closed:
            await w.recv_raw()
        assert closed.value.code == 1011 and "retry" in closed.value.reason
        assert idp.requests == 1
        again = await Wire.open(srv.url, hello=False)
        await again.send(Hello(token=k1.token()))
        with pytest.raises(Closed) as closed:
            await again.recv_raw()
        assert closed.value.code == 1011
        assert idp.requests == 1, "an identity provider that is down is not hammered"
        idp.fail = False
        auth.jwks._tried_at = None  # type: ignore[union-attr]  # the next attempt may fetch
        ok = await Wire.open(srv.url, token=k1.token())
        await ok.close()


async def test_a_refresh_waiting_on_the_jwks_never_pauses_the_streams() -> None:
    """The identity provider rotated and is slow: the refresh's token names a new kid,
    its verification waits 1 s for the JWKS; the stream's events flow all that time."""
    from unbroken.protocol.client_session import RefreshedOut, StreamEvents
    from unbroken.protocol.frames import Refresh
    from unbroken.server import Output, Request, Unbroken
    from unbroken.testing import serve

    k1, k2 = rsa_key("k1"), ed_key("k2")
    with jwks_server([k1]) as idp:
        auth = JWTAuth(
            jwks_url=idp.url,
            algorithms=["RS256", "EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
            jwks_min_interval=0,
        )
        app = Unbroken(auth=auth, shutdown_grace=1.0)

        @app.agent("paced")
        async def paced(req: Request, out: Output) -> None:
            for i in range(60):
                await out.text(f"w{i:03d} ")
                await asyncio.sleep(0.05)

        async with serve(app) as srv:
            w = await Wire.open(
                srv.url, token=k1.token(lifetime=30), session=ClientSession(caps=(CAP_REFRESH,))
            )
            stream = await w.start("r1", "paced")
            await w.read_until_seq(stream, 5)
            idp.keys = [k1, k2]
            idp.delay = 1.0
            await w.send(Refresh(token=k2.token(lifetime=60)))
            sent_at = time.monotonic()
            during: list[float] = []

            def done(out: object) -> bool:
                if isinstance(out, StreamEvents):
                    during.append(time.monotonic() - sent_at)
                return isinstance(out, RefreshedOut)

            await w.until(done)
            waited = time.monotonic() - sent_at
            assert idp.answered.is_set() and idp.requests == 2
            assert waited >= 1.0  # the JWKS answer took 1 s ...
            assert len(during) >= 5 and max(during) > 0.5  # ... and events kept coming
            events = await w.read_to_end(stream)
            assert_exact(events)
            assert text_of(events) == "".join(f"w{i:03d} " for i in range(60))
            await w.close()


async def test_refused_refreshes_leave_a_stream_alongside_untouched(
    served: ServeKit, rsa: SigningKey
) -> None:
    """On one connection: refresh tokens refused (alg none, HS/RS confusion, expired,
    wrong aud) each answered auth_failed, then one for another sub: close 4003. A
    stream on another connection goes on to an exact end."""
    from unbroken.protocol.frames import Refresh

    kit, srv = await served(authenticate=auth_for(rsa))
    healthy = await Wire.open(srv.url, token=rsa.token("alice"))
    stream = await healthy.start("r1", "count", {"n": 300, "pause_at": 150, "gate": "g"})
    await kit.reached["g"].wait()
    w = await Wire.open(
        srv.url, token=rsa.token("alice"), session=ClientSession(caps=(CAP_REFRESH,))
    )
    refused = [
        unsigned_token(),
        hs256_with_public_key(rsa),
        rsa.token(lifetime=-5),
        rsa.token(aud="another-api"),
    ]
    for n, bad in enumerate(refused, 1):
        await w.send(Refresh(token=bad))
        await w.until(lambda _o, n=n: len(w.errors) >= n)
        assert w.errors[-1].code == "auth_failed"
        await w.ping()  # still open
    await w.send(Refresh(token=rsa.token("bob")))
    with pytest.raises(Closed) as closed:
        await w.until(lambda _o: False)
    assert closed.value.code == 4003
    assert closed.value.reason == "refresh token names another principal"
    kit.gates["g"].set()
    events = await healthy.read_to_end(stream)
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(300))
    await healthy.close()


async def test_a_flood_of_refreshes_is_paced_like_any_request(
    served: ServeKit, rsa: SigningKey, caplog_info: pytest.LogCaptureFixture
) -> None:
    from unbroken.protocol.frames import Refresh, encode

    _kit, srv = await served(authenticate=auth_for(rsa), request_rate=200.0, request_burst=50)
    w = await Wire.open(
        srv.url, token=rsa.token("alice"), session=ClientSession(caps=(CAP_REFRESH,))
    )
    frame = encode(Refresh(token=rsa.token("alice"))).decode()
    for _ in range(300):  # each would cost a verify: more than the burst of 50
        await w.ws.send(frame)
    await w.ping()  # read in order: the server has read them all by the pong
    assert any("request rate exceeded" in r.getMessage() for r in caplog_info.records)
    await w.close()


def test_a_jwks_keeps_only_signing_keys_for_the_pinned_algorithms() -> None:
    from unbroken.server.auth import _parse_jwks

    rs, ed, other = rsa_key("rs"), ed_key("ed"), rsa_key("rs384", alg="RS384")
    enc = {**rs.jwk(), "kid": "enc", "use": "enc"}
    secret = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "hs"}
    broken = {"kty": "RSA", "kid": "broken", "n": "AQAB"}
    doc = {"keys": [rs.jwk(), ed.jwk(), other.jwk(), enc, secret, broken, "junk"]}
    keys = _parse_jwks(doc, ["RS256", "EdDSA"])
    assert sorted(keys) == ["ed", "rs"]
    with pytest.raises(ValueError, match="not a JWKS"):
        _parse_jwks({"keys": "nope"}, ["RS256"])


async def test_a_token_without_kid_is_verified_by_the_one_key_of_its_algorithm() -> None:
    k1, k2 = rsa_key("k1"), ed_key("k2")
    with jwks_server([k1, k2]) as idp:
        auth = JWTAuth(
            jwks_url=idp.url, algorithms=["RS256", "EdDSA"], audience=AUDIENCE, issuer=ISSUER
        )
        assert (await auth.verify(k2.token("carol", kid=False))).id == "carol"
        assert (await auth.verify(k1.token("dave", kid=False))).id == "dave"
        idp.keys = [k1, rsa_key("k3")]
        auth2 = JWTAuth(jwks_url=idp.url, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        with pytest.raises(AuthError, match="no kid header and the JWKS holds 2 keys"):
            await auth2.verify(k1.token(kid=False))
