"""A session store in Redis, shared by several gateway replicas.

Usage: `store = RedisStore("redis://host:6379/0", limits, clock, prefix="turnout:")`
(connects lazily), then `await store.close()`, which closes the connection pool.
Needs a standalone Redis (or Sentinel); Redis Cluster is not supported, because
the scripts touch the per-owner index that they name from the stored owner.

Keys, under `prefix`:
    session:<id>   hash: system_prompt, metadata (JSON), owner, times, last_seq, ttl
    frames:<id>    list: frame seq N is element N-1, one JSON object each
    sessions       sorted set of ids by update time, for list_sessions()
    owner:<owner>  the same, per owner
    watch:<id>     pub/sub channel; an append publishes the new last_seq
The session's keys expire its own `ttl` (stored in the hash at creation) after
its last write (Redis expiry). Index members whose session has expired are
pruned when list_sessions() meets them.

Seqs are assigned inside Redis by one Lua script per append (check
expected_seq and max_frames, push the frames, bump last_seq, renew expiry,
index, publish), so concurrent appends from any number of processes are
gap-free and all-or-nothing. A watcher subscribes first, then reads the stored
frames after its seq, then reads again by seq range on every notification, so
it never misses or repeats a frame.

A connection failure or timeout in any call raises StoreUnavailable, whose
message names the server's host and port but never the URL's password.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from typing import AsyncIterator, Callable, Iterator, Mapping, Sequence

import redis.asyncio as aioredis
import redis.exceptions

from gateway.errors import AlreadyExists, StoreUnavailable
from gateway.sessions import codec
from gateway.sessions.store import FrameRecord, NewFrame, SessionRecord, StoreLimits

# ARGV: id, system_prompt, metadata, owner, now, expire_time, ttl_ms, owner prefix, ttl (s)
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'system_prompt', ARGV[2], 'metadata', ARGV[3], 'owner', ARGV[4],
    'create_time', ARGV[5], 'update_time', ARGV[5], 'expire_time', ARGV[6], 'last_seq', 0, 'ttl', ARGV[9])
if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[4] ~= '' then redis.call('ZADD', ARGV[8] .. ARGV[4], ARGV[5], ARGV[1]) end
return 1
"""

# ARGV: id, now, ttl_if_created (s), expected_seq or '', max_frames, owner, owner prefix, channel, frames...
# Renews expiry by the session's own stored ttl; expire_time is written with 17 digits to round-trip.
_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '-1')
local exists = last >= 0
if not exists then last = 0 end
local n = #ARGV - 8
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= last then return {0, last} end
if last + n > tonumber(ARGV[5]) then return {0, last} end
local owner = ARGV[6]
if exists then
    owner = redis.call('HGET', KEYS[1], 'owner')
else
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'system_prompt', '', 'metadata', '{}', 'owner', owner, 'create_time', ARGV[2],
        'ttl', ARGV[3])
end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
local expire_time = 0
if ttl > 0 then expire_time = tonumber(ARGV[2]) + ttl end
for i = 9, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'update_time', ARGV[2], 'expire_time', string.format('%.17g', expire_time),
    'last_seq', last + n)
if ttl > 0 then
    local ms = math.max(math.floor(ttl * 1000 + 0.5), 1)
    redis.call('PEXPIRE', KEYS[1], ms)
    redis.call('PEXPIRE', KEYS[2], ms)
else
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if owner ~= '' then redis.call('ZADD', ARGV[7] .. owner, ARGV[2], ARGV[1]) end
redis.call('PUBLISH', ARGV[8], last + n)
return {1, last}
"""

_DELETE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if owner ~= '' then redis.call('ZREM', ARGV[2] .. owner, ARGV[1]) end
redis.call('PUBLISH', ARGV[3], 'deleted')
return 1
"""

# Removes the ids in ARGV[2..] whose session hash (ARGV[1] .. id) is gone from the index KEYS[1].
_PRUNE = """
for i = 2, #ARGV do
    if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 0
"""

_SIGNAL_WAIT = 1.0  # seconds between re-reads when no notification comes (a safety net)


def _record(session_id: str, fields: Mapping[str, str]) -> SessionRecord:
    return SessionRecord(
        id=session_id, system_prompt=fields["system_prompt"], metadata=json.loads(fields["metadata"]),
        create_time=float(fields["create_time"]), update_time=float(fields["update_time"]),
        expire_time=float(fields["expire_time"]), last_seq=int(fields["last_seq"]), owner=fields["owner"],
    )


class RedisStore:
    """Implements gateway.sessions.store.SessionStore on the Redis server at `url`."""

    def __init__(
        self, url: str, limits: StoreLimits = StoreLimits(), clock: Callable[[], float] = time.time,
        prefix: str = "turnout:",
    ) -> None:
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._where = f"session store (redis at {_location(url)})"
        self._limits = limits
        self._clock = clock
        self._prefix = prefix
        self._create = self._redis.register_script(_CREATE)
        self._append = self._redis.register_script(_APPEND)
        self._delete = self._redis.register_script(_DELETE)
        self._prune = self._redis.register_script(_PRUNE)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def create(
        self, session_id: str, system_prompt: str, metadata: Mapping[str, str], ttl: float, owner: str = ""
    ) -> SessionRecord:
        session_id = codec.new_session_id(session_id)
        now = self._clock()
        args = [session_id, system_prompt, codec.metadata_to_json(metadata), owner, repr(now),
                repr(codec.expire_time(now, ttl)), _ms(ttl), self._key("owner:"), repr(ttl)]
        with self._reachable():
            created = await self._create(keys=self._keys(session_id), args=args)
        if not created:
            raise AlreadyExists(f"session {session_id!r} already exists; choose another id or leave it empty")
        return SessionRecord(
            id=session_id, system_prompt=system_prompt, metadata=dict(metadata), create_time=now,
            update_time=now, expire_time=codec.expire_time(now, ttl), owner=owner,
        )

    async def get(self, session_id: str) -> SessionRecord:
        with self._reachable():
            fields = await self._redis.hgetall(self._key("session:", session_id))
        if not fields:
            raise codec.not_found(session_id)
        return _record(session_id, fields)

    async def delete(self, session_id: str) -> None:
        args = [session_id, self._key("owner:"), self._key("watch:", session_id)]
        with self._reachable():
            deleted = await self._delete(keys=self._keys(session_id), args=args)
        if not deleted:
            raise codec.not_found(session_id)

    async def list_sessions(self, page_size: int, page_token: str, owner: str = "") -> tuple[list[SessionRecord], str]:
        size = codec.page_size(page_size, self._limits)
        offset = codec.offset_page(page_token)
        index = self._key("owner:", owner) if owner else self._key("sessions")
        with self._reachable():
            while True:
                ids = await self._redis.zrevrange(index, offset, offset + size)
                pipe = self._redis.pipeline(transaction=False)
                for session_id in ids:
                    pipe.hgetall(self._key("session:", session_id))
                headers = await pipe.execute()
                gone = [i for i, fields in zip(ids, headers, strict=True) if not fields]
                if not gone:
                    break
                await self._prune(keys=[index], args=[self._key("session:"), *gone])
        records = [_record(i, fields) for i, fields in zip(ids, headers, strict=True)]
        return records[:size], codec.next_offset_token(offset, size, len(records) > size)

    async def append(
        self, session_id: str, frames: Sequence[NewFrame], ttl_if_created: float,
        expected_seq: int | None = None, owner: str = "",
    ) -> list[FrameRecord]:
        now = self._clock()
        args = [
            session_id, repr(now), repr(ttl_if_created),
            "" if expected_seq is None else str(expected_seq), str(self._limits.max_frames), owner,
            self._key("owner:"), self._key("watch:", session_id),
            *(codec.frame_to_json(frame, now) for frame in frames),
        ]
        with self._reachable():
            ok, last_seq = await self._append(keys=self._keys(session_id), args=args)
        if not ok:
            codec.check_append(session_id, last_seq, len(frames), expected_seq, self._limits)
            raise RuntimeError(f"the append script refused session {session_id!r} at seq {last_seq}")
        return [codec.record_frame(last_seq + i, frame, now) for i, frame in enumerate(frames, start=1)]

    async def list_frames(
        self, session_id: str, from_seq: int, newest_first: bool, page_size: int, page_token: str
    ) -> tuple[list[FrameRecord], str]:
        size = codec.page_size(page_size, self._limits)
        with self._reachable():
            last_seq = await self._redis.hget(self._key("session:", session_id), "last_seq")
        if last_seq is None:
            raise codec.not_found(session_id)
        window = codec.frame_window(int(last_seq), from_seq, newest_first, size, page_token)
        page: list[FrameRecord] = []
        if window.lo <= window.hi:
            with self._reachable():
                bodies = await self._redis.lrange(self._key("frames:", session_id), window.lo - 1, window.hi - 1)
            page = [codec.frame_from_json(window.lo + i, body) for i, body in enumerate(bodies)]
        return (page[::-1] if newest_first else page), window.next_token

    async def watch(self, session_id: str, after_seq: int) -> AsyncIterator[FrameRecord]:
        batch = self._limits.max_page_size
        with self._reachable():
            async with self._redis.pubsub() as pubsub:
                await pubsub.subscribe(self._key("watch:", session_id))
                await _confirmed(pubsub)
                last = after_seq
                while True:
                    frames = await self._frames_after(session_id, last, batch)
                    for frame in frames:
                        last = frame.seq
                        yield frame
                    if len(frames) < batch:
                        await _next_signal(pubsub)

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Every Redis call runs inside this: a lost or refused connection, or a
        timeout, becomes StoreUnavailable (the message never has the password)."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(
                f"{self._where} is unreachable: {type(exc).__name__}; check that Redis is running there"
                " and that sessions.redis_url is right"
            ) from exc

    async def _frames_after(self, session_id: str, after_seq: int, limit: int) -> list[FrameRecord]:
        pipe = self._redis.pipeline(transaction=True)
        pipe.exists(self._key("session:", session_id))
        pipe.lrange(self._key("frames:", session_id), after_seq, after_seq + limit - 1)
        exists, bodies = await pipe.execute()
        if not exists:
            raise codec.not_found(session_id)
        return [codec.frame_from_json(after_seq + 1 + i, body) for i, body in enumerate(bodies)]

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self._prefix}{kind}{name}"

    def _keys(self, session_id: str) -> list[str]:
        return [self._key("session:", session_id), self._key("frames:", session_id), self._key("sessions")]


def _location(url: str) -> str:
    """Where `url` points, without its credentials: host:port, or a unix socket's path."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def _ms(seconds: float) -> str:
    """A TTL in whole milliseconds for PEXPIRE; "0" (never expire) when seconds <= 0."""
    return str(max(round(seconds * 1000), 1)) if seconds > 0 else "0"


async def _confirmed(pubsub: aioredis.client.PubSub) -> None:
    """Waits until Redis confirms the subscription, so no later publish is missed."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=deadline - time.monotonic())
        if message is not None and message["type"] == "subscribe":
            return
    raise redis.exceptions.TimeoutError("Redis did not confirm the watch subscription within 5 s")


async def _next_signal(pubsub: aioredis.client.PubSub) -> None:
    """Waits for a notification (or the safety-net interval), then drains the others."""
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_SIGNAL_WAIT)
    while message is not None:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
