"""What every connection of an app is configured with: one frozen :class:`ServerConfig`.

:class:`~unbroken.server.app.Unbroken` builds it once from its arguments and hands
it to each :class:`~unbroken.server.connection.Connection` (the connection never
sees the app). It is frozen: a connection reads it on its hot path without any
chance of it moving under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..protocol import versions
from ..protocol.frames import DEFAULT_MAX_HELLO_FRAME, Limits


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Per-connection settings (the defaults are :class:`Unbroken`'s)."""

    #: seconds of quiet on a connection with a live stream before the server sends ``hb``
    heartbeat: float = 0.4
    #: limits told to the client in ``welcome``: largest frame, flow window (unacked
    #: bytes in flight per stream), streams per connection, largest chunk, largest
    #: client frame after ``hello``
    limits: Limits = field(default_factory=Limits)
    #: largest ``events`` frame (bytes; at least one event goes out whatever its size)
    frame_cap: int = 256 * 1024
    #: shortest time between two ``events`` frames while tokens trickle in (0: at once)
    coalesce: float = 0.001
    #: adaptive delivery: each stream's flow window follows its link (cut to the drain
    #: rate on a link slower than the stream, with longer coalescing); ``False``: the
    #: window stays ``limits.window`` whatever the link does
    adaptive: bool = True
    #: largest frame a client may send before its ``hello`` is accepted (bytes)
    max_hello_frame: int = DEFAULT_MAX_HELLO_FRAME
    #: ``start`` frames a connection may send per second (token bucket rate)
    start_rate: float = 100.0
    #: ``start`` frames a connection may send at once (token bucket size)
    start_burst: int = 200
    #: answered frames a connection may send per second (a flood is read at this pace)
    request_rate: float = 200.0
    #: answered frames a connection may send at once
    request_burst: int = 400
    #: bytes of answers a connection may leave unread before it is closed with 4008
    max_outbox: int = 1024 * 1024
    #: seconds with a full flow window and nothing heard from the client before the
    #: connection is closed with 4004 (its acks are lost: a receive-only link)
    peer_silence: float = 3 * 0.4 + 0.3
    #: seconds one send may stay blocked (the peer stopped reading) before the
    #: connection is dropped
    send_timeout: float = 30.0
    #: seconds a new connection has to send its ``hello``
    hello_timeout: float = 10.0
    #: connections without an ``authenticate`` hook get an anonymous principal
    allow_anonymous: bool = False
    #: an ``unknown_agent`` error lists the registered agents (tells a prober what exists)
    expose_agent_names: bool = False
    #: protocol versions spoken (``"v1"``, ``"v2"``), chosen per connection: the newest
    #: the client offers; none in common closes 4005 (normalised: newest first)
    protocols: tuple[str, ...] = versions.DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocols", versions.normalize(self.protocols))
        if self.heartbeat <= 0 or self.limits.window <= 0 or self.frame_cap <= 0:
            raise ConfigError("heartbeat, window and frame_cap must be positive")
        lim = self.limits
        if lim.max_chunk * 2 + 1024 > lim.max_frame or self.frame_cap > lim.max_frame:
            raise ConfigError("max_chunk and frame_cap must fit well inside max_frame")
        if self.max_client_frame < 1024 or self.max_hello_frame < 1024:
            raise ConfigError("max_client_frame and max_hello_frame must be at least 1 KiB")
        if self.max_client_frame > self.limits.max_frame:
            raise ConfigError("max_client_frame must not be above max_frame")
        if self.max_hello_frame > self.max_client_frame:
            raise ConfigError("max_hello_frame must not be above max_client_frame")
        if self.coalesce < 0 or self.peer_silence <= 0:
            raise ConfigError("coalesce must not be negative, peer_silence must be positive")
        if self.send_timeout <= 0 or self.hello_timeout <= 0:
            raise ConfigError("send_timeout and hello_timeout must be positive")
        if self.start_rate < 0 or self.request_rate < 0 or self.max_outbox <= 0:
            raise ConfigError("rates must not be negative, max_outbox must be positive")
        if self.start_burst < 0 or self.request_burst < 0:
            raise ConfigError("start_burst and request_burst must not be negative")

    @property
    def max_client_frame(self) -> int:
        """Largest frame a client may send once its ``hello`` is accepted (bytes)."""
        return self.limits.max_client_frame
