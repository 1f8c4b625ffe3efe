"""Plain counters the server's hot paths bump: no lock, no label lookup, no import.

A ``+=`` on a slot of a :class:`Counts` is the whole cost of a count on the hot
path (a frame sent, a message received). Labelled counts (resumes by outcome,
refusals by reason, closes by code) happen a few times per connection and go
into small dicts. :mod:`unbroken.observe.metrics` reads all of it when
``/metrics`` is scraped; nothing is rendered in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

#: Upper bounds (seconds) of the recovery-latency histogram's buckets (+Inf implied).
RECOVERY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Counts:
    """Counters of one app (totals since it was built)."""

    __slots__ = (
        "attachments",
        "bytes_in",
        "bytes_out",
        "connections",
        "disconnects",
        "events_in_done",
        "events_out",
        "heartbeat_timeouts",
        "recovery_buckets",
        "recovery_count",
        "recovery_sum",
        "refusals",
        "resumes",
    )

    def __init__(self) -> None:
        #: WebSocket connections served (each counted when its serving starts)
        self.connections = 0
        #: bytes of WebSocket messages received from clients / sent to them
        self.bytes_in = 0
        self.bytes_out = 0
        #: events sent to clients (every copy: a replay counts again)
        self.events_out = 0
        #: events written by runs that have ended (live runs are added at scrape time)
        self.events_in_done = 0
        #: connections dropped for liveness (4004 peer silent, send timeout, peer gone)
        self.heartbeat_timeouts = 0
        #: attachments of a stream to a connection, by how: ``start`` | ``resume``
        self.attachments: dict[str, int] = {"start": 0, "resume": 0}
        #: resumes by (outcome, reason): ("resumed", "") or ("gone", Gone.reason)
        self.resumes: dict[tuple[str, str], int] = {}
        #: refusals by reason (auth, origin, overloaded, version, bad_frame, ...)
        self.refusals: dict[str, int] = {}
        #: connection closes by close code (as a string; unusual codes: "other")
        self.disconnects: dict[str, int] = {}
        #: detach -> resume of the same stream, as the server saw it (seconds)
        self.recovery_buckets = [0] * (len(RECOVERY_BUCKETS) + 1)
        self.recovery_count = 0
        self.recovery_sum = 0.0

    def recovery(self, seconds: float) -> None:
        """Add one recovery latency to the histogram."""
        i = 0
        for bound in RECOVERY_BUCKETS:
            if seconds <= bound:
                break
            i += 1
        self.recovery_buckets[i] += 1
        self.recovery_count += 1
        self.recovery_sum += seconds


class RedisCounts:
    """Round trips to Redis (commands or pipelines sent) and the ones that failed."""

    __slots__ = ("errors", "round_trips")

    def __init__(self) -> None:
        self.round_trips = 0
        self.errors = 0


def count_round_trips(pool: Any, counts: RedisCounts) -> None:
    """Make the connections ``pool`` (a ``redis.asyncio.ConnectionPool``) opens from
    now on count each send (one command, or one whole pipeline) in ``counts``, and
    each send or read that failed (connection lost or refused, timeout) in
    ``counts.errors``. Error replies are not failures of the link and are not counted
    (redis-py's own handshake draws some from older servers: ``CLIENT SETINFO``).
    Does nothing to an object that is not such a pool."""
    base = getattr(pool, "connection_class", None)
    if not isinstance(base, type) or not hasattr(base, "send_packed_command"):
        return
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    failures = (RedisConnectionError, RedisTimeout, OSError, TimeoutError)
    cls: Any = base
    send = cls.send_packed_command
    read = cls.read_response

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        counts.round_trips += 1
        try:
            await send(self, *args, **kwargs)
        except failures:
            counts.errors += 1
            raise

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await read(self, *args, **kwargs)
        except failures:
            counts.errors += 1
            raise

    pool.connection_class = type(
        f"Counted{base.__name__}",
        (base,),
        {"send_packed_command": send_packed_command, "read_response": read_response},
    )


def count_cluster_round_trips(client: Any, counts: RedisCounts) -> None:
    """As :func:`count_round_trips` for a ``redis.asyncio.cluster.RedisCluster``: the
    connections of every node, those known now and those discovered later (a pipeline
    counts once per master it reaches)."""
    manager: Any = getattr(client, "nodes_manager", None)
    kwargs = getattr(manager, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return
    from redis.asyncio.connection import Connection

    holder: Any = type("_Pool", (), {})()
    holder.connection_class = kwargs.get("connection_class", Connection)
    count_round_trips(holder, counts)
    kwargs["connection_class"] = holder.connection_class
    for node in manager.nodes_cache.values():
        node.connection_class = holder.connection_class


@dataclass(slots=True)
class Live:
    """What the app reports of itself at scrape time (read, never kept)."""

    connections: int = 0
    attachments: int = 0
    runs: int = 0
    #: events written by the runs still alive (ended runs are in Counts.events_in_done)
    run_events: int = 0
    log_bytes: int | None = None
    loop_lag: float | None = None
    admission_refusals: dict[str, int] = field(default_factory=dict)
    #: refusals below HTTP by the connection guard (``unbroken serve``), by reason
    socket_refusals: dict[str, int] = field(default_factory=dict)
    redis: RedisCounts | None = None
