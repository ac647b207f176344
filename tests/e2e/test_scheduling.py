"""Scheduling end to end (SPEC §4b): turnout's own queue in front of a full
backend, queue limits and cancellation, spill to the next tier, 503 bursts,
capacity and load read from each server kind, model residency and prefix
affinity with the adaptive strategy — a real gateway over loopback fakes."""

import asyncio
import collections
import logging
import time

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.e2e.helpers import RetryInfo, ask, collect, details, failure
from tests.fakes import FakeOllama, FakeOpenAI, Gate, HttpError
from turnout.v1 import common_pb2, generate_pb2, model_pb2, session_pb2

FAST_POLL = "scheduler: {poll_interval: 50ms}\n"


async def backends(c) -> dict[str, model_pb2.Backend]:
    return {b.name: b for b in (await c.models.ListBackends(model_pb2.ListBackendsRequest())).backends}


async def until(c, predicate, limit: float = 10.0):
    """Re-reads ListBackends until `predicate(backends)` holds (fails after `limit` s)."""
    deadline = time.monotonic() + limit
    while not predicate(seen := await backends(c)):
        assert time.monotonic() < deadline, f"condition not reached; backends: {seen}"
        await asyncio.sleep(0.02)
    return seen


def chats(fake) -> list[str]:
    """The last user message of each chat request the fake received."""
    return [r.json["messages"][-1]["content"] for r in fake.requests if r.path in ("/api/chat", "/v1/chat/completions")]


def metric(c, name: str, **labels) -> float:
    return c.gateway.registry.get_sample_value(name, labels) or 0.0


def local_and_cloud(local: FakeOllama, cloud: FakeOpenAI, route_extra: str = "", capacity: int = 1) -> str:
    return (
        f"backends:\n  - {{name: local, kind: ollama, url: '{local.url}', max_concurrency: {capacity}}}\n"
        f"  - {{name: cloud, kind: openai, url: '{cloud.url}', priority: 1, load_signal: none}}\n"
        "routes:\n  - name: chat\n    strategy: least_used\n"
        "    targets: [{backend: local, model: m}, {backend: cloud, model: gpt-4o-mini}]\n" + route_extra
    )


@pytest.fixture
async def local():
    async with FakeOllama(models=["m"]) as fake:
        yield fake


@pytest.fixture
async def cloud():
    async with FakeOpenAI() as fake:
        yield fake


async def test_requests_beyond_capacity_wait_in_turnout_not_in_the_backend(local):
    local.script(*[Gate("x") for _ in range(3)])
    yaml = (f"backends:\n  - {{name: local, kind: ollama, url: '{local.url}', max_concurrency: 1}}\n"
            "routes:\n  - {name: chat, targets: [{backend: local, model: m}]}\n")
    async with serve(yaml) as c:
        reads = []
        for i in range(3):
            reads.append(asyncio.create_task(collect(c.generate.Generate(ask(f"q{i}", model="chat")))))
            await until(c, lambda b, i=i: b["local"].in_flight == 1 and b["local"].queued == i)
        seen = await backends(c)
        assert seen["local"].capacity == 1 and local.peak == 1
        local.release.set()
        answers = await asyncio.gather(*reads)
        assert all(a[-1].WhichOneof("event") == "completed" for a in answers)
        assert metric(c, "turnout_queue_wait_seconds_count", route="chat") == 3
    assert local.peak == 1
    assert chats(local) == ["q0", "q1", "q2"]


async def test_a_full_queue_is_resource_exhausted_with_retry_info(local, cloud):
    local.script(Gate("x"), Gate("y"))
    yaml = (f"backends:\n  - {{name: local, kind: ollama, url: '{local.url}', max_concurrency: 1}}\n"
            "routes:\n  - {name: chat, queue: {max_size: 1}, targets: [{backend: local, model: m}]}\n")
    async with serve(yaml) as c:
        held = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
        await local.hung.wait()
        queued = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
        await until(c, lambda b: b["local"].queued == 1)
        error = await failure(c.generate.Generate(ask(model="chat")))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in error.details() and details(error, RetryInfo) is not None
        local.release.set()
        await asyncio.gather(held, queued)


async def test_cancelling_a_queued_call_frees_its_place_and_it_never_reaches_the_backend(local):
    local.script(Gate("x"), Gate("y"))
    yaml = (f"backends:\n  - {{name: local, kind: ollama, url: '{local.url}', max_concurrency: 1}}\n"
            "routes:\n  - {name: chat, queue: {max_size: 1}, targets: [{backend: local, model: m}]}\n")
    async with serve(yaml) as c:
        held = asyncio.create_task(collect(c.generate.Generate(ask("held", model="chat"))))
        await local.hung.wait()
        cancelled = c.generate.Generate(ask("cancelled", model="chat"))
        reading = asyncio.create_task(collect(cancelled))
        await until(c, lambda b: b["local"].queued == 1)
        cancelled.cancel()
        await until(c, lambda b: b["local"].queued == 0)
        later = asyncio.create_task(collect(c.generate.Generate(ask("later", model="chat"))))
        await until(c, lambda b: b["local"].queued == 1)
        local.release.set()
        await asyncio.gather(held, later)
        assert reading.cancelled() or reading.exception() is not None
    assert chats(local) == ["held", "later"]


async def test_spill_sends_only_the_overflow_to_the_cloud_tier(local, cloud, caplog):
    local.script(Gate("local"))
    caplog.set_level(logging.INFO, logger="turnout.requests")
    async with serve(local_and_cloud(local, cloud, "    spill: {}\n")) as c:
        held = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
        await local.hung.wait()
        spilled = await collect(c.generate.Generate(ask(model="chat")))
        assert spilled[0].started.backend == "cloud"
        assert metric(c, "turnout_spills_total", route="chat") == 1
        local.release.set()
        assert (await held)[0].started.backend == "local"
        assert (await collect(c.generate.Generate(ask(model="chat"))))[0].started.backend == "local"
    assert metric(c, "turnout_spills_total", route="chat") == 1
    lines = [r.fields for r in caplog.records if r.getMessage() == "request"]
    assert [(line["backend"], line["reason"]) for line in lines] == [
        ("cloud", "spill"), ("local", "least_used"), ("local", "least_used")]


async def test_without_spill_a_full_local_tier_queues_then_serves_locally(local, cloud):
    local.script(Gate("local"), Gate("again"))
    async with serve(local_and_cloud(local, cloud)) as c:
        held = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
        await local.hung.wait()
        waiting = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
        await until(c, lambda b: b["local"].queued == 1)
        local.release.set()
        assert [(await t)[0].started.backend for t in (held, waiting)] == ["local", "local"]
    assert chats(cloud) == []


async def test_a_burst_of_503_and_429_from_a_full_backend_never_ejects_it(local, cloud):
    local.script(*[HttpError(503, "server busy") for _ in range(3)], *[HttpError(429, "slow down") for _ in range(3)])
    yaml = local_and_cloud(local, cloud, capacity=4) + "outlier_detection: {consecutive_failures: 2}\n"
    async with serve(yaml) as c:
        served = [(await collect(c.generate.Generate(ask(model="chat"))))[0].started.backend for _ in range(6)]
        assert served == ["cloud"] * 6
        assert (await backends(c))["local"].state != model_pb2.BACKEND_STATE_EJECTED
        assert (await collect(c.generate.Generate(ask(model="chat"))))[0].started.backend == "local"


async def test_llamacpp_capacity_and_load_are_read_from_its_own_endpoints():
    async with FakeOpenAI(models=["smollm2"], slots=2) as llama:
        llama.script(*[Gate("x") for _ in range(3)])
        llama.deferred = 4
        yaml = (f"backends:\n  - {{name: llama, kind: openai, url: '{llama.url}'}}\n"
                "routes:\n  - {name: chat, targets: [{backend: llama, model: smollm2}]}\n" + FAST_POLL)
        async with serve(yaml) as c:
            first = await backends(c)
            assert (first["llama"].capacity, first["llama"].load_signal) == (2, "llamacpp")
            reads = [asyncio.create_task(collect(c.generate.Generate(ask(model="chat")))) for _ in range(3)]
            seen = await until(c, lambda b: b["llama"].queued == 1 and b["llama"].reported_running == 2)
            assert seen["llama"].reported_waiting == 4 and llama.peak == 2
            assert metric(c, "turnout_backend_capacity", backend="llama") == 2
            assert metric(c, "turnout_backend_reported_requests", backend="llama", state="waiting") == 4
            llama.release.set()
            await asyncio.gather(*reads)
        assert llama.peak == 2 and {r.path for r in llama.polls} >= {"/props", "/metrics"}


async def test_vllm_running_and_waiting_are_read_from_its_metrics():
    async with FakeOpenAI(models=["m"], vllm=True) as vllm:
        vllm.script(Gate("x"))
        vllm.deferred = 7
        yaml = (f"backends:\n  - {{name: vllm, kind: openai, url: '{vllm.url}', load_signal: vllm}}\n"
                "routes:\n  - {name: chat, targets: [{backend: vllm, model: m}]}\n" + FAST_POLL)
        async with serve(yaml) as c:
            call = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
            seen = await until(c, lambda b: b["vllm"].reported_running == 1)
            assert (seen["vllm"].reported_waiting, seen["vllm"].load_signal) == (7, "vllm")
            assert not seen["vllm"].HasField("capacity")
            vllm.release.set()
            await call


async def test_a_server_that_reports_nothing_falls_back_to_turnouts_counts(cloud):
    yaml = (f"backends:\n  - {{name: cloud, kind: openai, url: '{cloud.url}', max_concurrency: 3}}\n"
            "routes:\n  - {name: chat, targets: [{backend: cloud, model: gpt-4o-mini}]}\n" + FAST_POLL)
    async with serve(yaml) as c:
        await collect(c.generate.Generate(ask(model="chat")))
        seen = (await backends(c))["cloud"]
    assert (seen.load_signal, seen.capacity, seen.HasField("reported_running")) == ("none", 3, False)


async def test_adaptive_prefers_the_ollama_host_that_has_the_model_loaded(caplog):
    caplog.set_level(logging.INFO, logger="turnout.requests")
    async with FakeOllama(models=["m"]) as cold, FakeOllama(models=["m"]) as warm:
        warm.loaded = ["m:latest"]
        yaml = (f"backends:\n  - {{name: cold, kind: ollama, url: '{cold.url}'}}\n"
                f"  - {{name: warm, kind: ollama, url: '{warm.url}'}}\n"
                "routes:\n  - {name: chat, strategy: adaptive, targets: [{backend: cold, model: m}, "
                "{backend: warm, model: m}]}\n" + FAST_POLL)
        async with serve(yaml) as c:
            seen = await backends(c)
            assert (list(seen["warm"].loaded_models), list(seen["cold"].loaded_models)) == (["m:latest"], [])
            served = [(await collect(c.generate.Generate(ask(f"q{i}", model="chat"))))[0].started.backend
                      for i in range(4)]
    assert served == ["warm"] * 4 and chats(cold) == []
    assert {r.fields["reason"] for r in caplog.records if r.getMessage() == "request"} == {"residency"}


def conversation(system: str, turns: int) -> list[generate_pb2.Message]:
    messages = [generate_pb2.Message(role=common_pb2.ROLE_SYSTEM, content=system)]
    for i in range(turns):
        if i:
            messages.append(generate_pb2.Message(role=common_pb2.ROLE_ASSISTANT, content="Hello world"))
        messages.append(generate_pb2.Message(role=common_pb2.ROLE_USER, content=f"question {i} " * 20))
    return messages


async def test_adaptive_keeps_each_conversation_on_the_backend_holding_its_prefix():
    async with FakeOpenAI(models=["m"]) as a, FakeOpenAI(models=["m"]) as b:
        yaml = (f"backends:\n  - {{name: a, kind: openai, url: '{a.url}', load_signal: none}}\n"
                f"  - {{name: b, kind: openai, url: '{b.url}', load_signal: none}}\n"
                "routes:\n  - {name: chat, strategy: adaptive, targets: [{backend: a, model: m}, "
                "{backend: b, model: m}]}\n")
        tenants = {t: f"You are the assistant of tenant {t}. Follow its policy. " * 60 for t in "xyz"}
        placed = collections.defaultdict(set)
        async with serve(yaml) as c:
            for turn in range(1, 4):
                for tenant, system in tenants.items():
                    request = generate_pb2.GenerateRequest(model="chat", messages=conversation(system, turn))
                    placed[tenant].add((await collect(c.generate.Generate(request)))[0].started.backend)
            # A session's turns are the same prompt to the scheduler as a caller-sent history.
            await c.sessions.CreateSession(session_pb2.CreateSessionRequest(session_id="s", system_prompt=tenants["x"]))
            for i in range(3):
                served = await collect(c.generate.Generate(ask(f"question {i} " * 20, model="chat", session_id="s")))
                placed["session"].add(served[0].started.backend)
            hits = metric(c, "turnout_prefix_affinity_total", route="chat", result="hit")
    assert all(len(backends_used) == 1 for backends_used in placed.values()), placed
    assert placed["session"] == placed["x"]
    assert hits == 3 * 2 + 3


async def test_adaptive_leaves_a_busy_cached_backend_once_its_wait_outgrows_the_prefill_saved():
    # The backend holding the prompt is held busy by a long answer: the expected wait for it grows
    # with that answer's age until the idle backend, which must compute the prompt, is the better choice.
    system = "Shared policy text for every request of this tenant. " * 40
    request = generate_pb2.GenerateRequest(model="chat", messages=conversation(system, 1))
    async with FakeOpenAI(models=["m"]) as a, FakeOpenAI(models=["m"]) as b:
        yaml = (f"backends:\n  - {{name: a, kind: openai, url: '{a.url}', load_signal: none, max_concurrency: 1}}\n"
                f"  - {{name: b, kind: openai, url: '{b.url}', load_signal: none, max_concurrency: 1}}\n"
                "routes:\n  - {name: chat, strategy: adaptive, targets: [{backend: a, model: m}, "
                "{backend: b, model: m}]}\n")
        async with serve(yaml) as c:
            first = (await collect(c.generate.Generate(request)))[0].started.backend
            holder = {"a": a, "b": b}[first]
            holder.script(Gate("slow"))
            held = asyncio.create_task(collect(c.generate.Generate(request)))
            await holder.hung.wait()
            placed = (await collect(c.generate.Generate(request)))[0].started.backend
            holder.release.set()
            assert (await held)[0].started.backend == first
    assert placed != first
