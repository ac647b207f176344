"""Capacity ledgers: how many requests turnout has in flight on each backend,
and whether one more may start there (SPEC §4b, `scheduler.store`).

- MemorySlots counts in this process. With N worker processes each holds its
  share of a backend's capacity: max(1, capacity // N).
- RedisSlots keeps one sorted set of leases per backend in Redis (member: a
  random lease id, score: its expiry in Redis's own clock), so the workers and
  replicas sharing that Redis never hold more than the capacity together. A
  Lua script drops expired leases and adds one only below the limit, in one
  step. Held leases are renewed every `ttl / 3`; a process that dies stops
  renewing and its leases expire after `ttl`, so none leaks. When Redis cannot
  be reached the ledger fails open to this process's own count against the
  whole capacity (serving beats refusing; the log says so once).

Either way a lease released while a local request waits is handed to it
directly (the scheduler's FIFO queue) instead of being freed, so a newcomer
cannot overtake the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger("turnout")
REDIS_TIMEOUT = 0.5  # seconds: past it the ledger fails open rather than stall admission


@dataclass(eq=False, slots=True)
class Lease:
    backend: str
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    shared: bool = False


class MemorySlots:
    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._held: Counter[str] = Counter()

    def limit(self, capacity: int | None) -> int | None:
        return None if capacity is None else max(1, capacity // self._workers)

    def held(self, backend: str) -> int:
        return self._held[backend]

    async def acquire(self, backend: str, capacity: int | None) -> Lease | None:
        limit = self.limit(capacity)
        if limit is not None and self._held[backend] >= limit:
            return None
        self._held[backend] += 1
        return Lease(backend)

    async def release(self, lease: Lease) -> None:
        self._held[lease.backend] -= 1

    async def refresh(self, backends: list[str]) -> None:
        pass

    async def close(self) -> None:
        pass


_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# Plain ZADD, not XX: after a Redis restart (or flush) the leases still in use are put back.
_RENEW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 0
"""

_COUNT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], ms, '+inf')
"""


class RedisSlots:
    def __init__(self, url: str, ttl: float = 15.0, prefix: str = "turnout:lease:") -> None:
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._count = self._redis.register_script(_COUNT)
        self._leases: dict[str, set[str]] = {}
        self._held: Counter[str] = Counter()
        self._cluster: dict[str, tuple[int, int]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._warned = False

    def limit(self, capacity: int | None) -> int | None:
        return capacity

    def held(self, backend: str) -> int:
        """Leases on `backend` held by every process, as of the last
        `refresh`, moved by this process's own since."""
        count, local_then = self._cluster.get(backend, (0, 0))
        return max(self._held[backend], count + self._held[backend] - local_then)

    async def refresh(self, backends: list[str]) -> None:
        """Reads the cluster-wide lease counts (the scheduler's poll)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for backend in backends:
                    await self._count(keys=[self._prefix + backend], client=pipe)
                counts = await pipe.execute()
        except redis.exceptions.RedisError as exc:
            self._fail_open(exc)
            return
        for backend, count in zip(backends, counts, strict=True):
            self._cluster[backend] = (int(count), self._held[backend])

    async def acquire(self, backend: str, capacity: int | None) -> Lease | None:
        if capacity is None:
            self._held[backend] += 1
            return Lease(backend)
        lease = Lease(backend, shared=True)
        try:
            granted = await self._acquire(keys=[self._prefix + backend], args=[capacity, lease.id, self._ttl_ms])
        except redis.exceptions.RedisError as exc:
            self._fail_open(exc)
            if self._held[backend] >= capacity:
                return None
            lease.shared = False
            granted = 1
        if not granted:
            return None
        self._held[backend] += 1
        if lease.shared:
            self._leases.setdefault(backend, set()).add(lease.id)
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew_forever())
        return lease

    async def release(self, lease: Lease) -> None:
        self._held[lease.backend] -= 1
        if not lease.shared:
            return
        self._leases.get(lease.backend, set()).discard(lease.id)
        try:
            await self._redis.zrem(self._prefix + lease.backend, lease.id)
        except redis.exceptions.RedisError as exc:
            self._fail_open(exc)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            await self.renew()

    async def renew(self) -> None:
        """Extends every lease this process holds (re-adding any Redis lost)."""
        for backend, ids in list(self._leases.items()):
            if not ids:
                continue
            try:
                await self._renew(keys=[self._prefix + backend], args=[self._ttl_ms, *ids])
            except redis.exceptions.RedisError as exc:
                self._fail_open(exc)

    def _fail_open(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("scheduler store (redis) unreachable, counting capacity in this process only: %s",
                        type(exc).__name__)
            self._warned = True

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(redis.exceptions.RedisError):
            for backend, ids in self._leases.items():
                if ids:
                    await self._redis.zrem(self._prefix + backend, *ids)
        await self._redis.aclose(close_connection_pool=True)
