"""Route resolution and attempt planning.

`Router.resolve` turns a request's `model` into a Route, in SPEC order: a
route of that name; a rule (by task, or a regular expression on the last user
message) naming a route; for an empty model, the default route (`default_route`, else the
first configured route, else the first model discovered on the most preferred
backend that is not an embedding model, so the embedded default config answers
`turnout chat "hi"`); an implicit route over every backend serving a model of
that name; else NotFound listing what exists (NoTargetAvailable, naming them,
when some backends could not be listed: the model may be there).

`Plan` hands out the targets each attempt may use, up to the route's attempt
limit: the session's pinned target first when the route has affinity and it is
available; otherwise the first non-empty pool of (available untried targets,
available targets, untried targets, all targets). The last two pools are
panic mode (as in Envoy): when everything is ejected or down, try anyway
rather than fail without trying. The scheduler (gateway/scheduling) takes the
best (lowest) priority tier of the pool, capacity and the route's strategy
within it; `take` records the target it chose.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from gateway.catalog import Catalog, is_embedding_model
from gateway.config import (
    BackendConfig, QueueConfig, RetryConfig, RouteConfig, RuleConfig, SpillConfig, redact_url,
)
from gateway.errors import InvalidRequest, NoTargetAvailable, NotFound, TurnoutError
from gateway.routing.state import BackendState, Target
from gateway.routing.strategies import Strategy

StrategyFactory = Callable[[str], Strategy]


@dataclass(slots=True)
class Route:
    name: str
    targets: tuple[Target, ...]
    strategy: Strategy
    retry: RetryConfig = RetryConfig()
    first_token_timeout: float | None = None
    affinity: bool = False
    strategy_name: str = "weighted_round_robin"
    queue: QueueConfig = QueueConfig()
    spill: SpillConfig | None = None

    @property
    def adaptive(self) -> bool:
        return self.strategy_name == "adaptive"


class Plan:
    def __init__(
        self, route: Route, states: Mapping[str, BackendState], now: float, pinned: Target | None = None
    ) -> None:
        self._route = route
        self._states = states
        self._tried: set[Target] = set()
        self._pinned = pinned if pinned in route.targets else None
        self.now = now
        self.attempt = 0

    def pool(self) -> list[Target]:
        """The targets the next attempt may use; empty when the attempts are spent."""
        if self.attempt >= self._route.retry.attempts:
            return []

        def available(targets: Sequence[Target]) -> list[Target]:
            return [t for t in targets if self._states[t.backend].available(self.now)]

        if self._pinned is not None and self.attempt == 0 and available([self._pinned]):
            return [self._pinned]
        everything = self._route.targets
        fresh = [t for t in everything if t not in self._tried]
        return available(fresh) or available(everything) or fresh or list(everything)

    def take(self, target: Target) -> None:
        self._tried.add(target)
        self.attempt += 1


class Affinity:
    """Which target last served a session on a route, for routes with session
    affinity; the oldest entries are forgotten beyond `capacity`."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._targets: OrderedDict[tuple[str, str], Target] = OrderedDict()

    def get(self, route: Route, session_id: str) -> Target | None:
        if not route.affinity or not session_id:
            return None
        return self._targets.get((route.name, session_id))

    def remember(self, route: Route, session_id: str, target: Target) -> None:
        if not route.affinity or not session_id:
            return
        key = (route.name, session_id)
        self._targets[key] = target
        self._targets.move_to_end(key)
        if len(self._targets) > self._capacity:
            self._targets.popitem(last=False)


class Router:
    IMPLICIT_STRATEGY = "weighted_round_robin"

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        rules: Sequence[RuleConfig],
        default_route: str,
        backends: Sequence[BackendConfig],
        catalog: Catalog,
        make_strategy: StrategyFactory,
    ) -> None:
        self._routes = {
            r.name: Route(
                name=r.name,
                targets=tuple(
                    Target(t.backend, t.model, t.weight, t.priority, t.first_token_timeout, {**r.options, **t.options})
                    for t in r.targets
                ),
                strategy=make_strategy(r.strategy),
                retry=r.retry,
                first_token_timeout=r.first_token_timeout,
                affinity=r.affinity == "session",
                strategy_name=r.strategy,
                queue=r.queue,
                spill=r.spill,
            )
            for r in routes
        }
        self._rules = tuple(rules)
        self._default = default_route
        self._backends = {b.name: b for b in backends}
        self._catalog = catalog
        self._make_strategy = make_strategy
        self._implicit: dict[str, Route] = {}
        self._implicit_version = -1

    def resolve(self, model: str, task: str, last_user_text: str) -> Route:
        route = self._routes.get(model)
        if route is not None:
            return route
        for rule in self._rules:
            if (rule.task is not None and rule.task == task) or (
                rule.match is not None and rule.match.search(last_user_text)
            ):
                return self._routes[rule.route]
        if not model:
            model = self._default or next(iter(self._routes), "") or self._first_discovered()
            if not model:
                if self._catalog.unreachable_backends():
                    raise self._not_found("model is empty and there is no route or model to default to")
                raise InvalidRequest(
                    "model", f"is empty and there is no route or model to default to; {self._what_exists()}"
                )
            route = self._routes.get(model)
            if route is not None:
                return route
        route = self._implicit_route(model)
        if route is None:
            raise self._not_found(f"no route or model named {model!r}")
        return route

    def _implicit_route(self, model: str) -> Route | None:
        if self._implicit_version != self._catalog.version:
            self._implicit.clear()
            self._implicit_version = self._catalog.version
        route = self._implicit.get(model)
        if route is None:
            serving = self._catalog.serving(model)
            if not serving:
                return None
            targets = tuple(
                Target(b, name, self._backends[b].weight, self._backends[b].priority) for b, name in serving
            )
            retry = RetryConfig(attempts=max(len(targets), RetryConfig().attempts))
            route = Route(model, targets, self._make_strategy(self.IMPLICIT_STRATEGY), retry)
            self._implicit[model] = route
        return route

    def _first_discovered(self) -> str:
        """The first chat model (never an embedding model) on the most preferred backend."""
        for backend in sorted(self._backends.values(), key=lambda b: b.priority):
            models = self._catalog.models_of(backend.name)
            chat = [m for m in models if not is_embedding_model(self._catalog.info(backend.name, m))]
            if chat:
                return sorted(chat)[0]
        return ""

    def _what_exists(self) -> str:
        routes = ", ".join(sorted(self._routes)) or "none"
        models = ", ".join(self._catalog.all_models()) or "none discovered"
        return f"routes: {routes}; models: {models}{self._unreachable()}"

    def _unreachable(self) -> str:
        down = self._catalog.unreachable_backends()
        if not down:
            return ""
        named = ", ".join(f"{b} at {redact_url(self._backends[b].url)} ({why})" for b, why in down.items())
        return f"; could not list the models of {named}"

    def _not_found(self, message: str) -> TurnoutError:
        """NOT_FOUND when every backend was listed; UNAVAILABLE when the name
        may be on a backend that cannot be reached now."""
        if self._catalog.unreachable_backends():
            return NoTargetAvailable(f"{message}; {self._what_exists()}")
        return NotFound(f"{message}; {self._what_exists()}")
