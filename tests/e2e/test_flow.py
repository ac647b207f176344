"""Stream flow control: an upstream that sends as fast as it can is held to
`limits.max_response_bytes` per stream, and is closed when a stream passes it."""

import asyncio

import grpc
import pytest

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask
from tests.fakes import FakeOllama, Flood
from turnout.v1 import generate_pb2

LIMIT = 1 << 20


def limited(ollama: FakeOllama) -> str:
    return backends_yaml(ollama) + f"limits: {{max_response_bytes: {LIMIT}}}\n"


async def test_a_flooding_stream_ends_at_max_response_bytes_and_closes_the_upstream(ollama):
    ollama.script(Flood())
    async with serve(limited(ollama)) as c:
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for response in c.generate.Generate(ask(model="llama3.2:1b"), timeout=60):
                received += len(response.delta.content)
        await asyncio.wait_for(ollama.disconnected.wait(), 10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limits.max_response_bytes ({LIMIT} bytes)" in caught.value.details()
    assert received <= LIMIT


async def test_complete_holds_no_more_than_max_response_bytes(ollama):
    ollama.script(Flood())
    async with serve(limited(ollama)) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.generate.Complete(generate_pb2.CompleteRequest(request=ask(model="llama3.2:1b")), timeout=60)
        await asyncio.wait_for(ollama.disconnected.wait(), 10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_response_bytes" in caught.value.details()
