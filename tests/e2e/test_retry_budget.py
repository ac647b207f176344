"""The retry budget: pending retries stay within a share of a route's
requests, so a saturated pool is not hit again by every caller."""

import grpc

from tests.e2e.conftest import serve
from tests.e2e.helpers import collect, ask, failure
from tests.e2e.test_routing import pair, two_backends  # noqa: F401  (pair is a fixture)
from tests.fakes import HttpError


async def test_a_retry_beyond_the_budget_is_refused_and_counted(pair):  # noqa: F811
    a, b = pair
    a.script(HttpError(503, "busy"))
    retry = "retry: {attempts: 3, budget_percent: 0, min_retry_concurrency: 0}"
    async with serve(two_backends(a, b, route=f"strategy: priority, {retry}")) as c:
        refused = await failure(c.generate.Generate(ask(model="r")))
        refusals = c.gateway.registry.get_sample_value("turnout_retry_budget_refusals_total", {"route": "r"})
    assert refused.code() == grpc.StatusCode.UNAVAILABLE and "HTTP 503" in refused.details()
    assert refusals == 1
    assert not [r for r in b.requests if r.path == "/api/chat"]


async def test_within_the_budget_retries_go_ahead(pair):  # noqa: F811
    a, b = pair
    a.script(HttpError(503, "busy"))
    async with serve(two_backends(a, b, route="strategy: priority")) as c:
        served = await collect(c.generate.Generate(ask(model="r")))
        refusals = c.gateway.registry.get_sample_value("turnout_retry_budget_refusals_total", {"route": "r"})
    assert (served[0].started.backend, served[0].started.attempt) == ("b", 2)
    assert not refusals
