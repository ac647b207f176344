"""Routing end to end: strategies, tiers, retries, ejection, health probes,
first-token timeouts and deadlines, over loopback fakes."""

import asyncio
import collections
import time

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.e2e.helpers import ask, collect, failure, text
from tests.fakes import FakeOllama, Gate, Hang, HttpError
from turnout.v1 import model_pb2


@pytest.fixture
async def pair():
    async with FakeOllama(models=["m"]) as a, FakeOllama(models=["m"]) as b:
        yield a, b


def two_backends(a, b, *, route: str, b_priority: int = 0, extra: str = "") -> str:
    return (
        f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}'}}\n"
        f"  - {{name: b, kind: ollama, url: '{b.url}', priority: {b_priority}}}\n"
        f"routes:\n  - {{name: r, {route}, targets: [{{backend: a, model: m}}, {{backend: b, model: m}}]}}\n" + extra
    )


async def _backends(c) -> dict[str, model_pb2.Backend]:
    return {b.name: b for b in (await c.models.ListBackends(model_pb2.ListBackendsRequest())).backends}


async def _until(predicate, limit: float = 5.0, every: float = 0.02):
    """Polls an async predicate until it holds, failing after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)


async def test_weighted_round_robin_3_to_1_gives_exactly_30_and_10_over_40_calls(pair):
    a, b = pair
    yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}', weight: 3}}\n"
            f"  - {{name: b, kind: ollama, url: '{b.url}'}}\n"
            "routes:\n  - {name: r, strategy: weighted_round_robin, targets: [{backend: a, model: m}, {backend: b, model: m}]}\n")
    async with serve(yaml) as c:
        served = [(await collect(c.generate.Generate(ask(model="r"))))[0].started.backend for _ in range(40)]
    assert collections.Counter(served) == {"a": 30, "b": 10}
    assert all(served[i:i + 4].count("a") == 3 for i in range(0, 40, 4)), "picks must interleave, not burst"


async def test_least_used_splits_concurrent_held_streams_by_weight(pair):
    a, b = pair
    for fake in pair:
        fake.script(*[Gate("x") for _ in range(6)])
    yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}', weight: 2}}\n"
            f"  - {{name: b, kind: ollama, url: '{b.url}'}}\n"
            "routes:\n  - {name: r, strategy: least_used, targets: [{backend: a, model: m}, {backend: b, model: m}]}\n")
    async with serve(yaml) as c:
        calls = [c.generate.Generate(ask(model="r")) for _ in range(6)]
        reads = [asyncio.create_task(call.read()) for call in calls]
        await asyncio.gather(*reads)
        in_flight = {name: backend.in_flight for name, backend in (await _backends(c)).items()}
        a.release.set()
        b.release.set()
        for call in calls:
            last = None
            while (response := await call.read()) is not grpc.aio.EOF:
                last = response.WhichOneof("event")
            assert last == "completed"
        assert {name: backend.in_flight for name, backend in (await _backends(c)).items()} == {"a": 0, "b": 0}
    assert in_flight == {"a": 4, "b": 2}


async def test_dead_tier_fails_over_with_no_caller_errors_and_traffic_returns(pair):
    local, cloud = pair
    local.script(*[HttpError(500, "internal error") for _ in range(2)])
    yaml = two_backends(local, cloud, route="strategy: priority", b_priority=1,
                        extra="outlier_detection: {consecutive_failures: 2, base_ejection: 300ms}\n")
    async with serve(yaml) as c:
        first = [(await collect(c.generate.Generate(ask(model="r"))))[0].started for _ in range(2)]
        assert [(s.backend, s.attempt) for s in first] == [("b", 2), ("b", 2)]
        ejected = await _backends(c)
        assert ejected["a"].state == model_pb2.BACKEND_STATE_EJECTED and ejected["a"].HasField("ejected_until")
        during = (await collect(c.generate.Generate(ask(model="r"))))[0].started
        assert (during.backend, during.attempt) == ("b", 1)

        async def back_on_local():
            return (await collect(c.generate.Generate(ask(model="r"))))[0].started.backend == "a"

        await _until(back_on_local)


async def test_a_backend_that_dies_is_ejected_after_consecutive_failures(pair):
    dying, live = pair
    yaml = two_backends(dying, live, route="strategy: priority",
                        extra="outlier_detection: {consecutive_failures: 3, base_ejection: 60s}\n")
    async with serve(yaml) as c:
        await dying.__aexit__(None, None, None)
        attempts = [(await collect(c.generate.Generate(ask(model="r"))))[0].started.attempt for _ in range(5)]
        state = (await _backends(c))["a"].state
    assert attempts == [2, 2, 2, 1, 1]
    assert state == model_pb2.BACKEND_STATE_EJECTED


async def test_health_probe_marks_a_backend_down_and_up_again(pair):
    a, b = pair
    yaml = two_backends(a, b, route="strategy: priority", extra="health_check: {interval: 50ms, timeout: 1s}\n")
    async with serve(yaml) as c:
        assert (await _backends(c))["a"].state == model_pb2.BACKEND_STATE_HEALTHY
        await a.__aexit__(None, None, None)

        async def a_is(state):
            return (await _backends(c))["a"].state == state

        await _until(lambda: a_is(model_pb2.BACKEND_STATE_DOWN))
        assert (await collect(c.generate.Generate(ask(model="r"))))[0].started.backend == "b"
        await a.__aenter__()
        await _until(lambda: a_is(model_pb2.BACKEND_STATE_HEALTHY))
        assert (await collect(c.generate.Generate(ask(model="r"))))[0].started.backend == "a"


async def test_a_down_backend_is_probed_every_unhealthy_interval_not_every_interval(pair):
    a, b = pair
    await a.__aexit__(None, None, None)
    extra = "health_check: {interval: 1h, timeout: 1s, unhealthy_interval: 50ms}\n"
    async with serve(two_backends(a, b, route="strategy: priority", extra=extra)) as c:
        assert (await _backends(c))["a"].state == model_pb2.BACKEND_STATE_DOWN
        await a.__aenter__()

        async def a_is_healthy():
            return (await _backends(c))["a"].state == model_pb2.BACKEND_STATE_HEALTHY

        await _until(a_is_healthy, limit=30.0)
        assert (await collect(c.generate.Generate(ask(model="r"))))[0].started.backend == "a"


async def test_first_token_timeout_moves_to_the_next_target_and_closes_the_slow_one(pair):
    slow, fast = pair
    slow.script(Hang())
    yaml = two_backends(slow, fast, route="strategy: priority, first_token_timeout: 200ms")
    async with serve(yaml) as c:
        responses = await collect(c.generate.Generate(ask(model="r")))
    assert (responses[0].started.backend, responses[0].started.attempt) == ("b", 2)
    assert text(responses) == "Hello world"
    assert slow.disconnected.is_set()


async def test_a_target_can_have_its_own_first_token_timeout(pair):
    slow, fast = pair
    slow.script(Hang())
    yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{slow.url}'}}\n"
            f"  - {{name: b, kind: ollama, url: '{fast.url}'}}\n"
            "routes:\n  - {name: r, strategy: priority, first_token_timeout: 60s, targets: "
            "[{backend: a, model: m, first_token_timeout: 100ms}, {backend: b, model: m}]}\n")
    async with serve(yaml) as c:
        responses = await collect(c.generate.Generate(ask(model="r"), timeout=10))
    assert responses[0].started.backend == "b"


async def test_retry_after_holds_the_backend_out_and_the_caller_sees_no_error(pair):
    a, b = pair
    a.script(HttpError(429, "slow down", headers={"retry-after": "30"}))
    async with serve(two_backends(a, b, route="strategy: priority")) as c:
        first = (await collect(c.generate.Generate(ask(model="r"))))[0].started
        second = (await collect(c.generate.Generate(ask(model="r"))))[0].started
        backend = (await _backends(c))["a"]
    assert ((first.backend, first.attempt), (second.backend, second.attempt)) == (("b", 2), ("b", 1))
    assert backend.state == model_pb2.BACKEND_STATE_EJECTED
    assert 25 < backend.ejected_until.seconds - time.time() <= 30


async def test_a_4xx_about_the_request_is_not_retried(pair):
    a, b = pair
    a.script(HttpError(400, "bad options"))
    async with serve(two_backends(a, b, route="strategy: priority")) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(b.requests) == 1, "only the start-up probe reached b"


async def test_no_retry_is_started_that_the_callers_deadline_cannot_cover(pair):
    a, b = pair
    a.script(HttpError(503, "busy"))
    yaml = two_backends(a, b, route="strategy: priority, retry: {attempts: 2, backoff: 5s, max_backoff: 5s}")
    async with serve(yaml) as c:
        started = time.monotonic()
        error = await failure(c.generate.Generate(ask(model="r"), timeout=2))
        elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "HTTP 503" in error.details()
    assert elapsed < 1.5
    assert not [r for r in b.requests if r.path == "/api/chat"]
