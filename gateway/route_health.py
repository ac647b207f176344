"""`turnout_route_healthy_targets{route}`: how many of each configured
route's targets are on a backend that takes traffic now (its last probe
succeeded and it is not ejected). Set after every health probe; a route at 0
can only fail or run in panic mode, which the TurnoutRouteWithoutHealthyTarget
alert pages on."""

from __future__ import annotations

from typing import Mapping, Sequence

from prometheus_client import Gauge

from gateway.config import RouteConfig
from gateway.routing.state import BackendState, Health


def record_route_health(
    gauge: Gauge, routes: Sequence[RouteConfig], states: Mapping[str, BackendState], now: float
) -> None:
    for route in routes:
        healthy = sum(states[t.backend].health(now) is Health.HEALTHY for t in route.targets)
        gauge.labels(route.name).set(healthy)
