"""Load-balancing strategies. Each picks one target from candidates that are
already filtered to one priority tier and to what may be tried; "nothing to
pick" is None, never an exception.

- SmoothWeightedRoundRobin is nginx's smooth weighted round-robin
  (ngx_http_upstream_get_peer): on every pick each candidate's current weight
  grows by its weight, the largest current weight wins and is lowered by the
  sum of the weights. In every window of sum(weights) picks over a stable set
  each target is picked exactly `weight` times, interleaved (weights 5,1,1 give
  a a b a c a a, never a a a a a b c). State is kept per target key, so targets
  leaving and returning, or weights changing, only shift the sequence.
- LeastUsed picks the fewest in-flight requests relative to weight
  (in_flight / weight), ties broken round-robin, as Envoy's least-request
  balancer does with all weights equal.
- PriorityOrder is strict preference in list order.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from gateway.routing.state import Target


class Strategy(Protocol):
    def pick(self, candidates: Sequence[Target]) -> Target | None: ...


class SmoothWeightedRoundRobin:
    def __init__(self) -> None:
        self._current: dict[Target, int] = {}

    def pick(self, candidates: Sequence[Target]) -> Target | None:
        if not candidates:
            return None
        total = 0
        best: Target | None = None
        for target in candidates:
            current = self._current.get(target, 0) + target.weight
            self._current[target] = current
            total += target.weight
            if best is None or current > self._current[best]:
                best = target
        assert best is not None
        self._current[best] -= total
        return best


class LeastUsed:
    def __init__(self, in_flight: Callable[[Target], int]) -> None:
        self._in_flight = in_flight
        self._next = 0

    def pick(self, candidates: Sequence[Target]) -> Target | None:
        if not candidates:
            return None
        start = self._next % len(candidates)
        rotated = list(candidates[start:]) + list(candidates[:start])
        best = min(rotated, key=lambda t: self._in_flight(t) / t.weight)
        self._next = start + 1
        return best


class PriorityOrder:
    def pick(self, candidates: Sequence[Target]) -> Target | None:
        return candidates[0] if candidates else None
