"""The client's retry table (pure): which failures a reconnect can cure.

Network errors, timeouts, 5xx, 429 and restart or overload closes are retried;
auth, forbidden, version and protocol failures are fatal (see docs/topics/reconnect.md).
The transport's own exception classes (a WebSocket library's handshake and
close errors) are passed in by the caller: this module knows no socket library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    Forbidden,
    IntegrityError,
    ProtocolError,
    RequestRefused,
    UnbrokenError,
)
from .codes import CLOSE_CODE_MEANING, CloseCode, ErrorCode
from .frames import Error, excerpt
from .versions import unsupported

#: Close codes after which reconnecting cannot help, and the error each becomes.
FATAL_CLOSE: Mapping[int, type[UnbrokenError]] = {
    CloseCode.AUTH_REQUIRED: AuthError,
    CloseCode.AUTH_FAILED: AuthError,
    CloseCode.FORBIDDEN: Forbidden,
    CloseCode.UNSUPPORTED_VERSION: ProtocolError,
    CloseCode.BAD_FRAME: ProtocolError,
    CloseCode.TOO_BIG: ProtocolError,
    CloseCode.INVALID_DATA: ProtocolError,
}

#: Close codes a client sends when the server's frame is unacceptable (over its
#: frame limit, or not UTF-8): reconnecting would only get the same frame again.
REFUSED_BY_CLIENT: tuple[int, ...] = (CloseCode.INVALID_DATA, CloseCode.TOO_BIG)

#: ``error`` codes after which the same start may be sent again later.
RETRYABLE_START: frozenset[str] = frozenset(
    {ErrorCode.OVERLOADED, ErrorCode.RATE_LIMITED, ErrorCode.SHUTTING_DOWN}
)

#: ``error`` codes that concern one frame only and leave the stream as it was.
HARMLESS_ERROR: frozenset[str] = frozenset({ErrorCode.BAD_ACK, ErrorCode.UNSUPPORTED})

#: Refreshes refused in a row (or provider failures while refreshing) after which a
#: client stops asking and lets the connection expire (4010, then a reconnect).
REFRESH_ATTEMPTS = 3

#: Times in a row a token provider may fail (raise, or give no token) when a
#: connection is being opened before the client gives up with ``AuthError``.
TOKEN_ATTEMPTS = 3


def refresh_delay(failures: int) -> float:
    """Seconds to wait before asking for a token again after ``failures`` failures
    in a row (1, 2, …): 0.1, 0.2, 0.4 … capped at 2 s (a refresh is asked for well
    before the expiry, so several fit)."""
    return float(min(2.0, 0.1 * 2 ** max(0, failures - 1)))


class TokenAttempts:
    """How a client asks its token provider when opening a connection (pure): a
    failure (the provider raised) is retried after
    :func:`refresh_delay`, at most ``limit`` attempts in all; then :meth:`failed`
    gives the :class:`AuthError` to end with (no retry storm)."""

    def __init__(self, limit: int = TOKEN_ATTEMPTS) -> None:
        self.limit = max(1, limit)
        self.failures = 0

    def failed(self, error: BaseException | None) -> float | AuthError:
        """The provider failed with ``error`` (``None``: it gave no token): the delay
        before the next attempt, or the error to end with."""
        self.failures += 1
        if self.failures < self.limit:
            return refresh_delay(self.failures)
        what = "gave no token" if error is None else f"failed: {type(error).__name__}: {error}"
        return AuthError(
            f"the token provider {what} ({self.failures} attempts); fix the provider "
            "or give the client a valid token"
        )


#: HTTP statuses of a refused upgrade that mean "not you, ever": no retry.
_FATAL_STATUS = (401, 403, 404)


def status_is_retryable(status: int) -> bool:
    """A refused WebSocket upgrade with HTTP ``status``: worth another attempt?
    5xx and 429 are; 401, 403, 404 and the other 4xx are not."""
    return status not in _FATAL_STATUS and not (400 <= status < 500 and status != 429)


def should_retry(
    exc: BaseException,
    *,
    status: int | None = None,
    transient: tuple[type[BaseException], ...] = (),
) -> bool:
    """The retry table. ``status``: the HTTP status when ``exc`` is a refused
    upgrade; ``transient``: the transport's exception classes that mean a
    connection failed or dropped (retried like ``OSError``)."""
    if isinstance(exc, AuthError | Forbidden | ProtocolError | IntegrityError):
        return False
    if isinstance(exc, ConnectionLost):
        return exc.code not in FATAL_CLOSE
    if status is not None:
        return status_is_retryable(status)
    return isinstance(exc, (OSError, TimeoutError, *transient))


def fatal_error(
    error: BaseException,
    *,
    status: int | None = None,
    detail: str = "",
    versions: Sequence[str] | None = None,
) -> BaseException:
    """What a user sees when ``error`` ended the client: a typed error
    (``FATAL_CLOSE`` turns a close code into one), never a transport's class.
    ``detail``: the body of a refused upgrade (the server's reason), quoted.
    ``versions``: the protocol versions the client offered (close 4005 becomes
    :class:`~unbroken.errors.UnsupportedVersion` naming both sides' versions)."""
    if isinstance(error, UnbrokenError) and not isinstance(error, ConnectionLost):
        return error
    if (
        isinstance(error, ConnectionLost)
        and error.code == CloseCode.UNSUPPORTED_VERSION
        and versions is not None
    ):
        return unsupported(versions, str(error))
    if isinstance(error, ConnectionLost) and error.code is not None and error.code in FATAL_CLOSE:
        return FATAL_CLOSE[error.code](str(error))
    why = excerpt(detail.strip(), 200) if detail.strip() else ""
    if status == 401:
        return AuthError(f"server refused the connection: HTTP 401{': ' + why if why else ''}")
    if status == 403:
        return Forbidden(
            f"server refused the connection: HTTP 403{': ' + why if why else ''} (an origin "
            "the server's policy does not allow, credentials refused at the handshake, or "
            "no unbroken endpoint at this path)"
        )
    if status == 404:
        return ConfigError(
            f"no unbroken endpoint at this URL: HTTP 404{': ' + why if why else ''}; check the path"
        )
    if isinstance(error, ConnectionLost):
        return error
    return ConnectionLost(f"{type(error).__name__}: {error}")


def close_error(
    received: tuple[int, str] | None, sent: tuple[int, str] | None
) -> ProtocolError | ConnectionLost:
    """The error a closed connection means, from the close frames ``(code, reason)``
    received and sent (``None``: none). A close this client sent because the
    server's frame was unacceptable (``REFUSED_BY_CLIENT``) is a protocol error:
    reconnecting would only get the same frame again."""
    if received is None and sent is not None and sent[0] in REFUSED_BY_CLIENT:
        code, reason = sent
        return ProtocolError(
            f"the server sent a frame this client refused (close {code}: "
            f"{reason or CLOSE_CODE_MEANING.get(code, '')})"
        )
    if received is None:
        return ConnectionLost("connection dropped")
    code, reason = received
    wait = shed_wait(reason) if code == CloseCode.OVERLOADED else None
    return ConnectionLost(reason or "connection closed", code, retry_after=wait)


_RETRY_AFTER = re.compile(r"retry_after_ms=(\d{1,9})(?!\d)")


def shed_wait(reason: str) -> float | None:
    """The ``retry_after_ms`` a close 4008's reason carries, in seconds (``None``: not
    there). The server puts it in the reason too: a client that never read the
    ``error overloaded`` before the close still waits that long."""
    m = _RETRY_AFTER.search(reason)
    return int(m.group(1)) / 1000 if m else None


def cause_of(error: BaseException) -> str:
    """One line saying why a connection ended, for events and logs."""
    if isinstance(error, ConnectionLost) and error.code is not None:
        meaning = CLOSE_CODE_MEANING.get(error.code, "")
        return f"close {error.code}: {meaning} ({error})"
    return f"{type(error).__name__}: {error}"


__all__ = [
    "FATAL_CLOSE",
    "HARMLESS_ERROR",
    "REFRESH_ATTEMPTS",
    "REFUSED_BY_CLIENT",
    "RETRYABLE_START",
    "TOKEN_ATTEMPTS",
    "TokenAttempts",
    "cause_of",
    "close_error",
    "fatal_error",
    "refresh_delay",
    "shed_wait",
    "should_retry",
    "status_is_retryable",
]


def refused_before_welcome(error: Error) -> UnbrokenError:
    """What an ``error`` sent instead of ``welcome`` means. A server that is full,
    limiting this client or shutting down says so and closes (4008): a drop to retry,
    no sooner than its ``retry_after_ms``. Any other refusal is the request's."""
    if error.code in RETRYABLE_START:
        wait = None if error.retry_after_ms is None else error.retry_after_ms / 1000
        detail = f": {error.message}" if error.message else ""
        return ConnectionLost(
            f"server refused the connection ({error.code}{detail})",
            CloseCode.OVERLOADED,
            retry_after=wait,
        )
    return RequestRefused(error.code, error.message)
