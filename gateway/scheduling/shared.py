"""The prefix index shared through Redis (`scheduler.store: redis`), so every
worker and replica knows which backend holds which prompt prefix.

One sorted set per endpoint (backend/model): members are block hashes, scores
the time they were last served, with a prompt's first blocks scored highest
so they are forgotten last (as PrefixIndex does). A lookup for all candidate
endpoints is one pipelined round trip of ZMSCORE, ZCARD and ZCOUNT of the
blocks idle for REUSE_HORIZON (what a prompt would evict, as PrefixIndex
says); recording is ZADD then a trim to `blocks_per_endpoint`. Redis trouble never fails a request: a lookup
then finds nothing and a record is dropped (logged once).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import redis.asyncio as aioredis
import redis.exceptions

from gateway.scheduling.prefix import REUSE_HORIZON, Holding, assess
from gateway.scheduling.slots import REDIS_TIMEOUT

log = logging.getLogger("turnout")
KEEP_FOR_MS = 86_400_000


class RedisPrefixIndex:
    def __init__(self, url: str, blocks_per_endpoint: int = 65_536, prefix: str = "turnout:prefix:") -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self._capacity = blocks_per_endpoint
        self._prefix = prefix
        self._warned = False

    async def lookup(
        self, keys: Sequence[str], hashes: Sequence[bytes], capacities: Sequence[int | None] | None = None
    ) -> list[Holding]:
        if not hashes:
            return [Holding()] * len(keys)
        cutoff = (time.time() - REUSE_HORIZON) * 1000
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zmscore(self._prefix + key, list(hashes))
                    pipe.zcard(self._prefix + key)
                    pipe.zcount(self._prefix + key, "-inf", cutoff)
                replies = await pipe.execute()
        except redis.exceptions.RedisError as exc:
            self._fail(exc)
            return [Holding()] * len(keys)
        holdings = []
        for n, capacity in enumerate(capacities or [None] * len(keys)):
            found, held, idle = replies[3 * n:3 * n + 3]
            cached = 0
            for score in found:
                if score is None:
                    break
                cached += 1
            holdings.append(assess(cached, held, len(hashes) - cached, idle, capacity, self._capacity))
        return holdings

    async def remember(self, key: str, hashes: Sequence[bytes], capacity: int | None = None) -> None:
        if not hashes:
            return
        now = time.time() * 1000
        name = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(name, {block: now + (len(hashes) - i) / 1000 for i, block in enumerate(hashes)})
                pipe.zremrangebyrank(name, 0, -(capacity or self._capacity) - 1)
                pipe.pexpire(name, KEEP_FOR_MS)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("prefix index (redis) unreachable, scheduling without it: %s", type(exc).__name__)
            self._warned = True

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
