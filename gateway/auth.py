"""API keys: who is calling, and what they may do. Pure; the gRPC side is
gateway/guard.py.

Keys are held as SHA-256 digests only. A presented key is hashed and compared
with every configured digest using hmac.compare_digest, without stopping at
the first match, so the time taken says nothing about which key, or which
prefix, matched.

Each key has a name (a log field and a metric label), the routes it may use
(None: all), whether it may call admin methods, and optional limits: at most
`max_concurrent_streams` generations at once and `requests_per_minute`
generations per minute (a token bucket that holds a minute's worth).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: bytes = field(repr=False)
    routes: frozenset[str] | None = None
    admin: bool = False
    max_concurrent_streams: int | None = None
    requests_per_minute: int | None = None

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


CURRENT_KEY: contextvars.ContextVar[ApiKey | None] = contextvars.ContextVar("turnout_api_key", default=None)


def current_key() -> ApiKey | None:
    """The key of the call being served; None when auth is off."""
    return CURRENT_KEY.get()


def owner() -> str:
    """The session owner for the call being served: the key's name, or ""."""
    key = CURRENT_KEY.get()
    return key.name if key else ""


class KeyRing:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str) -> ApiKey | None:
        wanted = digest(presented)
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found


class Limiter:
    """Per-key admission for generations: concurrency and a requests-per-minute
    token bucket. `admit` returns None when admitted (call `release` when the
    generation ends), else the seconds after which a retry may succeed."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, key: ApiKey, now: float) -> float | None:
        if key.max_concurrent_streams is not None and self._in_flight.get(key.name, 0) >= key.max_concurrent_streams:
            return 1.0
        if key.requests_per_minute is not None:
            rate = key.requests_per_minute / 60.0
            tokens, then = self._buckets.get(key.name, (float(key.requests_per_minute), now))
            tokens = min(float(key.requests_per_minute), tokens + (now - then) * rate)
            if tokens < 1.0:
                self._buckets[key.name] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[key.name] = (tokens - 1.0, now)
        self._in_flight[key.name] = self._in_flight.get(key.name, 0) + 1
        return None

    def release(self, key: ApiKey) -> None:
        self._in_flight[key.name] -= 1
