"""The series the alerts read, from a real gateway: calls refused by a key's
limits are counted by key (TurnoutKeyRateLimited), and each configured
route's healthy targets are counted after every probe round
(TurnoutRouteWithoutHealthyTarget)."""

import hashlib

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect, failure
from tests.fakes import unused_port

KEY = "key-alice-0123456789"


async def test_calls_refused_by_a_keys_limit_are_counted_for_that_key(ollama):
    auth = ("routes:\n  - {name: chat, targets: [{backend: local, model: llama3.2:1b}]}\n"
            f"auth:\n  keys:\n    - {{name: alice, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}, "
            "requests_per_minute: 1}\n")
    metadata = (("authorization", f"Bearer {KEY}"),)
    async with serve(backends_yaml(ollama) + auth) as c:
        await collect(c.generate.Generate(ask(model="chat"), metadata=metadata))
        over = await failure(c.generate.Generate(ask(model="chat"), metadata=metadata))
        sample = c.gateway.registry.get_sample_value
        counts = {code: sample("turnout_key_requests_total", {"key": "alice", "code": code})
                  for code in ("OK", "RESOURCE_EXHAUSTED")}
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert counts == {"OK": 1, "RESOURCE_EXHAUSTED": 1}


async def test_each_routes_healthy_targets_are_counted(ollama):
    down = f"http://127.0.0.1:{unused_port()}"
    yaml = (backends_yaml(ollama) + f"  - {{name: gone, kind: ollama, url: '{down}'}}\n"
            "routes:\n"
            "  - {name: both, targets: [{backend: local, model: llama3.2:1b}, {backend: gone, model: llama3.2:1b}]}\n"
            "  - {name: dead, targets: [{backend: gone, model: llama3.2:1b}]}\n")
    async with serve(yaml) as c:
        sample = c.gateway.registry.get_sample_value
        healthy = {route: sample("turnout_route_healthy_targets", {"route": route}) for route in ("both", "dead")}
    assert healthy == {"both": 1, "dead": 0}
