"""SIGHUP re-reads the config file of a real `turnout serve`: backends,
routes, rules, limits and API keys change for the next call while a stream
in flight finishes on the backend it started on; an invalid file is logged
with its key and line and changes nothing; every reload is counted; with
several workers each one reloads, and the gateway keeps serving throughout."""

import asyncio
import json
import os
import signal

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Spawned, spawn
from tests.e2e.helpers import ask, collect, failure, text
from tests.e2e.test_security import ALICE, BOB, bearer, sha
from tests.fakes import FakeOllama, Gate, HttpError
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc

MODEL = "llama3.2:1b"


def keyed(ollama, *names_and_keys: tuple[str, str]) -> str:
    keys = "".join(f"    - {{name: {name}, sha256: {sha(key)}}}\n" for name, key in names_and_keys)
    return (f"sessions: {{store: memory}}\nbackends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
            f"auth:\n  keys:\n{keys}")


def routed(*routes: tuple[str, FakeOllama, str], extra: str = "") -> str:
    """One backend and one route on it per (backend name, fake, route name)."""
    backends = {name: fake for name, fake, _ in routes}
    lines = ["sessions: {store: memory}", "backends:"]
    lines += [f"  - {{name: {name}, kind: ollama, url: '{fake.url}'}}" for name, fake in backends.items()]
    lines.append("routes:")
    lines += [f"  - {{name: {route}, targets: [{{backend: {name}, model: '{MODEL}'}}]}}" for name, _, route in routes]
    return "\n".join(lines) + "\n" + extra


def chats(fake: FakeOllama) -> list:
    return [r for r in fake.requests if r.path == "/api/chat"]


async def line_with(stderr: asyncio.StreamReader, text: str) -> str:
    while text not in (line := (await asyncio.wait_for(stderr.readline(), 30)).decode()):
        assert line, f"the gateway exited before logging {text!r}"
    return line


async def reload(gateway: Spawned, config_text: str, workers: int = 1) -> list[str]:
    """Rewrites the config file (keeping the addresses `spawn` chose), sends
    SIGHUP, and returns each worker's line saying how the reload went."""
    path = gateway.config
    head = "".join(path.read_text().splitlines(keepends=True)[:2])
    path.write_text(head + config_text)
    gateway.process.send_signal(signal.SIGHUP)
    return [await line_with(gateway.process.stderr, "config reload") for _ in range(workers)]


async def samples(metrics_address: str, name: str, label: str) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://{metrics_address}/metrics")).text
    return {s.labels[label]: s.value for family in text_string_to_metric_families(body)
            for s in family.samples if s.name == name}


async def reloads(metrics_address: str) -> dict[str, float]:
    return await samples(metrics_address, "turnout_config_reloads_total", "result")


async def test_sighup_adds_a_backend_and_route_and_removes_the_old_ones(tmp_path):
    async with FakeOllama() as first, FakeOllama() as second:
        async with spawn(routed(("a", first, "chat-a")), tmp_path) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                before = await collect(stub.Generate(ask(model="chat-a")))
                [line] = await reload(gateway, routed(("b", second, "chat-b")))
                after = await collect(stub.Generate(ask(model="chat-b")))
                gone = await failure(stub.Generate(ask(model="chat-a")))
            assert await reloads(gateway.metrics_address) == {"ok": 1}
            up = await samples(gateway.metrics_address, "turnout_backend_up", "backend")
            healthy = await samples(gateway.metrics_address, "turnout_route_healthy_targets", "route")
    assert (up, healthy) == ({"b": 1}, {"chat-b": 1})  # the removed backend's and route's series are gone
    assert before[0].started.backend == "a"
    assert (after[0].started.route, after[0].started.backend, text(after)) == ("chat-b", "b", "Hello world")
    assert after[-1].WhichOneof("event") == "completed"
    assert gone.code() == grpc.StatusCode.NOT_FOUND and "chat-b" in gone.details()
    assert [len(chats(fake)) for fake in (first, second)] == [1, 1]
    assert "backends (added b; removed a)" in line and "routes (added chat-b; removed chat-a)" in line


async def test_a_stream_in_flight_finishes_on_the_backend_a_reload_removed(tmp_path):
    async with FakeOllama() as first, FakeOllama() as second:
        first.script(Gate("Hel", "lo"))
        async with spawn(routed(("a", first, "chat-a")), tmp_path) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                call = stub.Generate(ask(model="chat-a"))
                frames = [await call.read()]
                while text(frames) != "Hello":  # "Hel" and "lo" are sent; the fake holds the end
                    frames.append(await call.read())
                await reload(gateway, routed(("b", second, "chat-b")))
                new = await collect(stub.Generate(ask(model="chat-b")))
                old_route = await failure(stub.Generate(ask(model="chat-a")))
                still_open = first.open
                first.release.set()
                while (frame := await call.read()) is not grpc.aio.EOF:
                    frames.append(frame)
                await first.all_closed()  # the removed backend's clients close once its last stream ended
    assert (frames[0].started.backend, frames[-1].WhichOneof("event"), text(frames)) == ("a", "completed", "Hello")
    assert frames[-1].completed.usage.completion_tokens == 5
    assert not first.disconnected.is_set() and first.active == 0
    assert still_open >= 1  # the stream's own connection, at least, while it ran
    assert new[0].started.backend == "b" and new[-1].WhichOneof("event") == "completed"
    assert old_route.code() == grpc.StatusCode.NOT_FOUND


async def test_a_backend_the_reload_left_unchanged_keeps_its_state(tmp_path):
    ejecting = "outlier_detection: {consecutive_failures: 1, base_ejection: 5m}\n"

    async def backend_a(channel: grpc.aio.Channel) -> model_pb2.Backend:
        backends = (await model_pb2_grpc.ModelServiceStub(channel).ListBackends(model_pb2.ListBackendsRequest())).backends
        return next(b for b in backends if b.name == "a")

    async with FakeOllama() as first, FakeOllama() as second:
        first.script(HttpError(500))  # the first attempt fails and ejects the backend; the retry (panic mode) answers
        async with spawn(routed(("a", first, "chat-a"), extra=ejecting), tmp_path) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                await collect(stub.Generate(ask(model="chat-a")))
                before = await backend_a(channel)
                await reload(gateway, routed(("a", first, "chat-a"), ("b", second, "chat-b"), extra=ejecting))
                after = await backend_a(channel)
    assert (before.state, before.errors_total, before.requests_total) == (model_pb2.BACKEND_STATE_EJECTED, 1, 2)
    assert (after.state, after.errors_total, after.requests_total) == (before.state, 1, 2)
    assert after.latency_estimate == before.latency_estimate


async def test_an_invalid_file_changes_nothing(tmp_path):
    async with FakeOllama() as first, FakeOllama() as second:
        async with spawn(routed(("a", first, "chat-a")), tmp_path) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                [ok] = await reload(gateway, routed(("a", first, "chat-a"), ("b", second, "chat-b")))
                invalid = routed(("b", second, "chat-b"), extra="  - {name: chat-c, targets: [{backend: nowhere}]}\n")
                [error] = await reload(gateway, invalid)
                served = [await collect(stub.Generate(ask(model=route))) for route in ("chat-a", "chat-b")]
                unknown = await failure(stub.Generate(ask(model="chat-c")))
            assert await reloads(gateway.metrics_address) == {"ok": 1, "error": 1}
    assert "applied backends (added b), routes (added chat-b)" in ok
    assert "config reload failed, nothing changed" in error and "routes[1].targets[0]" in error and "line 8" in error
    assert [(r[0].started.backend, r[-1].WhichOneof("event")) for r in served] == [("a", "completed"), ("b", "completed")]
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_rules_and_limits_change_live(tmp_path):
    def config(rule_route: str, max_messages: int) -> str:
        return routed(("a", ollama, "chat-a"), ("a", ollama, "chat-b"), extra=(
            f"rules: [{{when: {{task: coding}}, route: {rule_route}}}]\nlimits: {{max_messages: {max_messages}}}\n"))

    two = generate_pb2.GenerateRequest(messages=[
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi"),
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="again"),
    ])
    async with FakeOllama() as ollama:
        async with spawn(config("chat-a", 4), tmp_path) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                before = await collect(stub.Generate(ask(task="coding")))
                long_before = await collect(stub.Generate(two))
                [line] = await reload(gateway, config("chat-b", 1))
                after = await collect(stub.Generate(ask(task="coding")))
                refused = await failure(stub.Generate(two))
    assert (before[0].started.route, after[0].started.route) == ("chat-a", "chat-b")
    assert long_before[-1].WhichOneof("event") == "completed"
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 1" in refused.details()
    assert "applied limits, rules" in line


async def test_sighup_swaps_keys(ollama, tmp_path):
    async with spawn(keyed(ollama, ("alice", ALICE)), tmp_path) as gateway:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            assert (await collect(stub.Generate(ask(model=MODEL), metadata=bearer(ALICE))))[-1].completed
            [line] = await reload(gateway, keyed(ollama, ("bob", BOB)))
            bob = await collect(stub.Generate(ask(model=MODEL), metadata=bearer(BOB)))
            alice = await failure(stub.Generate(ask(model=MODEL), metadata=bearer(ALICE)))
    assert "applied api_keys" in line
    assert bob[-1].WhichOneof("event") == "completed"
    assert alice.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_with_two_workers_sighup_reloads_each_and_the_gateway_keeps_serving(tmp_path):
    async with FakeOllama() as first, FakeOllama() as second:
        async with spawn("workers: 2\n" + routed(("a", first, "chat-a")), tmp_path) as gateway:
            await line_with(gateway.process.stderr, "listening on")  # the second worker's (spawn saw the first)
            lines = await reload(gateway, "workers: 2\n" + routed(("b", second, "chat-b")), workers=2)
            served = []
            for _ in range(4):  # new connections, spread over the workers by the kernel
                async with grpc.aio.insecure_channel(gateway.address) as channel:
                    stub = generate_pb2_grpc.GenerateServiceStub(channel)
                    served.append(await collect(stub.Generate(ask(model="chat-b"))))
            assert await reloads(gateway.metrics_address) == {"ok": 2}
            assert gateway.process.returncode is None
    assert all("config reloaded" in line and "routes (added chat-b; removed chat-a)" in line for line in lines)
    assert [(r[0].started.backend, r[-1].WhichOneof("event")) for r in served] == [("b", "completed")] * 4


async def test_a_worker_restarted_after_a_reload_runs_the_reloaded_config(tmp_path):
    async with FakeOllama() as first, FakeOllama() as second:
        config = "workers: 2\nlogging: {format: json}\n"
        async with spawn(config + routed(("a", first, "chat-a")), tmp_path) as gateway:
            victim = json.loads(await line_with(gateway.process.stderr, "listening on"))["pid"]  # the second worker
            await reload(gateway, config + routed(("b", second, "chat-b")), workers=2)
            os.kill(victim, signal.SIGKILL)
            restarted = json.loads(await line_with(gateway.process.stderr, "restarted as pid"))
            successor = int(restarted["message"].rsplit(" ", 1)[1])
            while (listening := json.loads(await line_with(gateway.process.stderr, "listening on")))["pid"] != successor:
                pass
    assert listening["message"].endswith("with backends b")
