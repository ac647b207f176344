"""Targets and the live state of each backend: in-flight, totals, health,
outlier ejection.

A Target is (backend, upstream model, weight, priority): frozen and hashable,
so strategies can key their state by it. Its `options` (the config's backend
option defaults, the route's merged with the target's) take no part in that. BackendState is the only mutable
routing state. It is pure: every method that depends on time takes `now`
(monotonic seconds), so tests drive it with a fake clock.

Outlier ejection (after Envoy's consecutive-5xx detector): `consecutive`
failures in a row eject the backend for base * 2^(n-1) seconds, capped at
`max_ejection`, where n counts the ejections that followed each other with
less than `max_ejection` of good behaviour in between. An upstream's
Retry-After also keeps the backend out until then. An ejected backend returns
by itself when its time is up; a failed health probe marks it DOWN until a
probe succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    model: str
    weight: int = 1
    priority: int = 0
    first_token_timeout: float | None = None
    options: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 3
    base_ejection: float = 10.0
    max_ejection: float = 300.0


class Health(Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    EJECTED = "ejected"
    DOWN = "down"


class BackendState:
    LATENCY_SMOOTHING = 0.2

    def __init__(self, name: str, policy: OutlierPolicy = OutlierPolicy()) -> None:
        self.name = name
        self.policy = policy
        self.in_flight = 0
        self.requests_total = 0
        self.errors_total = 0
        self.latency_estimate: float | None = None
        self.probed_up: bool | None = None
        self.ejected_until = 0.0
        self.ejections = 0
        self._consecutive = 0

    def health(self, now: float) -> Health:
        if self.probed_up is False:
            return Health.DOWN
        if now < self.ejected_until:
            return Health.EJECTED
        return Health.UNKNOWN if self.probed_up is None else Health.HEALTHY

    def available(self, now: float) -> bool:
        return self.health(now) in (Health.HEALTHY, Health.UNKNOWN)

    def begin(self) -> None:
        self.in_flight += 1
        self.requests_total += 1

    def end(self) -> None:
        self.in_flight -= 1

    def record_success(self, time_to_first_token: float) -> None:
        self._consecutive = 0
        if self.latency_estimate is None:
            self.latency_estimate = time_to_first_token
        else:
            a = self.LATENCY_SMOOTHING
            self.latency_estimate = a * time_to_first_token + (1 - a) * self.latency_estimate

    def record_failure(self, now: float, counts: bool = True, retry_after: float | None = None) -> bool:
        """Counts a failed attempt; `counts` says whether it speaks of the
        backend's health (not for a missing model or a rejected request).
        Returns True when this failure ejected the backend."""
        self.errors_total += 1
        if retry_after is not None:
            self.ejected_until = max(self.ejected_until, now + retry_after)
        if not counts:
            return False
        self._consecutive += 1
        if self._consecutive < self.policy.consecutive_failures or now < self.ejected_until:
            return False
        if now - self.ejected_until > self.policy.max_ejection:
            self.ejections = 0
        self.ejections += 1
        cooldown = min(self.policy.base_ejection * 2 ** (self.ejections - 1), self.policy.max_ejection)
        self.ejected_until = now + cooldown
        self._consecutive = 0
        return True

    def record_probe(self, up: bool) -> None:
        self.probed_up = up
