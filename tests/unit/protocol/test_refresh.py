"""In-band token refresh, the sans-I/O half: the ``refresh`` cap, ``auth_expiring`` /
``refresh`` / ``refreshed``, close 4010 and the client's bounded retries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.errors import AuthError, ConnectionLost, ProtocolError
from unbroken.protocol import ClientSession
from unbroken.protocol.client_session import AskToken, AuthExpiringOut, RefreshedOut
from unbroken.protocol.codes import CLOSE_CODE_MEANING, CLOSE_CODE_RETRY, CloseCode, ErrorCode
from unbroken.protocol.frames import (
    CAP_BATCH,
    CAP_REFRESH,
    AuthExpiring,
    Error,
    Refresh,
    Refreshed,
    Welcome,
    decode_server,
    encode,
    unix_time,
)
from unbroken.protocol.retry import (
    REFRESH_ATTEMPTS,
    TokenAttempts,
    fatal_error,
    refresh_delay,
    should_retry,
)

from .strategies import EPOCH


def welcome(caps: list[str], auth_exp: float | None = None) -> bytes:
    return encode(Welcome(session="s", heartbeat_ms=400, epoch=EPOCH, caps=caps, auth_exp=auth_exp))


def ready(
    client_caps: tuple[str, ...], server_caps: list[str], exp: float | None = 100.0
) -> ClientSession:
    session = ClientSession(caps=client_caps)
    session.connect("token-1")
    session.receive(welcome(server_caps, exp))
    return session


def test_refresh_is_in_force_only_when_both_sides_list_the_cap() -> None:
    assert ready((CAP_REFRESH,), [CAP_REFRESH]).refresh_agreed
    assert not ready((CAP_REFRESH,), []).refresh_agreed
    assert not ready((CAP_BATCH,), [CAP_REFRESH]).refresh_agreed
    session = ready((CAP_REFRESH,), [CAP_REFRESH], exp=1767225600)
    assert session.auth_exp == 1767225600


def test_auth_expiring_asks_the_provider_when_refresh_is_agreed() -> None:
    session = ready((CAP_REFRESH,), [CAP_REFRESH])
    out = session.receive(encode(AuthExpiring(in_ms=1500)))
    assert isinstance(out, AuthExpiringOut) and out.in_ms == 1500
    assert out.ask is not None and out.ask.attempt == 1
    frame = session.refresh("token-2", out.ask.connection)
    assert frame == Refresh(token="token-2")


def test_auth_expiring_without_the_cap_asks_nothing() -> None:
    session = ready((), [])
    out = session.receive(encode(AuthExpiring(in_ms=10)))
    assert isinstance(out, AuthExpiringOut) and out.ask is None


def test_refreshed_moves_the_expiry_and_resets_the_failures() -> None:
    session = ready((CAP_REFRESH,), [CAP_REFRESH])
    session.refresh_failed(0.0)
    assert session.refresh_failures == 1
    out = session.receive(encode(Refreshed(exp=200)))
    assert out == RefreshedOut(200)
    assert session.auth_exp == 200 and session.refresh_failures == 0
    assert session.receive(encode(Refreshed())) == RefreshedOut(None)
    assert session.auth_exp is None


def test_refreshed_without_the_cap_is_a_protocol_error() -> None:
    session = ready((), [CAP_REFRESH])
    with pytest.raises(ProtocolError, match="refreshed without the refresh cap"):
        session.receive(encode(Refreshed(exp=5)))


def test_a_token_for_a_connection_that_is_gone_is_not_sent() -> None:
    session = ready((CAP_REFRESH,), [CAP_REFRESH])
    out = session.receive(encode(AuthExpiring(in_ms=0)))
    assert isinstance(out, AuthExpiringOut) and out.ask is not None
    session.connection_lost()
    assert session.refresh("token-2", out.ask.connection) is None
    session.connect("token-3")
    session.receive(welcome([CAP_REFRESH]))
    assert session.refresh("token-2", out.ask.connection) is None  # the old connection's ask
    assert session.refresh("", out.ask.connection + 1) is None  # no token: nothing to send


def test_auth_failed_is_asked_again_with_backoff_a_bounded_number_of_times() -> None:
    session = ready((CAP_REFRESH,), [CAP_REFRESH])
    refused = Error(code=ErrorCode.AUTH_FAILED, message="token expired")
    asks: list[AskToken] = []
    now = 10.0
    while True:
        action = session.server_error(refused, now)
        if action is None:
            break
        assert isinstance(action, AskToken)
        asks.append(action)
        assert action.at > now
        now = action.at
    assert len(asks) == REFRESH_ATTEMPTS - 1
    assert [a.attempt for a in asks] == list(range(2, REFRESH_ATTEMPTS + 1))
    # a new expiry notice is a fresh budget
    out = session.receive(encode(AuthExpiring(in_ms=5)))
    assert isinstance(out, AuthExpiringOut) and out.ask is not None
    assert isinstance(session.server_error(refused, now), AskToken)


def test_an_auth_failed_about_a_request_is_not_a_refresh_failure() -> None:
    session = ready((CAP_REFRESH,), [CAP_REFRESH])
    session.start("r1", "echo", None)
    action = session.server_error(Error(code=ErrorCode.AUTH_FAILED, req="r1"), 0.0)
    assert action is not None and not isinstance(action, AskToken)
    assert session.refresh_failures == 0


def test_close_4010_is_retried_and_means_token_expired() -> None:
    assert CloseCode.TOKEN_EXPIRED == 4010
    assert CLOSE_CODE_RETRY[CloseCode.TOKEN_EXPIRED] is True
    assert "token expired" in CLOSE_CODE_MEANING[CloseCode.TOKEN_EXPIRED]
    lost = ConnectionLost("token expired; reconnect with a new token", 4010)
    assert should_retry(lost)
    assert fatal_error(lost) is lost  # not turned into an AuthError


def test_token_attempts_retry_then_end_in_auth_error() -> None:
    attempts = TokenAttempts(3)
    assert attempts.failed(RuntimeError("idp down")) == refresh_delay(1)
    assert attempts.failed(None) == refresh_delay(2)
    final = attempts.failed(RuntimeError("idp down"))
    assert isinstance(final, AuthError)
    assert "3 attempts" in str(final) and "idp down" in str(final)


@given(st.integers(min_value=1, max_value=100))
def test_refresh_delay_grows_and_is_capped(failures: int) -> None:
    d = refresh_delay(failures)
    assert 0 < d <= 2.0
    assert refresh_delay(failures + 1) >= d


@given(st.one_of(st.integers(0, 2**53), st.floats(0, 2**40, allow_nan=False)))
def test_unix_time_round_trips_with_the_same_text(value: float) -> None:
    wire = unix_time(value)
    frame = encode(Refreshed(exp=wire))
    assert not frame.endswith(b".0}")
    decoded = decode_server(frame)
    assert isinstance(decoded, Refreshed) and decoded.exp == value
    assert encode(decoded) == frame
