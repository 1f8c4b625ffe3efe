"""The client's retry table: each close code, status and exception class → retry or fatal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    Forbidden,
    IntegrityError,
    Overloaded,
    ProtocolError,
    RequestTimeout,
    UnbrokenError,
)
from unbroken.protocol.codes import CLOSE_CODE_RETRY, CloseCode
from unbroken.protocol.retry import (
    FATAL_CLOSE,
    REFUSED_BY_CLIENT,
    close_error,
    fatal_error,
    should_retry,
    status_is_retryable,
)


class Transient(Exception):
    """Stands in for a transport's handshake or close error."""


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (None, True),
        (CloseCode.NORMAL, True),
        (CloseCode.GOING_AWAY, True),
        (CloseCode.INTERNAL, True),
        (CloseCode.SERVICE_RESTART, True),
        (CloseCode.HEARTBEAT_TIMEOUT, True),
        (CloseCode.OVERLOADED, True),
        (1006, True),
        (CloseCode.INVALID_DATA, False),
        (CloseCode.TOO_BIG, False),
        (CloseCode.BAD_FRAME, False),
        (CloseCode.AUTH_REQUIRED, False),
        (CloseCode.AUTH_FAILED, False),
        (CloseCode.FORBIDDEN, False),
        (CloseCode.UNSUPPORTED_VERSION, False),
    ],
)
def test_a_close_code_is_retried_unless_it_is_in_the_fatal_table(
    code: int | None, retry: bool
) -> None:
    assert should_retry(ConnectionLost("dropped", code)) is retry


def test_the_fatal_table_agrees_with_the_documented_close_code_table() -> None:
    # every code the protocol documents as "do not reconnect" except a normal close
    # (which the client sees when the server ends the connection: it comes back)
    documented = {c for c, again in CLOSE_CODE_RETRY.items() if not again}
    assert set(FATAL_CLOSE) == documented - {CloseCode.NORMAL}
    assert set(REFUSED_BY_CLIENT) <= set(FATAL_CLOSE)


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (AuthError("no"), False),
        (Forbidden("no"), False),
        (ProtocolError("bad"), False),
        (IntegrityError("s", 3, "mismatch"), False),
        (OSError("refused"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (Transient(), True),
        (ValueError("a bug"), False),
        (UnbrokenError("other"), False),
        (Overloaded("full", 1.0), False),
        (RequestTimeout("start", 1.0), False),
    ],
)
def test_each_exception_class_is_retried_or_fatal(exc: BaseException, retry: bool) -> None:
    assert should_retry(exc, transient=(Transient,)) is retry


def test_a_transport_error_is_retried_only_when_named_transient() -> None:
    assert should_retry(Transient()) is False
    assert should_retry(Transient(), transient=(Transient,)) is True


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (301, True),
    ],
)
def test_a_refused_upgrade_is_retried_by_its_status(status: int, retry: bool) -> None:
    assert status_is_retryable(status) is retry
    assert should_retry(Transient(), status=status, transient=(Transient,)) is retry


@given(st.integers(100, 599))
def test_only_429_and_non_4xx_statuses_are_retried(status: int) -> None:
    assert status_is_retryable(status) is (status == 429 or not 400 <= status < 500)


def test_an_error_that_ended_the_client_becomes_a_typed_error() -> None:
    auth = fatal_error(ConnectionLost("who?", CloseCode.AUTH_FAILED))
    assert type(auth) is AuthError and "who?" in str(auth)
    assert type(fatal_error(ConnectionLost("no", CloseCode.FORBIDDEN))) is Forbidden
    assert type(fatal_error(ConnectionLost("v", CloseCode.UNSUPPORTED_VERSION))) is ProtocolError
    lost = ConnectionLost("gone", CloseCode.SERVICE_RESTART)
    assert fatal_error(lost) is lost
    refused = ProtocolError("bad frame")
    assert fatal_error(refused) is refused
    assert type(fatal_error(Transient("x"), status=401)) is AuthError
    refused = fatal_error(Transient("x"), status=403, detail="forbidden: origin not allowed\n")
    assert type(refused) is Forbidden and "origin not allowed" in str(refused)
    assert "\n" not in str(refused)
    missing = fatal_error(Transient("x"), status=404)
    assert type(missing) is ConfigError and "no unbroken endpoint" in str(missing)
    wrapped = fatal_error(Transient("boom"), status=400)
    assert type(wrapped) is ConnectionLost and str(wrapped) == "Transient: boom"


def test_a_close_this_client_sent_for_an_unacceptable_frame_is_a_protocol_error() -> None:
    too_big = close_error(None, (CloseCode.TOO_BIG, ""))
    assert type(too_big) is ProtocolError and "close 1009" in str(too_big)
    assert "larger than the negotiated limit" in str(too_big)  # the code's meaning
    not_utf8 = close_error(None, (CloseCode.INVALID_DATA, "bad utf-8"))
    assert type(not_utf8) is ProtocolError and "bad utf-8" in str(not_utf8)
    assert should_retry(too_big) is False


def test_any_other_close_is_a_lost_connection_with_the_servers_code() -> None:
    restart = close_error((CloseCode.SERVICE_RESTART, "deploy"), None)
    assert type(restart) is ConnectionLost and restart.code == 1012 and str(restart) == "deploy"
    quiet = close_error((CloseCode.GOING_AWAY, ""), (CloseCode.GOING_AWAY, ""))
    assert type(quiet) is ConnectionLost and str(quiet) == "connection closed"
    dropped = close_error(None, None)
    assert type(dropped) is ConnectionLost and dropped.code is None
    assert str(dropped) == "connection dropped"
    ours = close_error(None, (CloseCode.NORMAL, "bye"))  # we closed, not for a bad frame
    assert type(ours) is ConnectionLost and ours.code is None
    # the server refused our frame: its close code decides, not ours
    refused = close_error((CloseCode.TOO_BIG, "start too big"), (CloseCode.TOO_BIG, ""))
    assert type(refused) is ConnectionLost and refused.code == 1009
    assert should_retry(refused) is False


def test_a_refusal_for_load_before_welcome_is_a_drop_with_the_servers_floor() -> None:
    from unbroken.errors import ConnectionLost, RequestRefused
    from unbroken.protocol.frames import Error
    from unbroken.protocol.retry import refused_before_welcome

    for code in ("overloaded", "rate_limited", "shutting_down"):
        err = refused_before_welcome(Error(code=code, retry_after_ms=1500))
        assert isinstance(err, ConnectionLost) and err.retry_after == 1.5, code
    other = refused_before_welcome(Error(code="unknown_agent", message="no"))
    assert isinstance(other, RequestRefused) and other.code == "unknown_agent"


def test_a_close_4008_carries_its_retry_after_in_the_reason() -> None:
    from unbroken.protocol.retry import shed_wait

    lost = close_error((4008, "overloaded: slow reader detached; retry_after_ms=1416"), None)
    assert isinstance(lost, ConnectionLost) and lost.retry_after == pytest.approx(1.416)
    assert close_error((4008, "server full"), None).retry_after is None  # type: ignore[union-attr]
    other = close_error((1012, "restart; retry_after_ms=5"), None)  # only 4008's counts
    assert isinstance(other, ConnectionLost) and other.retry_after is None
    assert shed_wait("retry_after_ms=99999999999") is None  # absurd: not taken
