"""In-flight accounting is exact whatever happens: every attempt that starts
is released once (its in-flight count and its scheduler slot, on backends with
a capacity of 1), on success, on every kind of upstream failure, and when the
caller stops reading early. Real dispatcher and Ollama adapters; the upstream
is httpx.MockTransport."""

import asyncio
import contextlib
import json
import random

import httpx
from prometheus_client import CollectorRegistry
from hypothesis import given, settings, strategies as st

from adapters.http import HttpSettings, build_client
from adapters.ollama import OllamaAdapter
from gateway.catalog import Catalog
from gateway.config import BackendConfig, RetryConfig, RouteConfig, TargetConfig
from gateway.dispatch import Dispatcher, Generation
from gateway.domain import BackendKind, Delta, Message, Role
from gateway.errors import TurnoutError
from gateway.metrics import Metrics
from gateway.routing.router import Router
from gateway.routing.state import BackendState, OutlierPolicy
from gateway.routing.strategies import LeastUsed
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.prefix import PrefixIndex
from gateway.scheduling.scheduler import Scheduler
from gateway.scheduling.slots import MemorySlots

OUTCOMES = ["ok", "http500", "http400", "midstream", "truncate", "connect"]


def _line(**fields) -> bytes:
    return json.dumps({"model": "m", "created_at": "2025-07-07T20:22:19.184789Z", **fields}).encode() + b"\n"


def _response(outcome: str, request: httpx.Request) -> httpx.Response:
    if outcome == "connect":
        raise httpx.ConnectError("refused", request=request)
    if outcome in ("http500", "http400"):
        return httpx.Response(int(outcome[4:]), json={"error": "no"})
    body = _line(message={"role": "assistant", "content": "hi"}, done=False)
    if outcome == "ok":
        body += _line(message={"role": "assistant", "content": ""}, done=True, done_reason="stop")
    elif outcome == "midstream":
        body += b'{"error":"boom"}\n'
    return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})


async def _run(outcomes: list[str], plans: list[tuple[bool, int]]) -> None:
    script = iter(outcomes)
    sent = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return _response(next(script, "ok"), request)

    names = ("a", "b")
    policy = OutlierPolicy(consecutive_failures=2, base_ejection=0.0, max_ejection=0.0)
    states = {n: BackendState(n, policy) for n in names}
    adapters = {n: OllamaAdapter(n, build_client("http://x", HttpSettings(), transport=httpx.MockTransport(handler)))
                for n in names}
    backends = [BackendConfig(n, BackendKind.OLLAMA, "http://x") for n in names]
    routes = [RouteConfig(f"r{k}", "least_used", tuple(TargetConfig(n, "m", 1, 0) for n in names),
                          retry=RetryConfig(attempts=k, backoff=0.0, max_backoff=0.0)) for k in (1, 2, 3)]
    router = Router(routes, [], "", backends, Catalog({n: () for n in names}),
                    lambda name: LeastUsed(lambda t: states[t.backend].in_flight))
    registry = CollectorRegistry()
    metrics = Metrics(registry, "test")
    metrics.declare_backends(list(names))
    scheduler = Scheduler({n: BackendLoad(n, 1) for n in names}, MemorySlots(), PrefixIndex(), metrics)
    dispatcher = Dispatcher(router, states, adapters, metrics, scheduler, rng=random.Random(0))
    for stop_early, attempts in plans:
        generation = Generation("id", f"r{attempts}", (Message(Role.USER, "hi"),))
        with contextlib.suppress(TurnoutError):
            async with contextlib.aclosing(dispatcher.run(generation)) as events:
                async for event in events:
                    if stop_early and isinstance(event, Delta):
                        break
    assert {n: s.in_flight for n, s in states.items()} == {"a": 0, "b": 0}
    assert [scheduler.slots.held(n) for n in names] == [0, 0] and scheduler.waiting() == 0
    assert [registry.get_sample_value("turnout_in_flight_requests", {"backend": n}) for n in names] == [0, 0]
    assert sum(s.requests_total for s in states.values()) == sent


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(OUTCOMES), max_size=40),
    st.lists(st.tuples(st.booleans(), st.integers(1, 3)), min_size=1, max_size=15),
)
def test_every_started_attempt_is_released_exactly_once(outcomes, plans):
    asyncio.run(_run(outcomes, plans))
