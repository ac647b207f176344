"""Health, reflection and graceful shutdown of the real server."""

import asyncio

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, failure
from tests.fakes import Gate

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_serving_overall_and_per_service(ollama):
    async with serve(backends_yaml(ollama)) as c:
        for service in ("", "turnout.v1.GenerateService", "turnout.v1.ModelService"):
            response = await c.health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == SERVING
        error = None
        try:
            await c.health.Check(health_pb2.HealthCheckRequest(service="nope"))
        except grpc.aio.AioRpcError as exc:
            error = exc
        assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(ollama):
    async with serve(backends_yaml(ollama)) as c:
        stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        response = await call.read()
        call.cancel()
    names = {s.name for s in response.list_services_response.service}
    assert {"turnout.v1.GenerateService", "turnout.v1.ModelService", "grpc.health.v1.Health"} <= names


async def test_drain_refuses_new_calls_and_finishes_the_stream_in_flight(ollama):
    ollama.script(Gate("Hel", "lo"))
    async with serve(backends_yaml(ollama)) as c:
        call = c.generate.Generate(ask(model="llama3.2:1b"))
        await ollama.hung.wait()
        watch = c.health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(c.gateway.stop(grace=10))
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
        refused = await failure(c.generate.Generate(ask(model="llama3.2:1b"), timeout=5))
        ollama.release.set()
        events = [r.WhichOneof("event") async for r in call]
        await stopping
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert events[-1] == "completed"
    assert await call.code() == grpc.StatusCode.OK
