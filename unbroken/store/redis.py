"""Stream log on Redis Streams: any node reads any stream (see docs/reference/redis-store.md).

Keys, all hash-tagged by stream id so a cluster keeps a stream on one slot::

    <prefix>:{<stream>}:m   hash: owner, req, epoch, status, head, digest, nbytes,
                            created, ended, error, producer (token), lease (ms, Redis clock)
    <prefix>:{<stream>}:s   Redis Stream: one entry per appended *batch* of events,
                            id ``<first seq>-0``; fields i (item encodings, each with
                            its comma), e (end offsets, uint32), r (runs, JSON), n
                            (count), p / d (chain digest before / after the entry)
    <prefix>:{<stream>}:t   tombstone: the owner, kept ``tombstone_ttl`` past the stream
    <prefix>:req:<owner>:<req>  idempotency key -> stream id (``reqs:…:<scope>:<req>``
                            for a principal with a scope: an anonymous client);
                            ``p:<stream>:<deadline>`` while the stream is created
    <prefix>:epoch          storage generation (SET NX; a Redis that lost it gets a new one)
    <prefix>:live:<owner>:<scope>  sorted set: the owner's streams not yet finished, by
                            creation time (``client.streams()`` on any node)

Appends, lease renewals, claims and finishes are Lua scripts: a producer's
token is checked and the batch applied atomically, so a stale producer is
refused and a retried append is skipped, never duplicated. One blocking
``XREAD`` per store (per node) tails every subscribed stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, Final, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from ..errors import (
    LogDiverged,
    LogFull,
    StaleProducer,
    StoreUnavailable,
    StreamTooLarge,
    UnbrokenError,
)
from ..observe.counts import RedisCounts, count_cluster_round_trips, count_round_trips
from ..protocol.digest import Chain, seed
from ..protocol.events import Event, Kind
from ..protocol.items import Segment, chain_stored, decode_one, items_array
from .base import (
    DIVERGED,
    DROPPED,
    AppendBatch,
    Created,
    EventRun,
    Listener,
    LiveEntry,
    ReadBatch,
    Retention,
    StreamMeta,
)
from .batches import end_batch

log = logging.getLogger(__name__)

T = TypeVar("T")

#: At most this many events, and about this many bytes, per stream entry.
ENTRY_EVENTS: Final = 512
ENTRY_BYTES: Final = 128 * 1024
#: At most this many appends share a pipeline (one round trip).
APPEND_PIPELINE: Final = 256
#: Entries (and bytes) of its own streams a node keeps for readers attached to it.
RECENT_ENTRIES: Final = 16
RECENT_BYTES: Final = 1024 * 1024
_END: Final = int(Kind.END)
_runs_encoder: Final = msgspec.json.Encoder()
_runs_decoder: Final = msgspec.json.Decoder(list[tuple[int, int, str]])
#: Errors that mean "Redis is (briefly) unreachable": retried with backoff. For a
#: cluster also: no node serves the slot yet (failover, resharding), or a slot
#: mid-migration holds only some of a script's keys (redis-py's own retries ran out).
_TRANSIENT: Final = (
    rex.ConnectionError,
    rex.TimeoutError,
    ConnectionError,
    OSError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.SlotNotCoveredError,
    rex.RedisClusterUnreachableError,
)
#: A tail result not read this time (its master did not answer).
_SKIP: Final = object()
#: How often a cluster store polls the streams it tails (no blocking XREAD over
#: many slots exists in a cluster).
CLUSTER_POLL: Final = 0.025
#: How long a cluster tail poll waits for a master's answer before going on without it.
TAIL_WAIT: Final = 0.5

_NOW: Final = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS: meta, stream. ARGV: token, lease_ms, max_bytes, end_last, n, then per entry:
# first, count, items, ends, runs, p, d.
# Returns {code, value}: 0 ok (head) | -1 unknown | -2 stale | -3 ended |
# -4 overlap (head) | -5 gap (head) | -6 too large (nbytes).
_APPEND: Final = (
    _NOW
    + """
local st = redis.call('HMGET', KEYS[1], 'producer', 'status', 'head', 'nbytes', 'digest')
if not st[1] then return {-1, 0} end
if st[1] ~= ARGV[1] then return {-2, 0} end
if st[2] ~= 'running' then return {-3, 0} end
local head = tonumber(st[3])
local nbytes = tonumber(st[4])
local n = tonumber(ARGV[5])
local add, newcount, from = 0, 0, -1
for i = 0, n - 1 do
  local b = 6 + i * 7
  local first = tonumber(ARGV[b])
  local last = first + tonumber(ARGV[b + 1]) - 1
  if last > head then
    if from < 0 then
      if first <= head then return {-4, head} end
      if first > head + 1 then return {-5, head} end
      from = i
    end
    add = add + string.len(ARGV[b + 2])
    newcount = newcount + tonumber(ARGV[b + 1])
  end
end
if from < 0 then return {0, head} end
if nbytes + add > tonumber(ARGV[3]) and not (newcount == 1 and ARGV[4] == '1') then
  return {-6, nbytes}
end
local d = st[5]
for i = from, n - 1 do
  local b = 6 + i * 7
  local p = ARGV[b + 5]
  if i == from then p = d end
  redis.call('XADD', KEYS[2], ARGV[b] .. '-0', 'i', ARGV[b + 2], 'e', ARGV[b + 3],
    'r', ARGV[b + 4], 'n', ARGV[b + 1], 'p', p, 'd', ARGV[b + 6])
  head = tonumber(ARGV[b]) + tonumber(ARGV[b + 1]) - 1
  d = ARGV[b + 6]
end
redis.call('HSET', KEYS[1], 'head', head, 'digest', d, 'nbytes', nbytes + add,
  'lease', now + tonumber(ARGV[2]))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {0, head}
"""
)

# KEYS: meta, stream, tomb. ARGV: token, lease_ms, keep_ms, tomb_ms.
# Returns the head when renewed (the caller checks it did not go back), -1 when not ours.
_RENEW: Final = (
    _NOW
    + """
local st = redis.call('HMGET', KEYS[1], 'producer', 'status', 'head')
if st[1] ~= ARGV[1] or st[2] ~= 'running' then return -1 end
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return tonumber(st[3])
"""
)

# KEYS: meta. ARGV: new token, lease_ms, old token ("": anyone's, once its lease expired).
# {0, head, digest} claimed | {-3} ended | {-7} lease live | {-2} another producer
_CLAIM: Final = (
    _NOW
    + """
local st = redis.call('HMGET', KEYS[1], 'status', 'lease', 'head', 'digest', 'producer')
if st[1] ~= 'running' then return {-3} end
if ARGV[3] == '' then
  if now < tonumber(st[2]) then return {-7} end
elseif st[5] ~= ARGV[3] then
  return {-2}
end
redis.call('HSET', KEYS[1], 'producer', ARGV[1], 'lease', now + tonumber(ARGV[2]))
return {0, tonumber(st[3]), st[4]}
"""
)

# KEYS: meta, stream, tomb. ARGV: token, status, error, ended, ttl_ms, tomb_ms.
_FINISH: Final = """
local p = redis.call('HGET', KEYS[1], 'producer')
if p ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'error', ARGV[3], 'ended', ARGV[4], 'lease', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return 0
"""

# KEYS: the epoch key. Returns {epoch or "", seconds, microseconds}: the lease loop's
# clock on a cluster (the leases themselves are judged by each stream's own node).
# a req's claim whose stream never came (its creator died between claim and meta)
# is dropped only if it still names that stream: never a newer claim
_DROP_CLAIM: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A req's claim while its stream is created is pending: ``p:<stream>:<deadline>``
# (ms, Redis clock), the key kept as long as a stream's (a node of an older release
# reading it sees a young claim with no stream: a create under way, as before). Its
# creator moves the deadline on every ``lease / 5``; past it, the creator is taken
# for dead and another may claim the req. Confirmed (the stream's meta written), the
# claim is the stream id.

# KEYS: a req's claim. ARGV: stream, lease_ms, keep_ms.
# {1} claimed | {2, old} claimed over a lapsed pending claim | {0, value} held
_CLAIM_REQ: Final = (
    _NOW
    + """
local v = redis.call('GET', KEYS[1])
if v then
  local old, d = string.match(v, '^p:([^:]*):(%d+)$')
  if not d or tonumber(d) >= now then return {0, v} end
  redis.call('SET', KEYS[1], 'p:' .. ARGV[1] .. ':' .. (now + tonumber(ARGV[2])), 'PX', ARGV[3])
  return {2, old}
end
redis.call('SET', KEYS[1], 'p:' .. ARGV[1] .. ':' .. (now + tonumber(ARGV[2])), 'PX', ARGV[3])
return {1}
"""
)

# KEYS: a req's claim. ARGV: "p:<stream>:", lease_ms. A pending claim's deadline moved
# on; 0 when it is no longer this creator's.
_HOLD_CLAIM: Final = (
    _NOW
    + """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. (now + tonumber(ARGV[2])), 'PX', ttl)
return 1
"""
)

# KEYS: a req's claim. ARGV: stream, "p:<stream>:", keep_ms. The creator's stream has
# its meta: the claim becomes the stream id (others attach to it) if it is still this
# creator's, or lapsed unclaimed; 0 when another creator holds it now.
_CONFIRM_CLAIM: Final = """
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] or string.sub(v, 1, string.len(ARGV[2])) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""

#: A req's claim while its stream is being created starts with this.
PENDING: Final = "p:"


def _pending_stream(value: str) -> str:
    """The stream a pending claim ``p:<stream>:<deadline>`` names."""
    return value[len(PENDING) :].rpartition(":")[0]


_CLOCK: Final = """
local t = redis.call('TIME')
return {redis.call('GET', KEYS[1]) or '', t[1], t[2]}
"""


class _Entry:
    """One stream entry (a batch of events), decoded."""

    __slots__ = ("count", "d", "ends", "first", "items", "p", "runs")

    def __init__(self, fields: dict[bytes, bytes]) -> None:
        self.items = fields[b"i"]
        ends = array("I")
        ends.frombytes(fields[b"e"])
        self.ends = ends
        self.runs = _runs_decoder.decode(fields[b"r"])
        self.count = int(fields[b"n"])
        self.first = self.runs[0][0]
        self.p = fields[b"p"]
        self.d = fields[b"d"]

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def start(self, seq: int) -> int:
        """Offset of event ``seq`` in ``items``."""
        i = seq - self.first
        return self.ends[i - 1] if i else 0

    def run_at(self, seq: int) -> int:
        return bisect_right([r[0] for r in self.runs], seq) - 1

    def digest_after(self, seq: int) -> bytes:
        """Chain digest after event ``seq`` of this entry (recomputed from ``p``)."""
        if seq == self.last:
            return self.d
        chain = Chain(self.p, self.first - 1)
        for s in range(self.first, seq + 1):
            chain_stored(chain, *self.record(s))
        return chain.digest

    def record(self, seq: int) -> tuple[int, str, bytes]:
        _, kind, part = self.runs[self.run_at(seq)]
        return kind, part, self.items[self.start(seq) : self.ends[seq - self.first] - 1]


class _Cluster(RedisCluster):
    """redis-py's async cluster client, whose first topology refresh survives a dead
    first master.

    Once per client redis-py reads the command table (``COMMAND``) from its default
    node: the first master of the slot map, which a dead master without a replica
    stays in. Its first refresh then fails whole, and so does every command after it,
    for as long as that master is down: a store built (or whose client first connects)
    while one master is down could not reach any master. Here the table is read from
    the first master that answers, and the refresh run again with it.
    """

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> _Cluster:
        try:
            await super().initialize(additional_startup_nodes_info, last_failed_node_name)
            return self
        except (rex.ConnectionError, rex.TimeoutError):
            # (no slot map at all, or the table read: not the case handled here)
            if self.commands_parser.commands or not self.nodes_manager.slots_cache:
                raise
            failed: BaseException | None = None
            for node in self.get_primaries():
                try:
                    await self.commands_parser.initialize(node)
                    break
                except (rex.ConnectionError, rex.TimeoutError) as exc:
                    failed = exc
                    # tried last by the refreshes, and not picked as the default node
                    self.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
            else:
                if failed is not None:
                    raise failed from None
                raise
        log.warning("redis cluster: first master unreachable; command table read from another")
        await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        return self


def _split(
    batch: AppendBatch, carry: tuple[int, str] | None
) -> list[tuple[int, int, bytes, bytes, bytes, bytes, bytes]]:
    """Cut a batch into entries of at most ENTRY_EVENTS events / about ENTRY_BYTES.

    ``carry`` is the (kind, part) of the run the batch continues, when its first
    event starts no run of its own.
    """
    first, count, items, ends, digests = (
        batch.first,
        batch.count,
        batch.items,
        batch.ends,
        batch.digests,
    )
    runs = batch.runs
    run_seqs = [r.seq for r in runs]
    out = []
    i = 0
    mv = memoryview(items)
    while i < count:
        a = ends[i - 1] if i else 0
        j = i + 1
        limit = min(count, i + ENTRY_EVENTS)
        # extend while within the byte target
        hi = bisect_right(ends, a + ENTRY_BYTES, i, limit)
        j = max(j, hi)
        b = ends[j - 1]
        e = array("I", [x - a for x in ends[i:j]])
        s0 = first + i
        # runs of this entry, the first restated at the entry's first event
        r = bisect_right(run_seqs, s0) - 1
        entry_runs: list[tuple[int, int, str]] = []
        if r >= 0:
            entry_runs.append((s0, runs[r].kind, runs[r].part))
        elif carry is not None:  # continues the log's previous run
            entry_runs.append((s0, carry[0], carry[1]))
        else:
            raise ValueError(f"seq {s0} continues a run the log does not know")
        for run in runs[r + 1 :]:
            if run.seq > first + j - 1:
                break
            entry_runs.append((run.seq, run.kind, run.part))
        prev = digests[i - 1] if i else b""
        out.append(
            (
                s0,
                j - i,
                bytes(mv[a:b]),
                e.tobytes(),
                _runs_encoder.encode(entry_runs),
                prev,
                digests[j - 1],
            )
        )
        i = j
    return out


class RedisStore:
    """A :class:`~unbroken.store.base.StreamLog` on Redis Streams.

    ``client`` is a ``redis://`` / ``unix://`` URL or a ``redis.asyncio.Redis``
    built with ``decode_responses=False``. With a URL the epoch is read (or
    created) at once; with a client, ``await store.open()`` before serving.
    ``cluster=True`` takes the URL as a seed node of a Redis Cluster (or pass a
    ``redis.asyncio.cluster.RedisCluster``); see :meth:`RedisStore.cluster`.
    ``lease`` is the producer lease in seconds: a node that dies with runs in
    flight has them ended ``failed: producer_lost`` by any node tailing them
    within about ``lease`` seconds (renewals every ``lease / 5`` may be missed
    three times in a row before the lease runs out). ``outage_timeout`` bounds how
    long an append waits out an unreachable Redis before the run fails.
    """

    def __init__(
        self,
        client: str | aioredis.Redis | RedisCluster,
        *,
        cluster: bool = False,
        retention: Retention | None = None,
        lease: float = 5.0,
        prefix: str = "unbroken",
        outage_timeout: float = 30.0,
        tail_count: int = 64,
        max_connections: int = 64,
    ) -> None:
        self.retention = retention or Retention()
        self.lease = lease
        # a lease stays valid 0.8 x lease after a renewal and is renewed (and others'
        # checked) every lease / 5: a dead producer's streams end within ``lease``
        self._lease_ms = int(lease * 800)
        self.prefix = prefix
        self.outage_timeout = outage_timeout
        self.tail_count = tail_count
        self._epoch_key = f"{prefix}:epoch"
        self._epoch = ""
        #: round trips and failures, for unbroken_redis_* (unbroken.observe)
        self.redis_counts = RedisCounts()
        self.is_cluster = cluster or isinstance(client, RedisCluster)
        #: built here from a URL: :meth:`close` closes its connections (a client
        #: passed in is the caller's: closed only as far as it closes itself)
        self._own_client = isinstance(client, str)
        if isinstance(client, str) and self.is_cluster:
            # a node's connections are opened as needed (redis-py's cluster client has
            # no blocking pool; its per-node cap raises instead of waiting)
            self._r: Any = _Cluster.from_url(client, decode_responses=False)
            count_cluster_round_trips(self._r, self.redis_counts)
            self._epoch = self._sync_epoch(client)
        elif isinstance(client, str):
            # commands wait for a free connection rather than fail: a bounded pool per node
            pool = aioredis.BlockingConnectionPool.from_url(
                client, max_connections=max_connections, timeout=None, decode_responses=False
            )
            self._r = aioredis.Redis(connection_pool=pool)
            count_round_trips(pool, self.redis_counts)
            self._epoch = self._sync_epoch(client)
        else:
            self._r = client
            if self.is_cluster:
                count_cluster_round_trips(client, self.redis_counts)
            else:
                count_round_trips(getattr(client, "connection_pool", None), self.redis_counts)
        self._append_script = self._r.register_script(_APPEND)
        self._renew_script = self._r.register_script(_RENEW)
        self._claim_script = self._r.register_script(_CLAIM)
        self._finish_script = self._r.register_script(_FINISH)
        self._clock_script = self._r.register_script(_CLOCK)
        self._drop_claim_script = self._r.register_script(_DROP_CLAIM)
        self._confirm_script = self._r.register_script(_CONFIRM_CLAIM)
        self._claim_req_script = self._r.register_script(_CLAIM_REQ)
        self._shas = {
            _CLAIM_REQ: self._claim_req_script.sha,
            _CLAIM: self._claim_script.sha,
            _FINISH: self._finish_script.sha,
            _HOLD_CLAIM: self._r.register_script(_HOLD_CLAIM).sha,
            _CONFIRM_CLAIM: self._confirm_script.sha,
        }
        #: (req key, stream) of the creates under way here, and when (loop time) each
        #: claimed: their pending claims are renewed every ``lease / 5`` (a dead
        #: creator's lapses within 0.8 x lease), for ``outage_timeout`` + 5 s at most
        self._claiming: dict[tuple[str, str], float] = {}
        #: the claim renewals still running (one per claim: see _hold_claims)
        self._holding: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._notified: dict[str, int] = {}
        self._tail_ids: dict[str, bytes] = {}
        self._owned: dict[str, str] = {}  # stream -> producer token held by this node
        self._appended: dict[str, int] = {}  # stream -> head this node appended (owned ones)
        #: streams whose log lost events this node's producer had appended: the
        #: producer's next append raises LogDiverged(stream, head, expected)
        self._lost: dict[str, tuple[int, int]] = {}
        self._tail_client_id: int | None = None
        self._tail_kick = False
        self._tail_wake: asyncio.Event | None = None  # set when streams are subscribed
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._ending: set[str] = set()
        self._recent: dict[str, deque[_Entry]] = {}  # last entries this node appended
        self._diverging: set[str] = set()  # streams being ended after lost writes
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._last_run: dict[str, tuple[int, str]] = {}  # (kind, part) of the last run appended
        #: bytes appended by this node's running producers, by stream, and their sum:
        #: ``max_total_bytes`` caps it on every append (finished streams are bounded by
        #: their TTL and Redis's maxmemory)
        self._held: dict[str, int] = {}
        self.held_bytes = 0
        #: appends waiting for this loop tick's pipeline (see _run_append)
        self._queued: list[tuple[list[str], list[Any], asyncio.Future[list[Any]]]] = []
        self._queue_armed = False
        #: each master's lease pipeline still running (a cluster): see _unstalled
        #: masters not answering (a cluster), since when (loop time): see _retry
        self._down: dict[str, float] = {}
        self._lease_busy: dict[str, asyncio.Future[list[Any]]] = {}
        self._tail_busy: dict[str, asyncio.Future[list[Any]]] = {}

    @classmethod
    def cluster(cls, url: str, **kwargs: Any) -> RedisStore:
        """A store on the Redis Cluster ``url`` names one node of (a seed: the
        others are discovered); ``kwargs`` as for :class:`RedisStore`."""
        return cls(url, cluster=True, **kwargs)

    # ------------------------------------------------------------ keys
    def _meta_key(self, stream: str) -> str:
        return f"{self.prefix}:{{{stream}}}:m"

    def _log_key(self, stream: str) -> str:
        return f"{self.prefix}:{{{stream}}}:s"

    def _tomb_key(self, stream: str) -> str:
        return f"{self.prefix}:{{{stream}}}:t"

    def _req_key(self, owner: str, req: str, scope: str = "") -> str:
        if scope:  # a namespace of its own: no unscoped req can spell a scoped key
            return f"{self.prefix}:reqs:{len(owner)}:{owner}:{len(scope)}:{scope}:{req}"
        return f"{self.prefix}:req:{len(owner)}:{owner}:{req}"

    def _live_key(self, owner: str, scope: str) -> str:
        return f"{self.prefix}:live:{len(owner)}:{owner}:{len(scope)}:{scope}"

    async def live_streams(self, owner: str, scope: str = "") -> list[LiveEntry]:
        """The streams of ``(owner, scope)`` still running, oldest first, with the
        head and digest the log holds (any node answers the same). Streams that
        ended or expired without a finish seen here are dropped from the index."""
        key = self._live_key(owner, scope)

        async def run() -> list[LiveEntry]:
            members = await self._r.zrange(key, 0, 9_999)
            if not members:
                return []
            pipe = self._r.pipeline(transaction=False)
            for m in members:
                pipe.hmget(self._meta_key(m.decode()), ["status", "agent", "head", "digest"])
            metas = await pipe.execute()
            out, stale = [], []
            for m, (status, agent, head, digest) in zip(members, metas, strict=True):
                if status != b"running":
                    stale.append(m)
                    continue
                out.append(LiveEntry(m.decode(), (agent or b"").decode(), int(head), digest))
            if stale:
                with contextlib.suppress(*_TRANSIENT):
                    await self._r.zrem(key, *stale)
            return out

        return await self._retry("live streams", run)

    async def find(self, owner: str, req: str, scope: str = "") -> Created | None:
        async def run() -> Created | None:
            existing = await self._r.get(self._req_key(owner, req, scope))
            if existing is None:
                return None
            sid = existing.decode()
            if sid.startswith(PENDING):  # being created: not a stream yet
                return None
            token = await self._r.hget(self._meta_key(sid), "producer")
            return None if token is None else Created(sid, self._epoch, False, token.decode())

        return await self._retry("find", run)

    def _running_keep_ms(self) -> int:
        """How long a running stream's keys live without a lease renewal."""
        return int((self.retention.ttl + 10 * self.lease) * 1000)

    # ------------------------------------------------------------ epoch
    def _sync_epoch(self, url: str) -> str:
        import redis
        import redis.cluster

        r: Any = None
        try:
            r = (
                redis.cluster.RedisCluster.from_url(url, decode_responses=False)
                if self.is_cluster
                else redis.Redis.from_url(url, decode_responses=False)
            )
            r.set(self._epoch_key, secrets.token_urlsafe(9).encode(), nx=True)
            value = r.get(self._epoch_key)
            assert isinstance(value, bytes)
            return value.decode()
        except _TRANSIENT as exc:  # (a cluster: the URL's node, or the epoch key's master)
            raise StoreUnavailable(
                f"redis unreachable at start: the epoch key {self._epoch_key} not read: {exc}"
            ) from exc
        finally:
            if r is not None:
                r.close()

    async def open(self) -> None:
        """Read (or create) the epoch; needed only when built from a client."""
        await self._refresh_epoch(None)

    async def _refresh_epoch(self, seen: bytes | str | None) -> None:
        """Adopt the epoch found in Redis (``seen``: a value just read, ``""`` = not read)."""
        if isinstance(seen, bytes):
            value = seen.decode()
        else:
            await self._r.set(self._epoch_key, secrets.token_urlsafe(9).encode(), nx=True)
            got = await self._r.get(self._epoch_key)
            value = got.decode() if got else ""
        if value and value != self._epoch:
            if self._epoch:
                log.warning(
                    "redis epoch changed old=%s new=%s: stored events were lost", self._epoch, value
                )
            self._epoch = value

    async def _epoch_or_known(self) -> bytes | None:
        """The epoch key's value; on a cluster whose epoch master does not answer, the
        epoch known (the lease loop checks it again every ``lease / 5``)."""
        try:
            got: bytes | None = await self._r.get(self._epoch_key)
            return got
        except _TRANSIENT as exc:
            log.debug("epoch not read (its master does not answer): %r", exc)
            return self._epoch.encode() if self._epoch else None

    @property
    def epoch(self) -> str:
        if not self._epoch:
            raise RuntimeError("RedisStore built from a client: await store.open() first")
        return self._epoch

    # ------------------------------------------------------------ plumbing
    def _ensure_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        if self._closed or (self._loop is loop and all(not t.done() for t in self._tasks)):
            return
        for t in self._tasks:
            t.cancel()
        self._loop = loop
        self._tail_client_id = None
        self._tail_wake = asyncio.Event()
        tail = self._poll_loop() if self.is_cluster else self._tail_loop()
        self._tasks = [
            loop.create_task(tail, name="unbroken-redis-tail"),
            loop.create_task(self._lease_loop(), name="unbroken-redis-lease"),
        ]

    async def _retry(
        self, what: str, fn: Callable[[], Awaitable[T]], stream: str | None = None
    ) -> T:
        """Run ``fn``; while Redis is unreachable, retry with full-jitter backoff
        for up to ``outage_timeout`` seconds (``fn`` must be idempotent). On a
        cluster, for ``stream``'s master: counted from when that master stopped
        answering, so once it has been down that long its streams fail at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_timeout
        master = self._node_of(self._meta_key(stream)) if stream and self.is_cluster else ""
        since = self._down.get(master) if master else None
        if since is not None and loop.time() >= since + self.outage_timeout:
            # not tried: redis-py's own retries on a dead node take seconds (the lease
            # loop asks it every tick and clears this once it answers)
            raise StoreUnavailable(
                f"redis master {master} unreachable for {loop.time() - since:.0f}s: {what}"
                " not tried"
            )
        delay = 0.05
        while True:
            try:
                got = await fn()
                if master:
                    self._down.pop(master, None)
                return got
            except _TRANSIENT as exc:
                if master:
                    since = self._down.setdefault(master, loop.time())
                    deadline = min(deadline, since + self.outage_timeout)
                if loop.time() >= deadline:
                    raise StoreUnavailable(
                        f"redis unreachable for {self.outage_timeout:.0f}s during {what}: {exc}"
                    ) from exc
                log.warning("redis unreachable during %s, retrying: %r", what, exc)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 1.0)

    def _notify(self, stream: str, head: int) -> None:
        if head >= 0:
            if head <= self._notified.get(stream, -1):
                return
            self._notified[stream] = head
        for cb in list(self._listeners.get(stream, ())):
            try:
                cb(stream, head)
            except Exception:  # a listener must never break the store
                log.exception("stream listener failed stream=%s", stream)

    # ------------------------------------------------------------ producer side
    async def create(
        self, owner: str, req: str, now: float, scope: str = "", *, agent: str = ""
    ) -> Created:
        self._ensure_tasks()
        # the ids this call claimed: a retry after a reply lost (Redis restarting)
        # finds its own claim and finishes it, not "started already, by another"
        tried: dict[str, float] = {}  # stream -> when (loop time) it was claimed
        try:
            return await self._retry(
                "create", lambda: self._create(owner, req, now, scope, agent, tried)
            )
        finally:
            rkey = self._req_key(owner, req, scope)
            for s in tried:
                self._claiming.pop((rkey, s), None)

    async def _create(
        self, owner: str, req: str, now: float, scope: str, agent: str, tried: dict[str, float]
    ) -> Created:
        rkey = self._req_key(owner, req, scope)
        keep = self._running_keep_ms()
        # a new stream needs room: refused while this node's running streams hold more
        # than 15/16 of max_total_bytes (new work is refused before appends fail)
        limit = self.retention.max_total_bytes
        if self.held_bytes > limit - limit // 16 and await self._r.exists(rkey) == 0:
            raise LogFull(self.retention.retry_after)
        for _ in range(5):
            stream = secrets.token_urlsafe(16)
            tried[stream] = asyncio.get_running_loop().time()
            # the claim is pending (``p:<stream>``, a short lease renewed by this node's
            # lease loop) until the stream's meta is written: a creator that dies
            # before lets it lapse within 0.8 x lease, and a start on another node
            # then creates the stream
            self._claiming[(rkey, stream)] = tried[stream]
            claim = [stream, self._lease_ms, keep]
            try:
                if self.is_cluster:  # the epoch lives on another master: it may be down
                    got = await self._call(_CLAIM_REQ, [rkey], claim)
                    ep = await self._epoch_or_known()
                else:
                    pipe = self._r.pipeline(transaction=False)
                    await self._claim_req_script(keys=[rkey], args=claim, client=pipe)
                    pipe.get(self._epoch_key)
                    got, ep = await pipe.execute()
            except rex.ResponseError as exc:
                if _out_of_memory(exc):
                    raise LogFull(self.retention.retry_after) from exc
                raise
            if ep is None or ep.decode() != self._epoch:
                await self._refresh_epoch(ep if ep is not None else None)
            if got[0] == 2:
                log.warning(
                    "create took over a lapsed claim (its creator stopped renewing it) "
                    "req=%s stream=%s lapsed=%s",
                    req,
                    stream,
                    got[1].decode(),
                )
            if got[0] == 0:
                self._claiming.pop((rkey, stream), None)
                value = got[1].decode()
                sid = _pending_stream(value) if value.startswith(PENDING) else value
                if sid in tried:
                    # claimed by an earlier try of this create whose reply was lost
                    # (maybe its meta too): it is this call's to finish, and its run's
                    stream = sid
                    self._claiming[(rkey, stream)] = tried[sid]
                else:
                    if value.startswith(PENDING):
                        # a create under way on another node (or in another call),
                        # its creator renewing the claim: a dead one's lapses soon
                        log.info("start waits for a create under way elsewhere stream=%s", sid)
                        raise StoreUnavailable(
                            f"the stream of this request is being created (claim {sid});"
                            " start again"
                        )
                    token = await self._r.hget(self._meta_key(sid), "producer")
                    if token is not None:
                        return Created(sid, self._epoch, False, token.decode())
                    await self._stale_claim(rkey, sid, keep)
                    continue
            token = secrets.token_hex(8)
            pipe = self._r.pipeline(transaction=False)
            meta = self._meta_key(stream)
            tomb_ms = keep + int(self.retention.tombstone_ttl * 1000)
            pipe.hset(
                meta,
                mapping={
                    "owner": owner,
                    "req": req,
                    "scope": scope,
                    "epoch": self._epoch,
                    "status": "running",
                    "head": 0,
                    "digest": seed(stream, self._epoch),
                    "nbytes": 0,
                    "created": repr(now),
                    "ended": "",
                    "error": "",
                    "producer": token,
                    "lease": 0,
                    "agent": agent,
                },
            )
            pipe.pexpire(meta, keep)
            pipe.set(self._tomb_key(stream), owner.encode(), px=tomb_ms)
            live = self._live_key(owner, scope)
            confirm = [stream, f"{PENDING}{stream}:", keep]
            renew = [token, self._lease_ms, keep, tomb_ms]
            stream_keys = [meta, self._log_key(stream), self._tomb_key(stream)]
            try:
                await pipe.execute()
                if self.is_cluster:  # the claim lives on another master
                    await self._renew_script(keys=stream_keys, args=renew)
                    mine = await self._call(_CONFIRM_CLAIM, [rkey], confirm)
                else:  # (the live index too: taken out again if the claim was lost)
                    pipe = self._r.pipeline(transaction=False)
                    await self._renew_script(keys=stream_keys, args=renew, client=pipe)
                    await self._confirm_script(keys=[rkey], args=confirm, client=pipe)
                    pipe.zadd(live, {stream: now})
                    pipe.pexpire(live, keep)
                    mine = (await pipe.execute())[1]
            except rex.ResponseError as exc:
                if _out_of_memory(exc):
                    raise LogFull(self.retention.retry_after) from exc
                raise
            self._claiming.pop((rkey, stream), None)
            if not mine:
                # this creator stalled past its claim's lease and another took the req:
                # its stream (nobody can attach to it) is removed, and the start gets
                # the other's stream (or is told to come back while it is made)
                log.warning(
                    "create lost its claim (stalled past its lease) stream=%s req=%s",
                    stream,
                    req,
                )
                await self._r.delete(*stream_keys)
                if not self.is_cluster:
                    await self._r.zrem(live, stream)
                continue
            if self.is_cluster:
                pipe = self._r.pipeline(transaction=False)
                pipe.zadd(live, {stream: now})
                pipe.pexpire(live, keep)
                await pipe.execute()
            self._owned[stream] = token
            self._appended[stream] = 0
            self._held[stream] = 0
            return Created(stream, self._epoch, True, token)
        raise UnbrokenError(f"could not create a stream for req {req!r}")

    async def _stale_claim(self, rkey: str, sid: str, keep: int) -> None:
        """``rkey`` claims stream ``sid`` (confirmed, not pending), which has no meta:
        the stream expired, or a node older than pending claims is creating it. A
        claim younger than such a creator's longest wait (``outage_timeout``, and 5 s
        more) may be a create under way: deleting it would make a second stream for
        the same req, so this start is told the log is not ready
        (:class:`StoreUnavailable`: its client starts it again, then gets that
        stream). An older one outlived its stream (or its creator): dropped (if it
        still names ``sid``) to start afresh."""
        left = await self._r.pttl(rkey)
        if left == -2:  # gone meanwhile: claim again
            return
        if left >= 0 and keep - left < (self.outage_timeout + 5.0) * 1000:
            log.info("start waits for a create under way elsewhere stream=%s", sid)
            raise StoreUnavailable(
                f"the stream of this request is being created (claim {sid}); start again"
            )
        await self._drop_claim_script(keys=[rkey], args=[sid])

    async def _carry(self, stream: str, batch: AppendBatch) -> tuple[int, str] | None:
        """The run a batch continues (none if its first event starts a run)."""
        if batch.runs and batch.runs[0].seq <= batch.first:
            return None
        cached = self._last_run.get(stream)
        if cached is not None:
            return cached
        got = await self._r.xrevrange(self._log_key(stream), "+", "-", count=1)
        if not got:
            return None
        _, kind, part = _Entry(got[0][1]).runs[-1]
        return kind, part

    def _reserve(self, stream: str, n: int) -> None:
        """Count ``n`` more bytes held by this node's running ``stream``."""
        if n and stream in self._held:
            self._held[stream] += n
            self.held_bytes += n

    def _disown(self, stream: str) -> None:
        """This node no longer produces ``stream``: no renewals, no cached entries."""
        self._owned.pop(stream, None)
        self._appended.pop(stream, None)
        self._recent.pop(stream, None)
        self._last_run.pop(stream, None)
        self.held_bytes -= self._held.pop(stream, 0)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        self._ensure_tasks()
        lost = self._lost.pop(stream, None)
        if lost is not None:  # found by a lease renewal: the stream is ended already
            raise LogDiverged(stream, *lost)
        return await self._append(stream, producer, batch)

    async def _append(self, stream: str, producer: str, batch: AppendBatch) -> int:
        batch = batch.rebased()  # (a producer gives a base only to a log in memory)
        if batch.count <= 0:
            meta = await self.meta(stream)
            return meta.head if meta else 0
        carry = await self._retry(
            f"append stream={stream}", lambda: self._carry(stream, batch), stream
        )
        entries = _split(batch, carry)
        last_seq = batch.first + batch.count - 1
        end_last = (
            "1"
            if batch.runs and batch.runs[-1].seq == last_seq and (batch.runs[-1].kind == _END)
            else "0"
        )
        add = len(batch.items) if stream in self._held else 0
        ends_only = end_last == "1" and batch.count == 1  # the end event always fits
        if add and not ends_only and self.held_bytes + add > self.retention.max_total_bytes:
            raise LogFull(self.retention.retry_after)
        # reserved before the script runs (concurrent appends of other streams see it)
        self._reserve(stream, add)
        keys = [self._meta_key(stream), self._log_key(stream)]
        args: list[Any] = [
            producer,
            self._lease_ms,
            self.retention.max_stream_bytes,
            end_last,
            len(entries),
        ]
        for e in entries:
            args.extend(e)

        async def run() -> list[Any]:
            return await self._run_append(keys, args)

        try:
            code, value = await self._retry(f"append stream={stream}", run, stream)
        except rex.ResponseError as exc:
            self._reserve(stream, -add)
            if _out_of_memory(exc):  # Redis at maxmemory (noeviction): the log is full
                raise LogFull(self.retention.retry_after) from exc
            raise
        except BaseException:
            self._reserve(stream, -add)
            raise
        if code != 0:
            self._reserve(stream, -add)
        if code == 0:
            last_run = _runs_decoder.decode(entries[-1][4])[-1]
            self._last_run[stream] = (last_run[1], last_run[2])
            if int(value) == last_seq:
                self._remember(stream, entries)
            if stream in self._appended:
                self._appended[stream] = max(self._appended[stream], int(value))
            self._notify(stream, int(value))
            return int(value)
        if code in (-1, -2, -3):
            self._disown(stream)
            why = {-1: "is unknown", -2: "has another producer", -3: "already ended"}[code]
            raise StaleProducer(f"producer {producer} cannot append: stream {stream} {why}")
        if code == -4:  # overlaps the head mid-batch: append only what is new
            nf = int(value) + 1
            skip = nf - batch.first
            a = batch.ends[skip - 1]
            before = [r for r in batch.runs if r.seq <= nf]
            run0 = [EventRun(nf, before[-1].kind, before[-1].part)] if before else []
            if not before and carry is not None:
                run0 = [EventRun(nf, carry[0], carry[1])]
            rest = AppendBatch(
                nf,
                batch.count - skip,
                bytes(batch.items[a:]),
                array("I", [x - a for x in batch.ends[skip:]]),
                run0 + [r for r in batch.runs if r.seq > nf],
                batch.digests[skip:],
            )
            return await self._append(stream, producer, rest)
        if code == -5:  # the log is behind what this producer appended: it lost writes
            await self._diverged(stream, producer, int(value), batch.first - 1)
            self._lost.pop(stream, None)
            raise LogDiverged(stream, int(value), batch.first - 1)
        raise StreamTooLarge(
            f"stream {stream} holds {value} bytes; this append would exceed "
            f"max_stream_bytes={self.retention.max_stream_bytes}"
        )

    async def _run_append(self, keys: list[str], args: list[Any]) -> list[Any]:
        """The append script, sent in one pipeline with the other appends queued in
        this loop tick (many paced streams: one round trip for all of their tokens,
        not one each). Each is still its own script, atomic and checked as alone."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._queued.append((keys, args, fut))
        if not self._queue_armed:
            self._queue_armed = True
            loop.call_soon(self._send_appends)
        return await fut

    def _send_appends(self) -> None:
        self._queue_armed = False
        queued, self._queued = self._queued, []
        for i in range(0, len(queued), APPEND_PIPELINE):
            self._spawn(self._pipeline_appends(queued[i : i + APPEND_PIPELINE]))

    async def _pipeline_appends(
        self,
        queued: list[tuple[list[str], list[Any], asyncio.Future[list[Any]]]],
        loaded: int = 0,
    ) -> None:
        live = [q for q in queued if not q[2].done()]  # a waiter cancelled meanwhile: not sent
        if not live:
            return
        try:
            if len(live) == 1 and not self.is_cluster:  # (loads the script if need be)
                keys, args, _ = live[0]
                results: list[Any] = [await self._append_script(keys=keys, args=args)]
            else:
                results = await self._pipelines_by_master(live)
        except Exception as exc:  # each waiter's _retry judges it (transient: sent again)
            for _, _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:
            for _, _, fut in live:
                fut.cancel()
            raise
        again = []
        for (keys, args, fut), res in zip(live, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, rex.NoScriptError) and loaded < 2:
                again.append((keys, args, fut))  # Redis lost its scripts (a restart, a flush)
            elif isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        if again:  # load the script, then send those again, together
            try:
                # on their masters; again (a slot mid-migration: it ran on the importing
                # master, ASK) on every master
                masters = {
                    self._node_of(k[0]) if self.is_cluster and not loaded else ""
                    for k, _, _ in again
                }
                await self._load_scripts(sorted(masters), (_APPEND,))
            except Exception as exc:
                for _, _, fut in again:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            await self._pipeline_appends(again, loaded + 1)

    async def _pipelines_by_master(
        self, live: list[tuple[list[str], list[Any], asyncio.Future[list[Any]]]]
    ) -> list[Any]:
        """Each append's answer (or the error of its master's pipeline): on a cluster
        one pipeline per master, all at once, as a cluster pipeline fails whole when
        one of its masters does not answer: a dead master fails its own streams'
        appends only, never those on the others."""
        groups: dict[str, list[int]] = {}
        for n, (keys, _, _) in enumerate(live):
            groups.setdefault(self._node_of(keys[0]) if self.is_cluster else "", []).append(n)
        sha = self._append_script.sha

        async def run(idx: list[int]) -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for n in idx:
                keys, args, _ = live[n]
                pipe.evalsha(sha, len(keys), *keys, *args)
            got: list[Any] = await pipe.execute(raise_on_error=False)
            return got

        batches = list(groups.values())
        if len(batches) == 1:
            return await run(batches[0])
        answers = await asyncio.gather(*(run(b) for b in batches), return_exceptions=True)
        results: list[Any] = [None] * len(live)
        for idx, got in zip(batches, answers, strict=True):
            if isinstance(got, BaseException) and not isinstance(got, Exception):
                raise got
            for j, n in enumerate(idx):
                results[n] = got if isinstance(got, BaseException) else got[j]
        return results

    async def finish(self, stream: str, producer: str, status: str, error: str, now: float) -> None:
        self._ensure_tasks()
        ttl = int(self.retention.ttl * 1000)
        tomb = ttl + int(self.retention.tombstone_ttl * 1000)

        async def run() -> int:
            code: int = await self._call(
                _FINISH,
                [self._meta_key(stream), self._log_key(stream), self._tomb_key(stream)],
                [producer, status, error, repr(now), max(ttl, 1), max(tomb, 1)],
            )
            return code

        code = await self._retry(f"finish stream={stream}", run, stream)
        self._disown(stream)
        if code != 0:
            raise StaleProducer(f"producer {producer} does not own stream {stream}")
        meta = await self._r.hmget(self._meta_key(stream), ["owner", "req", "scope"])
        if meta[0] is not None:
            scope = meta[2].decode() if meta[2] else ""
            owner = meta[0].decode()
            pipe = self._r.pipeline(transaction=False)
            pipe.pexpire(self._req_key(owner, meta[1].decode(), scope), max(ttl, 1))
            pipe.zrem(self._live_key(owner, scope), stream)
            with contextlib.suppress(*_TRANSIENT):
                await pipe.execute()
        for cb in list(self._listeners.get(stream, ())):
            try:
                cb(stream, self._notified.get(stream, 0))
            except Exception:
                log.exception("stream listener failed stream=%s", stream)

    # ------------------------------------------------------------ reader side
    async def _entries(self, stream: str, after: int, max_bytes: int) -> list[_Entry]:
        """Entries holding events after ``after``: about ``max_bytes`` of them."""
        key = self._log_key(stream)
        pipe = self._r.pipeline(transaction=False)
        pipe.xrevrange(key, f"{after + 1}-0", "-", count=1)
        pipe.xrange(key, f"({after + 1}-0", "+", count=4)
        first, rest = await pipe.execute()
        out = [_Entry(f) for _, f in first]
        if out and out[0].last <= after:
            out.clear()
        out.extend(_Entry(f) for _, f in rest)
        total = sum(len(e.items) for e in out)
        while rest and len(rest) == 4 and total < max_bytes:
            rest = await self._r.xrange(key, f"({out[-1].first}-0", "+", count=16)
            for _, f in rest:
                e = _Entry(f)
                out.append(e)
                total += len(e.items)
        return out

    def _remember(
        self, stream: str, entries: list[tuple[int, int, bytes, bytes, bytes, bytes, bytes]]
    ) -> None:
        """Keep the last entries this node appended (immutable once in Redis), so
        readers attached here follow a live stream without a round trip."""
        cache = self._recent.setdefault(stream, deque())
        for first, count, items, ends, runs, p, d in entries:
            if not p:  # the digest before the batch: the previous entry's, or the seed
                if cache and cache[-1].last == first - 1:
                    p = cache[-1].d
                elif first == 1:
                    p = seed(stream, self._epoch)
                else:
                    cache.clear()
                    continue
            if cache and cache[-1].last != first - 1:
                cache.clear()
            cache.append(
                _Entry({b"i": items, b"e": ends, b"r": runs, b"n": b"%d" % count, b"p": p, b"d": d})
            )
        size = sum(len(e.items) for e in cache)
        while len(cache) > RECENT_ENTRIES or (size > RECENT_BYTES and len(cache) > 1):
            size -= len(cache.popleft().items)

    def _cached(self, stream: str, after: int) -> list[_Entry] | None:
        cache = self._recent.get(stream)
        if not cache or not cache[0].first <= after + 1 <= cache[-1].last:
            return None
        return [e for e in cache if e.last > after]

    async def read(self, stream: str, after: int, max_bytes: int) -> ReadBatch | None:
        async def run() -> list[_Entry]:
            return await self._entries(stream, after, max_bytes)

        entries = self._cached(stream, after)
        if entries is None:
            entries = await self._retry(f"read stream={stream}", run, stream)
        if not entries:
            return None
        # choose the last event: whole entries while within max_bytes, at least one event
        first = after + 1
        used = 0
        last = after
        last_entry = 0
        for idx, e in enumerate(entries):
            a = e.start(max(first, e.first))
            size = len(e.items) - a
            if used + size <= max_bytes:
                used += size
                last = e.last
                last_entry = idx
                continue
            if last > after:
                break  # end on an entry boundary: its digest is stored
            # the first entry alone is over budget: cut inside it
            i0 = max(first, e.first) - e.first
            cut = bisect_right(e.ends, a + max_bytes, i0, e.count)
            cut = max(cut, i0 + 1)
            last = e.first + cut - 1
            used = e.ends[cut - 1] - a
            last_entry = idx
            break
        entries = entries[: last_entry + 1]
        items, last_kind = _items(entries, first, last)
        digest = entries[-1].digest_after(last)
        return ReadBatch(first, last - after, items, digest, used, last_kind)

    async def meta(self, stream: str) -> StreamMeta | None:
        self._ensure_tasks()

        async def run() -> tuple[list[Any], bytes | None]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hmget(
                self._meta_key(stream),
                [
                    "owner",
                    "req",
                    "status",
                    "head",
                    "digest",
                    "nbytes",
                    "created",
                    "ended",
                    "error",
                    "producer",
                    "scope",
                ],
            )
            if self.is_cluster:  # the epoch lives on another master: it may be down
                (m,) = await pipe.execute()
                return m, await self._epoch_or_known()
            pipe.get(self._epoch_key)
            m, ep = await pipe.execute()
            return m, ep

        m, ep = await self._retry(f"meta stream={stream}", run, stream)
        if ep is None or ep.decode() != self._epoch:
            await self._refresh_epoch(ep)
        if m[0] is None:
            return None
        s = [x.decode() if i != 4 and x is not None else x for i, x in enumerate(m)]
        return StreamMeta(
            stream=stream,
            owner=s[0],
            req=s[1],
            status=s[2],
            head=int(s[3]),
            digest=m[4],
            nbytes=int(s[5]),
            created=float(s[6]),
            ended=float(s[7]) if s[7] else None,
            error=s[8],
            producer=s[9],
            scope=s[10] or "",
        )

    async def tombstone(self, stream: str) -> str | None:
        key = self._tomb_key(stream)
        owner = await self._retry(f"tombstone stream={stream}", lambda: self._r.get(key), stream)
        return owner.decode() if owner is not None else None

    async def digest_at(self, stream: str, seq: int) -> bytes | None:
        return await self._retry(
            f"digest stream={stream}", lambda: self._digest_at(stream, seq), stream
        )

    async def _digest_at(self, stream: str, seq: int) -> bytes | None:
        m = await self._r.hmget(self._meta_key(stream), ["head", "digest", "epoch"])
        if m[0] is None:
            return None
        head = int(m[0])
        if seq < 0 or seq > head:
            return None
        if seq == 0:
            return seed(stream, m[2].decode())
        if seq == head:
            d: bytes = m[1]
            return d
        got = await self._r.xrevrange(self._log_key(stream), f"{seq}-0", "-", count=1)
        if not got:
            return None
        return _Entry(got[0][1]).digest_after(seq)

    def subscribe(self, stream: str, listener: Listener) -> Callable[[], None]:
        self._ensure_tasks()
        listeners = self._listeners.setdefault(stream, [])
        listeners.append(listener)
        if stream not in self._tail_ids:
            self._tail_ids[stream] = b""  # the tailer reads its head first
            self._kick()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(listener)
            if not listeners and self._listeners.get(stream) is listeners:
                del self._listeners[stream]
                self._tail_ids.pop(stream, None)
                self._notified.pop(stream, None)

        return unsubscribe

    # ------------------------------------------------------------ tailing
    def _kick(self) -> None:
        """Wake the blocked XREAD so it picks up new streams."""
        if self._tail_wake is not None:
            self._tail_wake.set()
        if self.is_cluster:
            return
        if self._tail_kick or self._tail_client_id is None or self._loop is None:
            self._tail_kick = True
            return
        self._tail_kick = True
        cid = self._tail_client_id

        async def unblock() -> None:
            with contextlib.suppress(Exception):
                await self._r.client_unblock(cid)

        self._loop.create_task(unblock())

    async def _tail_loop(self) -> None:
        tail: Any = self._r.client()
        backoff = 0.05
        try:
            while not self._closed:
                try:
                    if self._tail_client_id is None:
                        self._tail_client_id = int(await tail.client_id())
                    self._tail_kick = False
                    new = [s for s, i in self._tail_ids.items() if not i]
                    if new:
                        pipe = self._r.pipeline(transaction=False)
                        for s in new:
                            pipe.hget(self._meta_key(s), "head")
                        heads = await pipe.execute()
                        for s, h in zip(new, heads, strict=True):
                            if s in self._tail_ids:
                                head = int(h) if h is not None else 0
                                self._tail_ids[s] = f"{head}-0".encode()
                                if head:
                                    self._notify(s, head)
                    # streams this node produces notify their readers on append
                    owned = self._owned
                    streams = {
                        self._log_key(s): i for s, i in self._tail_ids.items() if s not in owned
                    }
                    if not streams:  # nothing to tail: wait for a subscription
                        assert self._tail_wake is not None
                        with contextlib.suppress(TimeoutError):
                            await _wait_event(self._tail_wake, 1.0)
                        self._tail_wake.clear()
                        continue
                    got = await tail.xread(streams, count=self.tail_count, block=250)
                    backoff = 0.05
                    for key, items in got or ():
                        k = key.decode() if isinstance(key, bytes) else key
                        s = k[len(self.prefix) + 2 : -3]
                        if s not in self._tail_ids or not items:
                            continue
                        eid, fields = items[-1]
                        self._tail_ids[s] = eid if isinstance(eid, bytes) else eid.encode()
                        head = int(eid.split(b"-")[0]) + int(fields[b"n"]) - 1
                        self._notify(s, head)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._closed:
                        return
                    if not isinstance(exc, rex.ResponseError) or "UNBLOCKED" not in str(exc):
                        log.warning("redis tail failed, retrying: %r", exc)
                        self._tail_client_id = None
                        await asyncio.sleep(random.uniform(backoff / 2, backoff))
                        backoff = min(backoff * 2, 1.0)
        finally:
            with contextlib.suppress(Exception):
                await tail.aclose()

    async def _poll_loop(self) -> None:
        """The tailer on a Redis Cluster: a blocking XREAD may not name streams of
        several slots, so every ``CLUSTER_POLL`` seconds one pipeline asks each
        tailed stream for its new entries (redis-py sends each master its share in
        one round trip, the masters in parallel)."""
        backoff = 0.05
        while not self._closed:
            try:
                new = [s for s, i in self._tail_ids.items() if not i]
                owned = self._owned
                tailed = [(s, i) for s, i in self._tail_ids.items() if i and s not in owned]
                if not new and not tailed:
                    assert self._tail_wake is not None
                    with contextlib.suppress(TimeoutError):
                        await _wait_event(self._tail_wake, 1.0)
                    self._tail_wake.clear()
                    continue
                # one pipeline per master: a cluster pipeline fails whole when one of
                # its masters does not answer, and that must not stall the others' tails
                groups: dict[str, list[tuple[int, str, bytes]]] = {}
                for n, s in enumerate(new):
                    groups.setdefault(self._node_of(self._meta_key(s)), []).append((n, s, b""))
                for n, (s, i) in enumerate(tailed, len(new)):
                    groups.setdefault(self._node_of(self._log_key(s)), []).append((n, s, i))

                async def run(items: list[tuple[int, str, bytes]]) -> list[Any]:
                    pipe = self._r.pipeline(transaction=False)
                    for _, s, i in items:
                        if i:
                            pipe.xread({self._log_key(s): i}, count=self.tail_count)
                        else:
                            pipe.hget(self._meta_key(s), "head")
                    got: list[Any] = await pipe.execute()
                    return got

                res: list[Any] = [_SKIP] * (len(new) + len(tailed))
                # a master down (the lease loop asks it every tick) is not polled, and
                # one slow to answer is not waited for more than TAIL_WAIT: the
                # streams on the other masters are tailed on
                masters = [m for m in groups if m not in self._down]
                answers = await self._unstalled(
                    masters, [run(groups[m]) for m in masters], self._tail_busy, TAIL_WAIT
                )
                failed: BaseException | None = None
                now = asyncio.get_running_loop().time()
                for master, got in zip(masters, answers, strict=True):
                    if isinstance(got, _Late):
                        continue
                    if isinstance(got, BaseException):
                        failed = got
                        if master and isinstance(got, _TRANSIENT):
                            self._down.setdefault(master, now)
                        continue
                    for j, (n, _, _) in enumerate(groups[master]):
                        res[n] = got[j]
                if failed is not None and not any(
                    not isinstance(got, BaseException) for got in answers
                ):  # no master answered
                    log.warning("redis tail failed, retrying: %r", failed)
                    await asyncio.sleep(random.uniform(backoff / 2, backoff))
                    backoff = min(backoff * 2, 1.0)
                else:
                    if failed is not None:  # (its streams are polled again once it answers)
                        log.debug("redis tail of one master failed: %r", failed)
                    backoff = 0.05
                for s, h in zip(new, res[: len(new)], strict=True):
                    if h is _SKIP:
                        continue
                    if self._tail_ids.get(s) == b"":
                        head = int(h) if h is not None else 0
                        self._tail_ids[s] = f"{head}-0".encode()
                        if head:
                            self._notify(s, head)
                for (s, i), got in zip(tailed, res[len(new) :], strict=True):
                    if got is _SKIP or self._tail_ids.get(s) != i:
                        continue  # unsubscribed or reset meanwhile
                    for _key, items in got or ():
                        if not items:
                            continue
                        eid, fields = items[-1]
                        self._tail_ids[s] = eid if isinstance(eid, bytes) else eid.encode()
                        self._notify(s, int(eid.split(b"-")[0]) + int(fields[b"n"]) - 1)
                assert self._tail_wake is not None
                self._tail_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await _wait_event(self._tail_wake, CLUSTER_POLL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("redis tail failed, retrying: %r", exc)
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, 1.0)

    # ------------------------------------------------------------ leases
    async def _lease_loop(self) -> None:
        """Renew this node's leases, end streams whose producer is lost, notice a
        new epoch (Redis lost its data) and streams dropped by retention."""
        period = max(self.lease / 5, 0.05)
        while not self._closed:
            await asyncio.sleep(period)
            # the claims' renewals run on their own: one sent to a master that does not
            # answer (seconds of redis-py retries) never delays the streams' leases
            if self._claiming:
                self._hold_claims()
            try:
                await self._lease_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis lease upkeep failed: %r", exc)

    def _hold_claims(self) -> None:
        """Start renewing the pending claims of the creates under way here, each in a
        task of its own (one still running from an earlier tick, its master slow or
        down, is not sent again). A claim taken more than ``outage_timeout`` + 5 s ago
        is no longer renewed: its creator is stuck (a create waits on Redis that long
        at most), the claim lapses and another start may take the req (the stuck
        creator, if it ever goes on, then loses at its confirm)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, since in list(self._claiming.items()):
            if now - since > self.outage_timeout + 5.0:
                del self._claiming[key]
                log.warning(
                    "create stuck for %.0fs: its claim is no longer renewed stream=%s",
                    now - since,
                    key[1],
                )
                continue
            busy = self._holding.get(key)
            if busy is not None and not busy.done():
                continue
            task = loop.create_task(self._hold_claim(*key))
            self._holding[key] = task
            task.add_done_callback(partial(self._held_claim, key))

    def _held_claim(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._holding.get(key) is task:
            del self._holding[key]

    async def _hold_claim(self, rkey: str, stream: str) -> None:
        """Renew one pending claim (on its own master); a failure is logged (the next
        tick tries again, and a claim not renewed only lapses: never wrong)."""
        try:
            await self._call(_HOLD_CLAIM, [rkey], [f"{PENDING}{stream}:", self._lease_ms])
        except _TRANSIENT as exc:
            log.info("renewing a create's claim failed stream=%s: %r", stream, exc)
        except Exception:
            log.exception("renewing a create's claim failed stream=%s", stream)

    async def _lease_tick(self) -> None:
        keep = self._running_keep_ms()
        tomb = keep + int(self.retention.tombstone_ttl * 1000)
        lease_ms = self._lease_ms
        owned = list(self._owned.items())
        watched = [s for s in self._listeners if s not in self._owned and s not in self._ending]
        # heads known before Redis is asked: a head read back lower means lost writes
        # (one read after this snapshot can only be higher, never a false alarm)
        appended = [self._appended.get(s, 0) for s, _ in owned]
        seen = [self._notified.get(s, -1) for s in watched]
        if self.is_cluster:
            res = await self._cluster_lease_reads(owned, watched, keep, tomb)
        else:
            pipe = self._r.pipeline(transaction=False)
            pipe.get(self._epoch_key)
            pipe.time()
            for s, token in owned:
                await self._renew_script(
                    keys=[self._meta_key(s), self._log_key(s), self._tomb_key(s)],
                    args=[token, lease_ms, keep, tomb],
                    client=pipe,
                )
            for s in watched:
                pipe.hmget(self._meta_key(s), ["status", "lease", "head"])
            res = await pipe.execute()
        ep, now = res[0], res[1]
        now_ms: int | None = None
        if not isinstance(ep, BaseException):  # (a cluster: the epoch's master answered)
            if ep is None or ep.decode() != self._epoch:
                await self._refresh_epoch(ep)
            now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        for (s, token), head, mine in zip(owned, res[2 : 2 + len(owned)], appended, strict=True):
            if isinstance(head, BaseException):  # its master did not answer: next time
                continue
            if int(head) < 0:
                if s in self._owned:
                    log.warning("lease lost stream=%s: another producer owns it or it ended", s)
                    self._disown(s)
            elif int(head) < mine and s not in self._diverging:
                self._spawn(self._diverged(s, token, int(head), mine))
        for s, got, was in zip(watched, res[2 + len(owned) :], seen, strict=True):
            if isinstance(got, BaseException):
                continue
            status, lease, head = got
            if status is None:
                self._notify(s, DROPPED)
                continue
            if int(head) < was:
                log.error(
                    "log lost events stream=%s head=%d seen=%d: readers told gone(diverged)",
                    s,
                    int(head),
                    was,
                )
                self._forget_seen(s)
                self._notify(s, DIVERGED)
            if status == b"running" and now_ms is not None and int(lease) < now_ms:
                self._ending.add(s)
                self._spawn(self._end_lost(s))

    def _node_of(self, key: str) -> str:
        """The name of the master serving ``key`` on a cluster ("" if not known yet:
        the cluster client finds out when the command is sent)."""
        try:
            return str(self._r.get_node_from_key(key).name)
        except Exception:
            return ""

    async def _cluster_lease_reads(
        self, owned: list[tuple[str, str]], watched: list[str], keep: int, tomb: int
    ) -> list[Any]:
        """The lease tick's commands on a cluster, as ``[epoch, time, renewals...,
        watched metas...]``: one pipeline per master, all at once, so a master that
        does not answer costs only its own streams this tick (an exception in their
        places; renewals are tried again next tick, long before a lease lapses), never
        another master's renewals. The clock is a keyed script (a cluster pipeline
        sends no ``TIME``) on the epoch's master."""
        groups: dict[str, list[tuple[int, Callable[[Any], Awaitable[Any]]]]] = {}
        out: list[Any] = [None] * (2 + len(owned) + len(watched))

        def put(slot: int, key: str, queue: Callable[[Any], Awaitable[Any]]) -> None:
            groups.setdefault(self._node_of(key), []).append((slot, queue))

        async def clock(pipe: Any) -> None:
            await self._clock_script(keys=[self._epoch_key], client=pipe)

        put(0, self._epoch_key, clock)
        for i, (s, token) in enumerate(owned):

            async def renew(pipe: Any, s: str = s, token: str = token) -> None:
                await self._renew_script(
                    keys=[self._meta_key(s), self._log_key(s), self._tomb_key(s)],
                    args=[token, self._lease_ms, keep, tomb],
                    client=pipe,
                )

            put(2 + i, self._meta_key(s), renew)
        for i, s in enumerate(watched):

            async def check(pipe: Any, s: str = s) -> None:
                pipe.hmget(self._meta_key(s), ["status", "lease", "head"])

            put(2 + len(owned) + i, self._meta_key(s), check)

        for master in list(self._down):  # masters down: asked again every tick
            groups.setdefault(master, [])

        async def run(
            master: str, items: list[tuple[int, Callable[[Any], Awaitable[Any]]]]
        ) -> list[Any]:
            if not items:
                node = self._r.get_node(node_name=master)
                if node is not None:  # (not in the slot map any more: forgotten)
                    await self._r.execute_command("PING", target_nodes=node)
                return []
            pipe = self._r.pipeline(transaction=False)
            for _, queue in items:
                await queue(pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            if any(isinstance(r, rex.NoScriptError) for r in results):
                # the master lost its scripts (a restart): loaded there for next time
                with contextlib.suppress(Exception):
                    await self._load_scripts([master], (_RENEW, _CLOCK))
            return results

        answers = await self._unstalled(list(groups), [run(m, b) for m, b in groups.items()])
        now = asyncio.get_running_loop().time()
        for master, got in zip(groups, answers, strict=True):
            if not master:
                continue
            # (a pipeline's own errors come in its answers)
            values = got if isinstance(got, list) else [got]
            if any(isinstance(v, _TRANSIENT) for v in values):  # down since the first such tick
                self._down.setdefault(master, now)
            elif not isinstance(got, BaseException):
                self._down.pop(master, None)
        for items, got in zip(groups.values(), answers, strict=True):
            for j, (slot, _) in enumerate(items):
                out[slot] = got if isinstance(got, BaseException) else got[j]
        if not isinstance(out[0], BaseException):
            ep = out[0][0] or None
            out[0], out[1] = ep, out[0][1:]
        else:
            out[1] = out[0]
        return out

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` (one of this module's) on its keys' master; one that lost it
        gets it loaded (on a cluster: that master only, see :meth:`_load_scripts`)."""
        sha = self._shas[script]
        try:
            return await self._r.evalsha(sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            master = self._node_of(keys[0]) if self.is_cluster else ""
            await self._load_scripts([master], (script,))
        try:
            return await self._r.evalsha(sha, len(keys), *keys, *args)
        except rex.NoScriptError:  # a slot mid-migration (ASK): on every master
            await self._load_scripts([""], (script,))
            return await self._r.evalsha(sha, len(keys), *keys, *args)

    async def _load_scripts(self, masters: list[str], scripts: Sequence[str]) -> None:
        """Load ``scripts`` on the masters named (a cluster) or, on one Redis, on it;
        a name ``""`` (not known): on every master. Not on every master otherwise:
        redis-py's ``SCRIPT LOAD`` goes to all and fails (after seconds of retries)
        while one of them is down."""
        nodes = [self._r.get_node(node_name=m) for m in masters if m] if self.is_cluster else []
        for script in scripts:
            if not self.is_cluster or not nodes or None in nodes or "" in masters:
                await self._r.script_load(script)
                continue
            await asyncio.gather(
                *(self._r.execute_command("SCRIPT LOAD", script, target_nodes=n) for n in nodes)
            )

    async def _unstalled(
        self,
        masters: list[str],
        runs: list[Coroutine[Any, Any, list[Any]]],
        busy_by: dict[str, asyncio.Future[list[Any]]] | None = None,
        wait: float | None = None,
    ) -> list[Any]:
        """Run each master's pipeline (the lease tick's, or the tail's with ``busy_by``);
        the answers (or errors) of those done within ``wait`` seconds (a renewal period). A
        master that does not answer in time (dead: redis-py's retries and topology
        refreshes take seconds to give up) counts as not answering this time, and gets
        no new pipeline while its last one runs: it never holds up the others."""
        busy_by = self._lease_busy if busy_by is None else busy_by
        tasks: list[asyncio.Future[list[Any]] | None] = []
        for master, run in zip(masters, runs, strict=True):
            busy = busy_by.get(master)
            if busy is not None and not busy.done():
                run.close()
                tasks.append(None)
                continue
            task = asyncio.ensure_future(run)
            task.add_done_callback(_retrieve)
            busy_by[master] = task
            tasks.append(task)
        started = [t for t in tasks if t is not None]
        if started:
            await asyncio.wait(started, timeout=wait or max(self.lease / 5, 0.05))
        out: list[Any] = []
        for t in tasks:
            if t is None or not t.done():
                out.append(_Late("its master has not answered the last pipeline"))
            elif t.cancelled():
                out.append(asyncio.CancelledError())
            else:
                exc = t.exception()
                out.append(exc if exc is not None else t.result())
        return out

    async def _end_as(self, stream: str, old: str, error: str) -> int | None:
        """Take ``stream`` over from producer ``old`` (``""``: from anyone whose lease
        expired), append its ``end`` event ``failed: <error>`` after the stored head and
        finish it. Returns the head it ended after, or ``None`` if the stream was not
        there to take (ended, or another producer's). One attempt: on failure the
        stream's lease lapses and a node tailing it ends it later."""
        token = secrets.token_hex(8)
        got = await self._call(_CLAIM, [self._meta_key(stream)], [token, self._lease_ms, old])
        if got[0] != 0:
            return None
        head, digest = int(got[1]), got[2]
        self._owned[stream] = token
        try:
            await self._append(stream, token, end_batch(head + 1, digest, "failed", error))
            await self.finish(stream, token, "failed", error, time.time())
        finally:
            self._disown(stream)
        return head

    async def _end_lost(self, stream: str) -> None:
        """Claim a stream whose producer's lease expired and end it ``failed: producer_lost``."""
        try:
            head = await self._end_as(stream, "", "producer_lost")
            if head is not None:
                log.warning("producer lost stream=%s head=%d: ended failed", stream, head)
        except Exception:
            log.exception("could not end stream=%s after producer loss", stream)
        finally:
            self._ending.discard(stream)

    def _forget_seen(self, stream: str) -> None:
        """Readers here are told the stream is gone: what this node saw of it is void."""
        self._notified.pop(stream, None)
        if stream in self._tail_ids:
            self._tail_ids[stream] = b""  # the tailer reads its head afresh

    async def _diverged(self, stream: str, token: str, head: int, appended: int) -> None:
        """Redis holds ``head`` events of ``stream`` but this node appended ``appended``:
        it lost acknowledged writes (restarted from an older snapshot, or failed over to
        a lagging replica). End the stream ``failed: diverged`` (a reader of the events
        it kept gets that end; a resume past them gets ``gone(diverged)``), tell readers
        here ``gone(diverged)``, and refuse the producer's next append (LogDiverged)."""
        if stream in self._diverging:
            return
        self._diverging.add(stream)
        log.error(
            "log lost events stream=%s head=%d appended=%d: ending it failed diverged",
            stream,
            head,
            appended,
        )
        self._disown(stream)  # no more renewals, whatever happens below
        self._lost[stream] = (head, appended)
        try:
            if await self._end_as(stream, token, "diverged") is None:
                log.warning("stream=%s already ended or taken over after lost writes", stream)
        except Exception as exc:
            log.warning(
                "could not end stream=%s after lost writes: %r; its lease lapses", stream, exc
            )
        finally:
            self._diverging.discard(stream)
            self._forget_seen(stream)
            self._notify(stream, DIVERGED)

    async def release(self, stream: str, producer: str, now: float) -> None:
        self._lost.pop(stream, None)
        if self._owned.get(stream) != producer:
            return  # ended, fenced out, or taken over already
        self._disown(stream)  # stop vouching for it: if the end below fails, the lease lapses
        try:
            head = await self._end_as(stream, producer, "producer_lost")
            if head is not None:
                log.warning("released stream=%s head=%d: ended failed producer_lost", stream, head)
        except Exception as exc:
            log.warning(
                "could not release stream=%s: %r; its lease lapses within %.1fs and a node "
                "tailing it ends it",
                stream,
                exc,
                self.lease,
            )

    # ------------------------------------------------------------ retention
    async def sweep(self, now: float) -> int:
        """Keys expire by themselves (TTL); readers of dropped streams are told by
        the lease loop. Nothing to do here."""
        self._ensure_tasks()
        return 0

    # ------------------------------------------------------------ inspection
    async def read_all(self, stream: str) -> tuple[str, Sequence[Event]]:
        """The epoch and every event held for ``stream`` (for checks and tests)."""
        out: list[Event] = []
        for _, f in await self._r.xrange(self._log_key(stream), "-", "+"):
            e = _Entry(f)
            for seq in range(e.first, e.last + 1):
                out.append(decode_one(seq, *e.record(seq)))
        return self._epoch, out

    async def read_digests(self, stream: str) -> Sequence[bytes]:
        """The chain digest after each event, recomputed from the stored events
        (checked against each entry's stored digest); for checks and tests."""
        out: list[bytes] = []
        for _, f in await self._r.xrange(self._log_key(stream), "-", "+"):
            e = _Entry(f)
            chain = Chain(e.p, e.first - 1)
            out.extend(chain_stored(chain, *e.record(seq)) for seq in range(e.first, e.last + 1))
            if chain.digest != e.d:
                raise ValueError(f"stream {stream}: entry {e.first} does not end on its digest")
        return out

    async def close(self) -> None:
        """Stop the tailer and the lease loop, and close the connections to Redis
        (all of them when the store was built from a URL: redis-py's ``aclose``
        leaves a pool it was given open). Idempotent; the store is not used after."""
        self._closed = True
        tasks = [*self._tasks, *self._side_tasks]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        for busy in [*self._lease_busy.values(), *self._tail_busy.values()]:
            busy.cancel()
        for hold in self._holding.values():
            hold.cancel()
        with contextlib.suppress(Exception):
            if self._own_client and not self.is_cluster:
                await self._r.aclose(close_connection_pool=True)
            else:
                await self._r.aclose()


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds`` (``TimeoutError`` past it).

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives
    as the event is set (it returns the result instead), and a loop around it then
    never ends, e.g. a worker's tailer cancelled at shutdown kept its process alive."""
    async with asyncio.timeout(seconds):
        await event.wait()


class _Late(Exception):
    """A lease pipeline not answered within its tick (not known failed: maybe slow)."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A lease pipeline's outcome, read when it ends (maybe after its tick gave up on it)."""
    if not task.cancelled():
        task.exception()


def _out_of_memory(exc: rex.ResponseError) -> bool:
    """Redis refused a write at ``maxmemory`` (redis-py maps ``OOM`` to its own class)."""
    return isinstance(exc, rex.OutOfMemoryError) or str(exc).startswith("OOM")


def _items(entries: list[_Entry], first: int, last: int) -> tuple[bytes, int]:
    """The ``items`` JSON array of events ``first..last`` (see MemoryStore.items)."""
    segments: list[Segment] = []
    for e in entries:
        lo, hi = max(first, e.first), min(last, e.last)
        if lo > hi:
            continue
        runs = e.runs
        r = e.run_at(lo)
        seq = lo
        while seq <= hi:
            run_end = runs[r + 1][0] - 1 if r + 1 < len(runs) else e.last
            seg_end = min(run_end, hi)
            _, kind, part = runs[r]
            a = e.start(seq)
            b = e.ends[seg_end - e.first] - (seg_end == last)  # no comma after the last item
            segments.append((kind, part, e.items, a, e.ends[seq - e.first], b))
            seq = seg_end + 1
            r += 1
    return items_array(segments)
