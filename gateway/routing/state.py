"""Targets and the live state of each backend (in-flight, totals, health).

A Target is (backend, upstream model, weight, priority): frozen and hashable,
so strategies can key their state by it. BackendState is the only mutable
routing state; the dispatcher updates it through `begin`/`end`, which pair
exactly once per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    model: str
    weight: int = 1
    priority: int = 0


class BackendState:
    """Counters and health of one backend. `healthy` is None until the first
    probe or attempt tells."""

    LATENCY_SMOOTHING = 0.2

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0
        self.requests_total = 0
        self.errors_total = 0
        self.healthy: bool | None = None
        self.latency_estimate: float | None = None

    @property
    def available(self) -> bool:
        return self.healthy is not False

    def begin(self) -> None:
        self.in_flight += 1
        self.requests_total += 1

    def end(self) -> None:
        self.in_flight -= 1

    def record_success(self, time_to_first_token: float) -> None:
        self.healthy = True
        if self.latency_estimate is None:
            self.latency_estimate = time_to_first_token
        else:
            a = self.LATENCY_SMOOTHING
            self.latency_estimate = a * time_to_first_token + (1 - a) * self.latency_estimate

    def record_failure(self, backend_down: bool) -> None:
        self.errors_total += 1
        if backend_down:
            self.healthy = False
