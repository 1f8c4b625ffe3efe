"""One exception hierarchy for everything a user of unbroken can catch.

Every error says what happened and what to do about it. Catch :class:`UnbrokenError`
to catch them all.
"""

from __future__ import annotations

from typing import Literal

GoneReason = Literal["unknown", "expired", "epoch", "diverged", "forbidden"]

_GONE_ADVICE: dict[str, str] = {
    "unknown": "the server does not know this stream id; check the id you resumed with",
    "expired": "the stream ended and its retention period passed; raise the server's "
    "retention TTL if clients need to come back later",
    "epoch": "the server's log was restarted or lost its data since this stream was "
    "started; start the request again",
    "diverged": "the events you hold differ from the server's log (wrong node, corrupted "
    "store or tampered data); start the request again",
    "forbidden": "this stream is unknown to you or belongs to another principal; resume "
    "with the credentials that started it",
}


class UnbrokenError(Exception):
    """Base class of every error raised by unbroken."""


class ProtocolError(UnbrokenError):
    """A frame broke the wire protocol.

    ``close_code`` is the WebSocket close code the receiving side should use.
    """

    def __init__(self, message: str, close_code: int = 4000) -> None:
        super().__init__(message)
        self.close_code = close_code


class StreamGone(UnbrokenError):
    """The stream cannot be resumed; ``reason`` says why and the message what to do."""

    def __init__(self, stream: str, reason: GoneReason, detail: str = "") -> None:
        advice = _GONE_ADVICE.get(reason, "start the request again")
        text = f"stream {stream} is gone ({reason}): {advice}"
        if detail:
            text += f" [{detail}]"
        super().__init__(text)
        self.stream = stream
        self.reason: GoneReason = reason


class IntegrityError(UnbrokenError):
    """The events received do not match the server's digest chain."""

    def __init__(self, stream: str, seq: int, detail: str) -> None:
        super().__init__(
            f"stream {stream}: integrity check failed at seq {seq}: {detail}; the answer "
            "was not delivered exactly, so it was not returned"
        )
        self.stream = stream
        self.seq = seq


class ReconnectExhausted(UnbrokenError):
    """The client gave up reconnecting: attempts or time budget used up."""

    def __init__(self, attempts: int, elapsed: float, last_error: BaseException | None) -> None:
        last = f"{type(last_error).__name__}: {last_error}" if last_error else "none"
        super().__init__(
            f"gave up reconnecting after {attempts} attempts in {elapsed:.1f}s "
            f"(last error: {last}); the stream can still be resumed from its cursor "
            "while the server retains it"
        )
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


class AuthError(UnbrokenError):
    """The server refused the credentials; retrying with the same token will not help."""


class Forbidden(UnbrokenError):
    """The principal may not do this (for example cancel another principal's stream)."""


class Overloaded(UnbrokenError):
    """The server is full; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(f"{message}; retry after {retry_after:.3f}s")
        self.retry_after = retry_after


class StreamFailed(UnbrokenError):
    """The agent's run ended ``failed`` or ``cancelled``; the partial answer is on ``result``."""

    def __init__(self, stream: str, status: str, error: str) -> None:
        super().__init__(f"stream {stream} ended {status}: {error or 'no detail'}")
        self.stream = stream
        self.status = status
        self.error = error


class RequestTimeout(UnbrokenError):
    """The server took ``timeout`` seconds without answering a start or resume while
    the link was alive (it answers pings): it is stuck. Try again, or elsewhere."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"no answer to {what} within {timeout:.1f}s; the server is stuck")
        self.timeout = timeout


class ConfigError(UnbrokenError):
    """A setting or argument is invalid."""


class LogDiverged(UnbrokenError):
    """The stream log lost events it had acknowledged: a Redis that restarted from an
    older snapshot or failed over to a lagging replica. The stream is ended ``failed:
    diverged`` in the store and its readers are told ``gone(diverged)``; start the
    request again. Keep Redis's AOF on (``appendfsync always``) to make this impossible.
    """

    def __init__(self, stream: str, head: int, expected: int) -> None:
        super().__init__(
            f"stream {stream}: the log holds events up to seq {head} but {expected} were "
            "appended (the store lost acknowledged writes); the stream was ended failed: "
            "diverged, start the request again"
        )
        self.stream = stream
        self.head = head
        self.expected = expected
