"""Capacity leases in a real redis-server (`scheduler.store: redis`)."""

import uuid

import redis.asyncio as aioredis

from gateway.scheduling.slots import RedisSlots


def ledgers(redis_url: str, ttl: float = 5.0) -> tuple[RedisSlots, RedisSlots, str]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    return RedisSlots(redis_url, ttl, prefix), RedisSlots(redis_url, ttl, prefix), prefix


async def test_two_ledgers_never_hold_more_than_the_capacity_together(redis_url):
    mine, other, _ = ledgers(redis_url)
    held = [await mine.acquire("a", 3), await other.acquire("a", 3), await mine.acquire("a", 3)]
    assert all(held) and await other.acquire("a", 3) is None
    await mine.release(held[0])
    assert await other.acquire("a", 3) is not None
    await mine.close()
    await other.close()


async def test_counts_held_by_other_processes_are_seen_after_a_refresh(redis_url):
    mine, other, _ = ledgers(redis_url)
    await other.acquire("a", 4)
    await other.acquire("a", 4)
    assert mine.held("a") == 0
    await mine.refresh(["a"])
    lease = await mine.acquire("a", 4)
    assert mine.held("a") == 3
    await mine.release(lease)
    assert mine.held("a") == 2
    await mine.close()
    await other.close()


async def test_leases_in_use_are_put_back_after_redis_lost_them(redis_url):
    mine, other, prefix = ledgers(redis_url, ttl=1.0)
    assert await mine.acquire("a", 1) is not None
    client = aioredis.Redis.from_url(redis_url)
    await client.delete(prefix + "a")  # what a restart of a Redis without persistence does
    await mine.renew()
    assert await other.acquire("a", 1) is None
    await client.aclose()
    await mine.close()
    await other.close()
