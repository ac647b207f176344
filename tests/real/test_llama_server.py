"""What llama.cpp's own server does that the fakes cannot: several slots decoding
at once (-np 2), slots freed by a cancelled stream, usage and timings in the
last chunk, a prompt cache, and its own error statuses. The server's /slots and
/metrics say what happened on its side."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.e2e.helpers import collect, failure, kinds, text
from tests.real.llama import LlamaServer, metrics, slots
from tests.real.test_real_model import LENGTH, STOP, RecordingProxy, backend_in_flight, config, short
from turnout.v1 import common_pb2, generate_pb2

pytestmark = pytest.mark.real_model

COUNTING = "Count from 1 to 500, one number per line."
SETTLE = 30.0  # seconds the server gets to reach a state the test waits for (2 busy cores)


def processing(server: LlamaServer) -> int:
    return sum(1 for slot in slots(server) if slot.get("is_processing"))


async def until(condition, what: str) -> None:
    """Polls a condition on the external server until it holds (it pushes no events)."""
    deadline = time.monotonic() + SETTLE
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"{what}: not within {SETTLE:g} s"
        await asyncio.sleep(0.05)


async def first_delta(call) -> None:
    async for response in call:
        if response.WhichOneof("event") == "delta":
            return
    raise AssertionError("the stream ended before any delta")


async def test_usage_and_timings_come_from_the_server(llama: LlamaServer):
    async with serve(config(llama.url)) as c:
        responses = await collect(c.generate.Generate(short("Say hello in one short sentence."), timeout=60))
    assert kinds(responses)[0] == "started" and kinds(responses)[-1] == "completed"
    assert set(kinds(responses)[1:-1]) == {"delta"} and text(responses).strip()
    completed = responses[-1].completed
    assert completed.finish_reason in (STOP, LENGTH)
    # llama.cpp answers stream_options.include_usage with a usage chunk, and adds its slot timings.
    assert completed.usage.prompt_tokens > 0 and 0 < completed.usage.completion_tokens <= 32
    assert completed.usage.HasField("cached_prompt_tokens")
    assert completed.backend_timings.generation.ToNanoseconds() > 0
    assert completed.backend_timings.HasField("prompt_eval") and not completed.backend_timings.HasField("load")


async def test_two_streams_decode_at_once_and_both_complete(llama: LlamaServer):
    async with serve(config(llama.url)) as c:
        calls = [c.generate.Generate(short(COUNTING, max_tokens=300), timeout=120) for _ in range(2)]
        await asyncio.gather(*(first_delta(call) for call in calls))
        # Both have output before either finished: the server runs them in its two slots.
        assert await asyncio.to_thread(processing, llama) == 2
        rests = await asyncio.gather(*(collect(call) for call in calls))
    for rest in rests:
        assert kinds(rest)[-1] == "completed" and rest[-1].completed.finish_reason in (STOP, LENGTH)
        assert rest[-1].completed.usage.completion_tokens > 0


async def test_cancelling_a_stream_frees_its_slot(llama: LlamaServer):
    async with serve(config(llama.url)) as c:
        call = c.generate.Generate(short(COUNTING, max_tokens=400), timeout=120)
        await first_delta(call)
        assert await asyncio.to_thread(processing, llama) == 1
        call.cancel()
        await until(lambda: processing(llama) == 0, "llama-server still decodes the cancelled request")
        assert await backend_in_flight(c) == 0
        assert metrics(llama)["llamacpp:requests_processing"] == 0
        after = await collect(c.generate.Generate(short("Say hi.", max_tokens=8), timeout=60))
    assert kinds(after)[-1] == "completed" and text(after)


async def test_a_long_shared_prompt_is_served_from_the_cache_the_second_time(llama: LlamaServer):
    # A fresh prefix, so no earlier test's cache can serve it; ~1200 tokens of shared context.
    facts = " ".join(f"Fact {i}: the {secrets.token_hex(2)} valve opens at step {i * 7}." for i in range(60))
    prompt = f"{facts}\nWhich step opens valve number 3? Answer briefly."
    before = metrics(llama)["llamacpp:prompt_tokens_cached_total"]
    async with serve(config(llama.url)) as c:
        first = (await collect(c.generate.Generate(short(prompt, max_tokens=8), timeout=120)))[-1].completed
        middle = metrics(llama)["llamacpp:prompt_tokens_cached_total"]
        second = (await collect(c.generate.Generate(short(prompt, max_tokens=8), timeout=120)))[-1].completed
    after = metrics(llama)["llamacpp:prompt_tokens_cached_total"]
    assert first.usage.prompt_tokens > 800
    assert first.usage.cached_prompt_tokens < first.usage.prompt_tokens // 10
    assert second.usage.cached_prompt_tokens >= second.usage.prompt_tokens * 9 // 10
    assert after - middle >= second.usage.prompt_tokens * 9 // 10 > middle - before
    assert second.backend_timings.prompt_eval.ToNanoseconds() < first.backend_timings.prompt_eval.ToNanoseconds()


async def test_a_prompt_beyond_the_slot_context_is_invalid_argument(llama: LlamaServer):
    # tools/server: a prompt longer than a slot's context (8192 / 2 slots) is HTTP 400
    # exceed_context_size_error; that is the request's fault, so no retry elsewhere.
    prompt = "lorem ipsum dolor " * 3000
    async with serve(config(llama.url)) as c:
        error = await failure(c.generate.Generate(short(prompt), timeout=120))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "HTTP 400" in error.details() and "context" in error.details()


async def test_reasoning_in_history_is_accepted_as_reasoning_content(llama: LlamaServer):
    # llama.cpp reads an assistant message's reasoning_content (common/chat.cpp), so this
    # backend is configured with send_reasoning: true.
    history = [
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="What is 2+2?"),
        generate_pb2.Message(role=common_pb2.ROLE_ASSISTANT, content="4", reasoning="2+2 is 4"),
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="And doubled?"),
    ]
    proxy = RecordingProxy(llama.port)
    async with proxy.running() as url, serve(config(url, ", send_reasoning: true")) as c:
        request = generate_pb2.GenerateRequest(
            model="chat", messages=history, options=generate_pb2.GenerationOptions(max_tokens=8, seed=1))
        responses = await collect(c.generate.Generate(request, timeout=60))
    assert kinds(responses)[-1] == "completed"
    [sent] = proxy.chat_requests()
    assert sent["messages"][1] == {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4"}
