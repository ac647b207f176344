"""ListRoutes: the configured routes as the caller can use them (name,
strategy, targets, the rules leading to each, the default). Built once from
the config, which is immutable."""

from __future__ import annotations

from gateway.config import Config
from turnout.v1 import model_pb2


def describe_routes(config: Config) -> model_pb2.ListRoutesResponse:
    default = config.default_route or next((r.name for r in config.routes), "")
    routes = []
    for route in config.routes:
        rules = [
            model_pb2.RouteRule(task=rule.task or "", match=rule.match.pattern if rule.match else "")
            for rule in config.rules
            if rule.route == route.name
        ]
        targets = [
            model_pb2.RouteTarget(backend=t.backend, model=t.model, weight=t.weight, priority=t.priority)
            for t in route.targets
        ]
        routes.append(model_pb2.Route(
            name=route.name, strategy=route.strategy, targets=targets, rules=rules,
            attempts=route.retry.attempts, affinity=route.affinity, is_default=route.name == default,
        ))
    return model_pb2.ListRoutesResponse(routes=routes)
