"""Metrics count exactly once per request or attempt, after known traffic that
includes retries, failures, a cancel and a deadline."""

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect, failure, request_lines
from tests.fakes import Hang, HttpError, Reply
from turnout.v1 import generate_pb2

ROUTE = "routes:\n  - {name: r, targets: [{backend: local, model: llama3.2:1b}, {backend: cloud, model: gpt-4o-mini}]}\n"


def sample(c, name: str, **labels) -> float:
    return c.gateway.registry.get_sample_value(name, labels) or 0.0


async def test_every_series_counts_known_traffic_exactly(ollama, openai):
    ollama.script(Reply("a"), Reply("b", usage=None), HttpError(503, "busy"), Hang("x"), Hang())
    with request_lines() as lines:
        async with serve(backends_yaml(ollama, openai) + ROUTE) as c:
            await collect(c.generate.Generate(ask(model="llama3.2:1b")))
            await c.generate.Complete(generate_pb2.CompleteRequest(request=ask(model="llama3.2:1b")))
            retried = await collect(c.generate.Generate(ask(model="r")))
            await failure(c.generate.Generate(ask(model="nope")))
            await failure(c.generate.Generate(generate_pb2.GenerateRequest(model="r")))
            cancelled = c.generate.Generate(ask(model="llama3.2:1b"))
            await ollama.hung.wait()
            cancelled.cancel()
            await ollama.disconnected.wait()
            timed_out = await failure(c.generate.Generate(ask(model="llama3.2:1b"), timeout=0.3))
            await lines.seen(7)  # the timed-out call ended on the caller's side first

            requests = "turnout_requests_total"
            assert retried[0].started.attempt == 2 and timed_out.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert sample(c, requests, route="llama3.2:1b", backend="local", model="llama3.2:1b", code="OK") == 2
            assert sample(c, requests, route="r", backend="cloud", model="gpt-4o-mini", code="OK") == 1
            assert sample(c, requests, route="none", backend="none", model="none", code="NOT_FOUND") == 1
            assert sample(c, requests, route="none", backend="none", model="none", code="INVALID_ARGUMENT") == 1
            assert sample(c, requests, route="llama3.2:1b", backend="local", model="llama3.2:1b", code="CANCELLED") == 1
            assert sample(c, requests, route="llama3.2:1b", backend="local", model="llama3.2:1b",
                          code="DEADLINE_EXCEEDED") == 1
            total = sum(s.value for m in c.gateway.registry.collect() if m.name == "turnout_requests"
                        for s in m.samples if s.name == requests)
            assert total == 7

            assert sample(c, "turnout_upstream_errors_total", backend="local", kind="server_error") == 1
            assert sample(c, "turnout_retries_total", route="r", reason="server_error") == 1
            assert sample(c, "turnout_tokens_total", backend="local", model="llama3.2:1b", kind="prompt") == 10
            assert sample(c, "turnout_tokens_total", backend="cloud", model="gpt-4o-mini", kind="completion") == 5
            by_llama = {"route": "llama3.2:1b", "backend": "local", "model": "llama3.2:1b"}
            assert sample(c, "turnout_request_duration_seconds_count", **by_llama) == 4
            assert sample(c, "turnout_time_to_first_token_seconds_count", **by_llama) == 3
            assert sample(c, "turnout_in_flight_requests", backend="local") == 0
            assert sample(c, "turnout_backend_up", backend="local") == sample(c, "turnout_backend_up", backend="cloud") == 1
            assert sample(c, "turnout_build_info", version="0.1.0") == 1


async def test_no_unbounded_label_values(ollama):
    async with serve(backends_yaml(ollama)) as c:
        for i in range(3):
            await failure(c.generate.Generate(ask(f"secret text {i}", model=f"made-up-{i}")))
            await collect(c.generate.Generate(ask(f"secret text {i}", model="llama3.2:1b", session_id=f"s{i}")))
        values = {value for m in c.gateway.registry.collect() for s in m.samples for value in s.labels.values()}
    assert not any(v.startswith(("made-up", "secret", "s0", "s1")) for v in values)
