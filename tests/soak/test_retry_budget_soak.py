"""`make soak`: 1,000 callers at once against a pool where every backend is
full (HTTP 503 to every chat), with and without the retry budget. Without
it, each caller makes up to `attempts` upstream requests; with the default
budget (pending retries at most 20% of requests, at least 3), retries cannot multiply the
load. Prints upstream attempts per caller for both."""

import asyncio

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.e2e.helpers import ask
from tests.fakes import FakeOllama, HttpError

CALLERS = 1000


async def attempts_per_caller(budget: str) -> tuple[float, float]:
    """(upstream chat requests per caller, budget refusals) for one run."""
    async with FakeOllama(models=["m"]) as a, FakeOllama(models=["m"]) as b:
        for fake in (a, b):
            fake.script(*[HttpError(503, "full")] * (3 * CALLERS))
        yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}'}}\n"
                f"  - {{name: b, kind: ollama, url: '{b.url}'}}\n"
                "outlier_detection: {consecutive_failures: 1000000}\n"
                "routes:\n  - {name: r, strategy: weighted_round_robin, targets: [{backend: a, model: m}, "
                f"{{backend: b, model: m}}], retry: {{attempts: 3, backoff: 5ms, max_backoff: 20ms{budget}}}}}\n")
        async with serve(yaml) as c:
            async def call() -> None:
                with pytest.raises(grpc.aio.AioRpcError):
                    async for _ in c.generate.Generate(ask(model="r"), timeout=60):
                        pass

            await asyncio.gather(*(call() for _ in range(CALLERS)))
            refusals = c.gateway.registry.get_sample_value("turnout_retry_budget_refusals_total", {"route": "r"})
        chats = sum(1 for fake in (a, b) for r in fake.requests if r.path == "/api/chat")
    return chats / CALLERS, refusals or 0.0


@pytest.mark.soak
async def test_the_retry_budget_keeps_a_saturated_pool_from_a_retry_storm():
    unbudgeted, _ = await attempts_per_caller(", budget_percent: 100, min_retry_concurrency: 1000000")
    budgeted, refusals = await attempts_per_caller("")
    print(f"\nretry budget: {CALLERS} callers vs a full pool: {unbudgeted:.2f} upstream attempts per caller "
          f"without a budget, {budgeted:.2f} with the default budget (20%, min 3); {refusals:.0f} retries refused")
    assert unbudgeted > 2.5
    assert budgeted < 2.0 and refusals > 0
