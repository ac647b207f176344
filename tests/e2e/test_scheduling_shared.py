"""Two `turnout serve` processes sharing one real redis-server
(`scheduler.store: redis`): together they never put more than a backend's
capacity on it, a killed process's slots come back when their leases expire,
and a prompt prefix served through one is known to the other."""

import asyncio
import signal
import uuid

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import spawn
from tests.e2e.helpers import collect
from tests.fakes import FakeOpenAI, Gate
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc


def shared_config(redis_url: str, backends: dict[str, FakeOpenAI], extra: str = "", strategy: str = "least_used") -> str:
    lines = [f"scheduler: {{store: redis, redis_url: '{redis_url}', lease_ttl: 1s}}", "backends:"]
    lines += [f"  - {{name: {name}, kind: openai, url: '{fake.url}', load_signal: none{extra}}}"
              for name, fake in backends.items()]
    targets = ", ".join(f"{{backend: {name}, model: m}}" for name in backends)
    lines += ["routes:", f"  - {{name: chat, strategy: {strategy}, queue: {{max_wait: 30s}}, targets: [{targets}]}}"]
    return "\n".join(lines) + "\n"


def request(text: str = "hi", system: str = "") -> generate_pb2.GenerateRequest:
    messages = [generate_pb2.Message(role=common_pb2.ROLE_SYSTEM, content=system)] if system else []
    messages.append(generate_pb2.Message(role=common_pb2.ROLE_USER, content=text))
    return generate_pb2.GenerateRequest(model="chat", messages=messages)


async def queued(address: str, backend: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await model_pb2_grpc.ModelServiceStub(channel).ListBackends(model_pb2.ListBackendsRequest())
    return next(b.queued for b in response.backends if b.name == backend)


async def until(condition, limit: float = 15.0) -> None:
    """Re-checks an async condition until it holds (fails after `limit` s)."""
    async with asyncio.timeout(limit):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_two_gateways_on_one_redis_never_exceed_a_backends_capacity_together(redis_url, tmp_path):
    name = f"llama-{uuid.uuid4().hex[:6]}"
    async with FakeOpenAI(models=["m"]) as llama:
        llama.script(*[Gate("x") for _ in range(6)])
        config = shared_config(redis_url, {name: llama}, extra=", max_concurrency: 2")
        async with spawn(config, tmp_path, "a") as a, spawn(config, tmp_path, "b") as b:
            channels = [grpc.aio.insecure_channel(g.address) for g in (a, b)]
            calls = [asyncio.create_task(collect(generate_pb2_grpc.GenerateServiceStub(ch).Generate(request())))
                     for ch in channels for _ in range(3)]

            async def four_wait() -> bool:
                return await queued(a.address, name) + await queued(b.address, name) == 4

            await until(four_wait)
            assert (llama.active, llama.peak) == (2, 2)
            llama.release.set()
            answers = await asyncio.gather(*calls)
            for channel in channels:
                await channel.close()
    assert all(answer[-1].WhichOneof("event") == "completed" for answer in answers)
    assert llama.peak == 2 and sum(r.path == "/v1/chat/completions" for r in llama.requests) == 6


async def test_the_slots_of_a_killed_gateway_return_when_their_leases_expire(redis_url, tmp_path):
    name = f"llama-{uuid.uuid4().hex[:6]}"
    async with FakeOpenAI(models=["m"]) as llama:
        llama.script(Gate("held"), Gate("held"))
        config = shared_config(redis_url, {name: llama}, extra=", max_concurrency: 2")
        async with spawn(config, tmp_path, "doomed") as doomed, spawn(config, tmp_path, "survivor") as survivor:
            async with grpc.aio.insecure_channel(doomed.address) as d, grpc.aio.insecure_channel(survivor.address) as s:
                held = [asyncio.create_task(collect(generate_pb2_grpc.GenerateServiceStub(d).Generate(request())))
                        for _ in range(2)]
                await llama.hung.wait()

                async def both_held() -> bool:
                    return llama.active == 2

                async def survivor_waits() -> bool:
                    return await queued(survivor.address, name) == 1

                await until(both_held)
                waiting = asyncio.create_task(collect(generate_pb2_grpc.GenerateServiceStub(s).Generate(request())))
                await until(survivor_waits)
                doomed.process.send_signal(signal.SIGKILL)
                await doomed.process.wait()
                answer = await asyncio.wait_for(waiting, 15)
                await asyncio.gather(*held, return_exceptions=True)
    assert answer[0].started.backend == name and answer[-1].WhichOneof("event") == "completed"


async def test_a_prefix_served_through_one_gateway_steers_the_other(redis_url, tmp_path):
    names = [f"p{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    async with FakeOpenAI(models=["m"]) as x, FakeOpenAI(models=["m"]) as y:
        config = shared_config(redis_url, dict(zip(names, (x, y), strict=True)), strategy="adaptive")
        tenants = [f"Policy of tenant {t}: answer in the tenant's voice. " * 40 for t in range(4)]
        async with spawn(config, tmp_path, "a") as a, spawn(config, tmp_path, "b") as b:
            async with grpc.aio.insecure_channel(a.address) as ca, grpc.aio.insecure_channel(b.address) as cb:
                first = [(await collect(generate_pb2_grpc.GenerateServiceStub(ca).Generate(
                    request("first question", t))))[0].started.backend for t in tenants]
                second = [(await collect(generate_pb2_grpc.GenerateServiceStub(cb).Generate(
                    request("first question", t))))[0].started.backend for t in tenants]
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://{b.metrics_address}/metrics")).text
    hits = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "turnout_prefix_affinity_total" and s.labels.get("result") == "hit")
    assert second == first and hits == len(tenants)
