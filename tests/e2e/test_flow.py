"""Stream flow control: an upstream that sends as fast as it can is held to
`limits.max_response_bytes` per stream, and is closed when a stream passes it;
a stream keeps no copy of what it already sent; a line that never ends is a
malformed stream past MAX_LINE bytes."""

import asyncio
import tracemalloc

import grpc
import pytest

from adapters.streams import MAX_LINE
from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect
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


SENT_THROUGH = 24 << 20


ADAPTIVE = "routes:\n  - {name: chat, strategy: adaptive, targets: [{backend: local, model: llama3.2:1b}]}\n"


@pytest.mark.parametrize("strategy", ["implicit", "adaptive"])
async def test_a_long_stream_keeps_no_copy_of_what_it_sent(strategy, ollama):
    """Python memory traced (the gateway runs in this process) once 24 MiB went
    through one Generate without a session: the gateway held every delta until
    the stream ended (200 slow callers of floods: RSS 73 MiB -> 1 GiB); an
    adaptive route keeps only the answer's first 256 Ki characters, for its prefix index."""
    ollama.script(Flood())
    adaptive = strategy == "adaptive"
    async with serve(backends_yaml(ollama) + (ADAPTIVE if adaptive else "")) as c:
        tracemalloc.start()
        try:
            received, baseline = 0, None
            call = c.generate.Generate(ask(model="chat" if adaptive else "llama3.2:1b"), timeout=120)
            async for response in call:
                received += len(response.delta.content)
                if baseline is None:
                    baseline = tracemalloc.get_traced_memory()[0]
                if received >= SENT_THROUGH:
                    held = tracemalloc.get_traced_memory()[0] - baseline
                    break
            call.cancel()
        finally:
            tracemalloc.stop()
    assert held < SENT_THROUGH // 4, f"{held / 2**20:.1f} MiB held after {received / 2**20:.1f} MiB sent"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_an_upstream_line_that_never_ends_is_a_protocol_error_at_max_line(kind, ollama, openai):
    """A flood with no line end: the decoder held it all (memory without bound,
    and max_response_bytes never counted it since no delta was made)."""
    fake = ollama if kind == "ollama" else openai
    fake.script(*[Flood(line_end=False)] * 5)
    config = backends_yaml(ollama) if kind == "ollama" else backends_yaml(openai=openai)
    async with serve(config) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(c.generate.Generate(ask(model="llama3.2:1b" if kind == "ollama" else "gpt-4o-mini"), timeout=60))
        await asyncio.wait_for(fake.disconnected.wait(), 10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"sent a malformed stream: a line or event passed {MAX_LINE} bytes without ending" in caught.value.details()
