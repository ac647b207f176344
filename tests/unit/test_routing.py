"""Strategies, tiers and resolution: pure logic, no I/O."""

import collections
import re

import pytest
from hypothesis import given, strategies as st

from gateway.catalog import Catalog
from gateway.config import BackendConfig, RouteConfig, RuleConfig, TargetConfig
from gateway.domain import BackendKind, ModelInfo
from gateway.errors import InvalidRequest, NotFound
from gateway.config import RetryConfig
from gateway.routing.router import Affinity, Plan, Route, Router
from gateway.routing.state import BackendState, Health, OutlierPolicy, Target
from gateway.routing.strategies import LeastUsed, PriorityOrder, SmoothWeightedRoundRobin
from gateway.metrics import Metrics
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.prefix import PrefixIndex
from gateway.scheduling.scheduler import Prompt, Scheduler
from gateway.scheduling.slots import MemorySlots
from prometheus_client import CollectorRegistry

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


class _Attempts:
    """A route's plan driven as the dispatcher drives it: each attempt takes the
    plan's pool, the scheduler's choice (capacity unlimited here), and records it."""

    def __init__(self, route: Route, plan: Plan) -> None:
        self.route, self.plan = route, plan

    async def next(self) -> Target | None:
        pool = self.plan.pool()
        if not pool:
            return None
        loads = {t.backend: BackendLoad(t.backend) for t in pool}
        scheduler = Scheduler(loads, MemorySlots(), PrefixIndex(), Metrics(CollectorRegistry(), "test"))
        admission = await scheduler.admit(self.route, pool, Prompt(), None)
        await scheduler.release(admission, ok=True)
        self.plan.take(admission.target)
        return admission.target


def _plan(targets, states, attempts=3, pinned=None, strategy=None):
    route = Route("r", tuple(targets), strategy or PriorityOrder(), RetryConfig(attempts=attempts), affinity=True)
    return _Attempts(route, Plan(route, states, now=100.0, pinned=pinned))


LOCAL, CLOUD = Target("local", "m", priority=0), Target("cloud", "m", priority=1)


async def test_plan_uses_best_tier_then_falls_to_the_next():
    plan = _plan([CLOUD, LOCAL], _states("local", "cloud"), attempts=2)
    assert [await plan.next(), await plan.next(), await plan.next()] == [LOCAL, CLOUD, None]


async def test_plan_skips_an_ejected_tier():
    states = _states("local", "cloud")
    states["local"].ejected_until = 200.0
    assert await _plan([LOCAL, CLOUD], states).next() == CLOUD


async def test_plan_skips_a_backend_whose_probe_failed():
    states = _states("local", "cloud")
    states["local"].record_probe(up=False)
    assert await _plan([LOCAL, CLOUD], states).next() == CLOUD


async def test_plan_panics_when_everything_is_out():
    states = _states("a", "b")
    for s in states.values():
        s.record_probe(up=False)
    plan = _plan([Target("a", "m"), Target("b", "m")], states, attempts=2)
    assert [t.backend for t in (await plan.next(), await plan.next())] == ["a", "b"]


async def test_plan_retries_the_same_target_once_all_were_tried():
    plan = _plan([LOCAL], _states("local"), attempts=3)
    assert [await plan.next(), await plan.next(), await plan.next(), await plan.next()] == [LOCAL, LOCAL, LOCAL, None]


async def test_plan_starts_on_the_pinned_target_while_it_is_available():
    states = _states("local", "cloud")
    assert await _plan([LOCAL, CLOUD], states, pinned=CLOUD).next() == CLOUD
    states["cloud"].record_probe(up=False)
    assert await _plan([LOCAL, CLOUD], states, pinned=CLOUD).next() == LOCAL


def test_affinity_remembers_per_route_and_session_and_forgets_the_oldest():
    route = Route("r", (LOCAL, CLOUD), PriorityOrder(), affinity=True)
    affinity = Affinity(capacity=2)
    affinity.remember(route, "s1", CLOUD)
    affinity.remember(route, "s2", LOCAL)
    affinity.remember(route, "s3", LOCAL)
    assert (affinity.get(route, "s1"), affinity.get(route, "s3")) == (None, LOCAL)
    assert affinity.get(Route("other", (LOCAL,), PriorityOrder()), "s3") is None


POLICY = OutlierPolicy(consecutive_failures=3, base_ejection=10.0, max_ejection=40.0)


def test_ejection_after_consecutive_failures_only():
    state = BackendState("b", POLICY)
    assert [state.record_failure(0.0), state.record_failure(1.0)] == [False, False]
    state.record_success(0.1)
    assert [state.record_failure(2.0), state.record_failure(3.0), state.record_failure(4.0)] == [False, False, True]
    assert state.health(5.0) is Health.EJECTED and state.health(14.0) is Health.UNKNOWN


def test_ejection_cooldown_doubles_when_repeated_and_is_capped():
    state = BackendState("b", POLICY)
    cooldowns, now = [], 0.0
    for _ in range(4):
        for _ in range(3):
            state.record_failure(now)
        cooldowns.append(state.ejected_until - now)
        now = state.ejected_until
    assert cooldowns == [10.0, 20.0, 40.0, 40.0]


def test_ejection_multiplier_resets_after_a_long_good_spell():
    state = BackendState("b", POLICY)
    for t in (0.0, 1.0, 2.0):
        state.record_failure(t)
    for t in (100.0, 101.0, 102.0):
        state.record_failure(t)
    assert state.ejected_until - 102.0 == 10.0


def test_failures_that_do_not_count_never_eject_but_retry_after_does_hold_off():
    state = BackendState("b", POLICY)
    assert not any(state.record_failure(float(t), counts=False) for t in range(5))
    assert state.available(5.0)
    state.record_failure(5.0, counts=False, retry_after=7.0)
    assert state.health(11.0) is Health.EJECTED and state.available(12.0)
    assert state.errors_total == 6


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
