"""The prefix index shared through a real redis-server (`scheduler.store: redis`)."""

import time
import uuid

import redis.asyncio as aioredis

from gateway.scheduling.prefix import BLOCK_BYTES, REUSE_HORIZON, Holding, block_hashes
from gateway.scheduling.shared import RedisPrefixIndex


async def test_a_prefix_recorded_by_one_replica_is_held_for_another_with_what_it_would_evict(redis_url):
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    mine, other = RedisPrefixIndex(redis_url, prefix=prefix), RedisPrefixIndex(redis_url, prefix=prefix)
    system = block_hashes("s" * (6 * BLOCK_BYTES))
    await mine.remember("a/m", system, 8)
    turn = block_hashes("s" * (6 * BLOCK_BYTES) + "t" * (4 * BLOCK_BYTES))
    # 6 held + 4 new in an 8-block cache: 2 recently used blocks pushed out.
    assert await other.lookup(["a/m", "b/m"], turn, [8, None]) == [Holding(6, 2, 6 / 8), Holding()]
    unrelated = block_hashes("u" * (4 * BLOCK_BYTES))
    assert await other.lookup(["a/m"], unrelated, [8]) == [Holding(0, 2, 6 / 8)]
    # Blocks served longer than REUSE_HORIZON ago are room, not loss.
    client = aioredis.Redis.from_url(redis_url)
    long_ago = (time.time() - REUSE_HORIZON - 5) * 1000
    await client.zadd(prefix + "a/m", {block: long_ago for block in system})
    assert await other.lookup(["a/m"], unrelated, [8]) == [Holding(0, 0, 6 / 8)]
    await client.aclose()
    await mine.close()
    await other.close()
