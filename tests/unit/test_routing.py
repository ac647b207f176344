"""Strategies, tiers and resolution: pure logic, no I/O."""

import collections
import re

import pytest
from hypothesis import given, strategies as st

from gateway.catalog import Catalog
from gateway.config import BackendConfig, RouteConfig, RuleConfig, TargetConfig
from gateway.domain import BackendKind, ModelInfo
from gateway.errors import InvalidRequest, NotFound
from gateway.routing.router import Plan, Route, Router
from gateway.routing.state import BackendState, Target
from gateway.routing.strategies import LeastUsed, PriorityOrder, SmoothWeightedRoundRobin

A, B, C = Target("a", "m", 5), Target("b", "m", 1), Target("c", "m", 1)


def test_wrr_no_candidates_gives_none():
    assert SmoothWeightedRoundRobin().pick([]) is None


def test_wrr_single_target_always_picked():
    wrr = SmoothWeightedRoundRobin()
    assert {wrr.pick([A]) for _ in range(5)} == {A}


def test_wrr_is_smooth_like_nginx():
    """nginx's documented sequence for weights 5,1,1: a a b a c a a."""
    wrr = SmoothWeightedRoundRobin()
    assert [wrr.pick([A, B, C]).backend for _ in range(7)] == list("aabacaa")


@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6), st.integers(1, 4))
def test_wrr_each_window_gives_exactly_weight_picks(weights, windows):
    """Every window of sum(weights) picks holds each target exactly weight times."""
    targets = [Target(f"t{i}", "m", w) for i, w in enumerate(weights)]
    wrr = SmoothWeightedRoundRobin()
    for _ in range(windows):
        counts = collections.Counter(wrr.pick(targets) for _ in range(sum(weights)))
        assert counts == {t: t.weight for t in targets}


def test_wrr_target_removed_and_returning_keeps_the_ratio():
    wrr = SmoothWeightedRoundRobin()
    x, y = Target("x", "m", 3), Target("y", "m", 1)
    [wrr.pick([x, y]) for _ in range(2)]
    assert {wrr.pick([y]) for _ in range(3)} == {y}
    counts = collections.Counter(wrr.pick([x, y]) for _ in range(40))
    assert abs(counts[x] - 30) <= 3 and abs(counts[y] - 10) <= 3


def test_least_used_prefers_fewest_in_flight_per_weight():
    in_flight = {"a": 4, "b": 1, "c": 3}
    strategy = LeastUsed(lambda t: in_flight[t.backend])
    assert strategy.pick([Target("a", "m", 5), Target("b", "m", 1), Target("c", "m", 1)]).backend == "a"


def test_least_used_breaks_ties_round_robin():
    strategy = LeastUsed(lambda t: 0)
    picks = [strategy.pick([A, B, C]).backend for _ in range(6)]
    assert picks == list("abcabc")


def test_priority_order_takes_the_first():
    assert PriorityOrder().pick([B, A]) is B


def _states(*names):
    return {n: BackendState(n) for n in names}


def test_plan_uses_best_tier_then_falls_to_the_next():
    local, cloud = Target("local", "m", priority=0), Target("cloud", "m", priority=1)
    plan = Plan(Route("r", (cloud, local), PriorityOrder(), attempts=3), _states("local", "cloud"))
    assert [plan.next(), plan.next(), plan.next()] == [local, cloud, None]


def test_plan_skips_unavailable_tier():
    states = _states("local", "cloud")
    states["local"].healthy = False
    local, cloud = Target("local", "m", priority=0), Target("cloud", "m", priority=1)
    plan = Plan(Route("r", (local, cloud), PriorityOrder(), attempts=3), states)
    assert plan.next() == cloud


def test_plan_panics_when_everything_is_down():
    states = _states("a", "b")
    for s in states.values():
        s.healthy = False
    plan = Plan(Route("r", (Target("a", "m"), Target("b", "m")), PriorityOrder(), attempts=2), states)
    assert [t.backend for t in (plan.next(), plan.next())] == ["a", "b"]


def test_plan_respects_the_attempt_limit():
    plan = Plan(Route("r", (Target("a", "m"), Target("b", "m")), PriorityOrder(), attempts=1), _states("a", "b"))
    assert plan.next() is not None and plan.next() is None


def _router(rules=(), default=""):
    backends = [BackendConfig("gpu", BackendKind.OLLAMA, "http://x", weight=2),
                BackendConfig("cloud", BackendKind.OPENAI, "http://y", priority=1, models=("gpt-4o-mini",))]
    catalog = Catalog({"gpu": (), "cloud": ("gpt-4o-mini",)})
    catalog.update("gpu", [ModelInfo("llama3.2:latest"), ModelInfo("qwen2.5-coder:7b")])
    routes = [RouteConfig("chat", "priority", (TargetConfig("gpu", "llama3.2:latest", 2, 0),)),
              RouteConfig("code", "priority", (TargetConfig("gpu", "qwen2.5-coder:7b", 2, 0),))]
    return Router(routes, rules, default, backends, catalog, lambda name: PriorityOrder())


def test_resolve_route_by_name():
    assert _router().resolve("chat", "", "").name == "chat"


def test_resolve_rule_by_task_and_by_regex():
    rules = [RuleConfig("code", task="coding"), RuleConfig("code", match=re.compile(r"\bpython\b"))]
    router = _router(rules)
    assert router.resolve("llama3.2", "coding", "hi").name == "code"
    assert router.resolve("llama3.2", "", "write python please").name == "code"


def test_resolve_implicit_route_accepts_the_latest_tag():
    route = _router().resolve("llama3.2", "", "")
    assert [(t.backend, t.model, t.weight) for t in route.targets] == [("gpu", "llama3.2:latest", 2)]


def test_resolve_unknown_model_lists_what_exists():
    with pytest.raises(NotFound, match="routes: chat, code; models: gpt-4o-mini, llama3.2:latest"):
        _router().resolve("nope", "", "")


def test_resolve_empty_model_uses_default_route_else_the_first_route():
    assert _router(default="code").resolve("", "", "").name == "code"
    assert _router().resolve("", "", "").name == "chat"


def test_resolve_empty_model_without_routes_uses_the_preferred_backends_first_model():
    catalog = Catalog({"cloud": ("gpt-4o-mini",), "gpu": ()})
    catalog.update("gpu", [ModelInfo("qwen3:8b"), ModelInfo("llama3.2:1b")])
    backends = [BackendConfig("cloud", BackendKind.OPENAI, "http://y", priority=1),
                BackendConfig("gpu", BackendKind.OLLAMA, "http://x")]
    router = Router([], [], "", backends, catalog, lambda name: PriorityOrder())
    assert [(t.backend, t.model) for t in router.resolve("", "", "").targets] == [("gpu", "llama3.2:1b")]


def test_resolve_empty_model_with_nothing_known_is_invalid_argument():
    router = Router([], [], "", [], Catalog({}), lambda name: PriorityOrder())
    with pytest.raises(InvalidRequest, match="no route or model to default to"):
        router.resolve("", "", "")
