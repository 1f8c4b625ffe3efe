"""One exception hierarchy for everything a user of unbroken can catch.

Every error says what happened and what to do about it. Catch :class:`UnbrokenError`
to catch them all.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _server_closed(error: BaseException | None) -> bool:
    """True when ``error`` is a WebSocket close whose code the server sent: our
    :class:`ConnectionLost` with a code, or the WebSocket library's
    ``ConnectionClosed`` with a received close frame (not a listener that is no
    HTTP server, nor a proxy's HTTP 502)."""
    if isinstance(error, ConnectionLost):
        return error.code is not None
    return getattr(error, "rcvd", None) is not None


class ReconnectExhausted(UnbrokenError):
    """The client gave up reconnecting: attempts or time budget used up."""

    def __init__(
        self,
        attempts: int,
        elapsed: float,
        last_error: BaseException | None,
        *,
        never_connected: Sequence[str] = (),
    ) -> None:
        last = f"{type(last_error).__name__}: {last_error}" if last_error else "none"
        if never_connected:
            # refused, unreachable, unanswered: the address; closed by the server: its log
            where = (
                "the server closed every attempt: its log says why"
                if _server_closed(last_error)
                else "check the URL and that the server is running"
            )
            text = (
                f"could not connect to {', '.join(never_connected)}: gave up after "
                f"{attempts} attempts in {elapsed:.1f}s (last error: {last}); {where}"
            )
        else:
            text = (
                f"gave up reconnecting after {attempts} attempts in {elapsed:.1f}s "
                f"(last error: {last}); the stream can still be resumed from its cursor "
                "while the server retains it"
            )
        super().__init__(text)
        #: the URLs tried when the client never connected (empty after a connection)
        self.never_connected: tuple[str, ...] = tuple(never_connected)
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


class AuthError(UnbrokenError):
    """The server refused the credentials; retrying with the same token will not help."""


class JWKSUnavailable(UnbrokenError):
    """The JSON Web Key Set needed to verify a token could not be fetched and no key
    is cached: the token may well be fine. The server closes with 1011 (the client
    retries); check that the server reaches the identity provider's ``jwks_url``."""


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
        text = f"stream {stream} ended {status}: {error or 'no detail'}"
        if "internal error in agent" in error:  # the default redaction: say where the rest is
            text += (
                f" (the server's log has its message and traceback: `agent failed "
                f"stream={stream}`; in development, Unbroken(redact=reveal_exception) "
                "sends them to clients)"
            )
        super().__init__(text)
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


class UnknownAgent(UnbrokenError):
    """No agent is registered under that name; ``known`` lists those that are (the
    connection shows them to clients only with ``expose_agent_names``)."""

    def __init__(self, agent: str, known: list[str]) -> None:
        super().__init__(f"no agent named {agent!r}")
        self.known = known


class PartError(ConfigError):
    """An agent used a part wrongly (unknown, closed, or of another kind)."""


class NameTaken(ConfigError):
    """A proxy or toxic with this name already exists."""


class NameNotFound(ConfigError):
    """No proxy or toxic has this name."""


class MissingExtra(ConfigError, ImportError):
    """A feature needs an optional part of unbroken that is not installed; the message
    names the extra to install (``pip install 'unbroken[server]'``). Also an
    ``ImportError``, so ``except ImportError`` around an optional import catches it."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the {extra!r} extra ({missing} is not installed): "
            f"pip install 'unbroken[{extra}]'"
        )
        self.feature = feature
        self.extra = extra
        self.missing = missing


class KernelFaultError(UnbrokenError):
    """A command that builds or faults a namespace topology failed (the message quotes
    the command and what it printed)."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        shown = " ".join(argv)
        super().__init__(f"`{shown}` exited {returncode}: {output.strip() or 'no output'}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output


class ApiError(UnbrokenError):
    """A chaos control API request failed; answered as Toxiproxy does:
    ``{"error": message, "status": code}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ChainMismatch(UnbrokenError):
    """Raised by :class:`~unbroken.protocol.digest.ChainVerifier` at the first event that
    does not fit the digest chain (the client turns it into :class:`IntegrityError`)."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"seq {seq}: {detail}")
        self.seq = seq
        self.detail = detail


class StoreUnavailable(UnbrokenError):
    """Redis stayed unreachable for longer than the store's ``outage_timeout``."""


class StaleProducer(UnbrokenError):
    """An append came from a producer that no longer owns the stream."""


class StreamTooLarge(UnbrokenError):
    """An append would take a stream over ``max_stream_bytes``."""


class LogFull(UnbrokenError):
    """The log is full of running streams; ``retry_after`` seconds is a good wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"stream log is full; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class ConnectionLost(UnbrokenError):
    """The connection dropped; ``code`` is the close code when there was one."""

    def __init__(
        self, message: str, code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class RequestRefused(UnbrokenError):
    """The server refused a request (e.g. unknown agent); ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class LogUnavailable(RequestRefused, StoreUnavailable):
    """A stream's log stayed unreachable on the server (its store answered
    ``unavailable``, e.g. a Redis Cluster master down) through the whole reconnect
    policy: ``attempts`` resumes over ``elapsed`` seconds. The answer is not lost: resume
    its :attr:`cursor` later, once the store is back. A start whose log stayed
    unreachable fails with it too (``stream`` empty, ``req`` its request id): its
    stream may be created once the log answers; a start with the same ``req`` gets it."""

    def __init__(
        self, stream: str, message: str, attempts: int, elapsed: float, req: str = ""
    ) -> None:
        what = f"of stream {stream}" if stream else f"of start {req}"
        tries = "resumes" if stream else "starts"
        super().__init__(
            "unavailable",
            f"the log {what} stayed unreachable ({attempts} {tries} over "
            f"{elapsed:.1f}s): {message}",
        )
        self.stream = stream
        #: the start's request id when the log stayed unreachable before its stream
        #: was created (``stream`` is then empty: start again with this ``req``)
        self.req = req
        self.attempts = attempts
        self.elapsed = elapsed


class UnsupportedVersion(ProtocolError):
    """Client and server share no protocol version (close 4005); retrying will not
    help. ``client_versions`` and ``server_versions`` (e.g. ``("v1",)``) say what each
    side speaks; upgrade the older side, or let the client offer a version the server
    speaks (``Client(..., protocols=...)``)."""

    def __init__(
        self, client_versions: Sequence[str], server_versions: Sequence[str], detail: str = ""
    ) -> None:
        ours = ", ".join(client_versions) or "none"
        theirs = ", ".join(server_versions) or "unknown"
        text = (
            f"no common protocol version: this client speaks {ours}, the server speaks "
            f"{theirs}; upgrade the older side or offer a version both speak"
        )
        if detail:
            text += f" [{detail}]"
        super().__init__(text, 4005)
        self.client_versions: tuple[str, ...] = tuple(client_versions)
        self.server_versions: tuple[str, ...] = tuple(server_versions)
