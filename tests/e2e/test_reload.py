"""SIGHUP re-reads the config file: new API keys for the next call, an
invalid file logged with its key and line and nothing changed, the reload
counted, and the gateway keeps serving."""

import asyncio
import signal

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask, collect, failure
from tests.e2e.test_security import ALICE, BOB, bearer, sha
from turnout.v1 import generate_pb2_grpc


def keyed(ollama, *names_and_keys: tuple[str, str]) -> str:
    keys = "".join(f"    - {{name: {name}, sha256: {sha(key)}}}\n" for name, key in names_and_keys)
    return (f"sessions: {{store: memory}}\nbackends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
            f"auth:\n  keys:\n{keys}")


async def line_with(stderr: asyncio.StreamReader, text: str) -> str:
    while text not in (line := (await asyncio.wait_for(stderr.readline(), 30)).decode()):
        assert line, f"the gateway exited before logging {text!r}"
    return line


async def reloads(metrics_address: str) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://{metrics_address}/metrics")).text
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(body)
            for s in family.samples if s.name == "turnout_config_reloads_total"}


async def test_sighup_swaps_keys_and_an_invalid_file_changes_nothing(ollama, tmp_path):
    workers = 1
    async with spawn(f"workers: {workers}\n" + keyed(ollama, ("alice", ALICE)), tmp_path) as gateway:
        for _ in range(workers - 1):
            await line_with(gateway.process.stderr, "listening on")
        path = tmp_path / "turnout.yaml"
        head = path.read_text().split("sessions:")[0]
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            assert (await collect(stub.Generate(ask(model="llama3.2:1b"), metadata=bearer(ALICE))))[-1].completed

            path.write_text(head + keyed(ollama, ("bob", BOB)))
            gateway.process.send_signal(signal.SIGHUP)
            for _ in range(workers):
                line = await line_with(gateway.process.stderr, "config reloaded")
            assert "applied api_keys" in line
            bob = await collect(stub.Generate(ask(model="llama3.2:1b"), metadata=bearer(BOB)))
            alice = await failure(stub.Generate(ask(model="llama3.2:1b"), metadata=bearer(ALICE)))

            path.write_text(head + keyed(ollama, ("bob", BOB)) + "routes: [{name: r, targets: [{backend: nowhere}]}]\n")
            gateway.process.send_signal(signal.SIGHUP)
            for _ in range(workers):
                error = await line_with(gateway.process.stderr, "config reload failed")
            still = await collect(stub.Generate(ask(model="llama3.2:1b"), metadata=bearer(BOB)))
        if workers == 1:
            assert await reloads(gateway.metrics_address) == {"ok": 1, "error": 1}
        assert gateway.process.returncode is None
    assert bob[-1].WhichOneof("event") == still[-1].WhichOneof("event") == "completed"
    assert alice.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "routes[0]" in error and "line" in error
