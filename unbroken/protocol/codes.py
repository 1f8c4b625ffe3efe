"""Close codes and error codes of protocol v1 (documented in docs/reference/protocol.md)."""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class CloseCode(IntEnum):
    """WebSocket close codes used by unbroken."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_DATA = 1007
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012
    BAD_FRAME = 4000
    AUTH_REQUIRED = 4001
    AUTH_FAILED = 4002
    FORBIDDEN = 4003
    HEARTBEAT_TIMEOUT = 4004
    UNSUPPORTED_VERSION = 4005
    OVERLOADED = 4008
    TOKEN_EXPIRED = 4010


#: What a client should do after each close code: ``True`` = reconnect and resume.
CLOSE_CODE_RETRY: Final[dict[int, bool]] = {
    CloseCode.NORMAL: False,
    CloseCode.GOING_AWAY: True,
    CloseCode.INVALID_DATA: False,
    CloseCode.TOO_BIG: False,
    CloseCode.INTERNAL: True,
    CloseCode.SERVICE_RESTART: True,
    CloseCode.BAD_FRAME: False,
    CloseCode.AUTH_REQUIRED: False,
    CloseCode.AUTH_FAILED: False,
    CloseCode.FORBIDDEN: False,
    CloseCode.HEARTBEAT_TIMEOUT: True,
    CloseCode.UNSUPPORTED_VERSION: False,
    CloseCode.OVERLOADED: True,
    CloseCode.TOKEN_EXPIRED: True,
}

#: One-line meaning of each close code.
CLOSE_CODE_MEANING: Final[dict[int, str]] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "endpoint going away; reconnect",
    CloseCode.INVALID_DATA: "a text message that is not valid UTF-8 (RFC 6455)",
    CloseCode.TOO_BIG: "frame larger than the negotiated limit",
    CloseCode.INTERNAL: "internal server error; reconnect and resume",
    CloseCode.SERVICE_RESTART: "server restarting or draining; reconnect (here or another node)",
    CloseCode.BAD_FRAME: "malformed, unknown or out-of-order frame",
    CloseCode.AUTH_REQUIRED: "the first frame must be hello (with a token when auth is on)",
    CloseCode.AUTH_FAILED: "credentials refused",
    CloseCode.FORBIDDEN: "principal not allowed to connect",
    CloseCode.HEARTBEAT_TIMEOUT: "peer silent for too long",
    CloseCode.UNSUPPORTED_VERSION: "no common protocol version",
    CloseCode.OVERLOADED: "server full; reconnect after retry_after_ms",
    CloseCode.TOKEN_EXPIRED: "token expired; reconnect with a new token",
}


#: RFC 6455 §5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON: Final = 123


def close_reason(reason: str) -> str:
    """``reason`` cut to what a close frame can carry: 123 *bytes* of UTF-8, never
    inside a character (a longer reason makes the close frame invalid: the peer
    then sees 1006, not the code)."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON:
        return reason if data.decode("utf-8") == reason else data.decode("utf-8")
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


class ErrorCode:
    """Codes carried by ``error`` frames (the connection stays open)."""

    OVERLOADED: Final = "overloaded"
    UNKNOWN_AGENT: Final = "unknown_agent"
    BAD_INPUT: Final = "bad_input"
    BAD_ACK: Final = "bad_ack"
    FORBIDDEN: Final = "forbidden"
    RATE_LIMITED: Final = "rate_limited"
    TOO_MANY_STREAMS: Final = "too_many_streams"
    SHUTTING_DOWN: Final = "shutting_down"
    INTERNAL: Final = "internal"
    UNSUPPORTED: Final = "unsupported"
    #: a ``refresh`` token was refused (invalid, expired, unverifiable); the
    #: connection stays open until its current credentials expire
    AUTH_FAILED: Final = "auth_failed"
    #: one stream's log is unreachable for now (e.g. its Redis Cluster master down):
    #: resume that stream after ``retry_after_ms``; the connection's others go on
    #: (sent only with the ``unavailable`` cap in force; else the server closes 1011)
    UNAVAILABLE: Final = "unavailable"
