"""What OpenAI-compatible servers really send, fed byte for byte through the
adapter (httpx.MockTransport). Each body names the source it was taken from."""

from __future__ import annotations

import json

import httpx
import pytest

from adapters.http import HttpSettings, build_client, parse_go_duration, parse_ratelimit_reset
from adapters.openai import OpenAIAdapter
from gateway.domain import ChatRequest, Delta, Finish, FinishReason, Message, Role, Timings, ToolCall, Usage
from gateway.errors import BackendProtocolError, BackendRejected, BackendServerError
from tests.unit.reads import in_reads

REQUEST = ChatRequest(model="m", messages=(Message(Role.USER, "hi"),))
DONE = b"data: [DONE]\n\n"


def adapter(*reads: bytes, status: int = 200) -> OpenAIAdapter:
    client = build_client("http://127.0.0.1:8000/v1", HttpSettings(), transport=httpx.MockTransport(in_reads(*reads, status=status)))
    return OpenAIAdapter("vllm", client)


def data(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def choice(delta: dict, finish_reason: str | None = None) -> bytes:
    return data({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1733000000, "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    })


def fragments(*calls: dict) -> bytes:
    return choice({"tool_calls": list(calls)})


USAGE = data({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1733000000, "model": "m",
              "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})


async def events(*reads: bytes) -> list:
    return [event async for event in adapter(*reads).stream_chat(REQUEST)]


# vLLM: FINISH_REASON_STRINGS in vllm/v1/engine/__init__.py is ("stop", "length", "abort");
# serving_chat.py puts the engine's reason into the chunk's finish_reason as is. Forks send
# "error" or "repetition". Only OpenAI's documented reasons mean the answer is whole.
@pytest.mark.parametrize("reason", ["abort", "error", "repetition"])
async def test_an_undocumented_finish_reason_is_a_broken_stream(reason: str) -> None:
    with pytest.raises(BackendProtocolError, match=f"finish_reason '{reason}'"):
        await events(choice({"content": "The answer is"}), choice({"content": ""}, reason), USAGE, DONE)


# A new `id` at a reused index is a second call (compatible servers that send every call
# whole at index 0); the OpenAI types make `index` required, yet some servers omit it,
# and an argument-only fragment then continues the last call.
async def test_a_new_id_at_a_reused_index_starts_a_second_call() -> None:
    got = await events(
        fragments({"index": 0, "id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}),
        fragments({"index": 0, "id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":"}}),
        fragments({"index": 0, "function": {"arguments": "1}"}}),
        choice({}, "tool_calls"), USAGE, DONE,
    )
    assert got[0] == Delta(tool_calls=(ToolCall("call_1", "a", "{}"), ToolCall("call_2", "b", '{"x":1}')))


async def test_fragments_without_index_are_joined_by_id() -> None:
    got = await events(
        fragments({"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{\"q\""}}),
        fragments({"function": {"arguments": ":1}"}}),
        fragments({"id": "call_2", "type": "function", "function": {"name": "b", "arguments": ""}}),
        fragments({"id": "call_2", "function": {"arguments": "{}"}}),
        choice({}, "tool_calls"), USAGE, DONE,
    )
    assert got[0] == Delta(tool_calls=(ToolCall("call_1", "a", '{"q":1}'), ToolCall("call_2", "b", "{}")))


# OpenAI API reference (deprecated `functions`): the call streams in `delta.function_call`
# and the stream ends with finish_reason "function_call".
async def test_legacy_function_call_is_collected_as_a_tool_call() -> None:
    got = await events(
        choice({"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ""}}),
        choice({"function_call": {"arguments": "{\"city\":"}}),
        choice({"function_call": {"arguments": "\"Oslo\"}"}}),
        choice({}, "function_call"), USAGE, DONE,
    )
    assert got[0].tool_calls[0].name == "get_weather"
    assert got[0].tool_calls[0].arguments == '{"city":"Oslo"}'
    assert got[1] == Finish(FinishReason.TOOL_CALLS, Usage(9, 3))


# OpenAI API reference, chat.completion.chunk: `delta.refusal` carries the refusal text
# instead of `content` (structured outputs); the finish_reason stays "stop".
async def test_a_refusal_reaches_the_caller_as_content() -> None:
    got = await events(
        choice({"role": "assistant", "content": None, "refusal": ""}),
        choice({"refusal": "I'm sorry, I can't help with that."}),
        choice({}, "stop"), USAGE, DONE,
    )
    assert got == [Delta("I'm sorry, I can't help with that."), Finish(FinishReason.STOP, Usage(9, 3))]


# vLLM before the nested shape (entrypoints/openai/protocol.py ErrorResponse, sent by
# create_streaming_error_response): a flat object with "object":"error".
async def test_a_flat_error_object_mid_stream_keeps_its_message() -> None:
    flat = b'data: {"object":"error","message":"The model ran out of KV cache","type":"InternalServerError","param":null,"code":500}\n\n'
    with pytest.raises(BackendServerError, match="ran out of KV cache"):
        await events(choice({"content": "par"}), flat)


async def test_a_flat_error_body_keeps_its_message() -> None:
    flat = b'{"object":"error","message":"This model\'s maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}'
    with pytest.raises(BackendRejected, match="HTTP 400: This model's maximum context length is 2048"):
        [event async for event in adapter(flat, status=400).stream_chat(REQUEST)]


# ik_llama.cpp (examples/server, send_done defaults to false): the stream closes after the
# finish_reason chunk and the usage chunk, without `data: [DONE]`.
async def test_a_stream_ending_after_finish_and_usage_without_done_is_complete() -> None:
    got = await events(choice({"content": "Hi"}), choice({}, "stop"), USAGE)
    assert got == [Delta("Hi"), Finish(FinishReason.STOP, Usage(9, 3))]


async def test_a_stream_ending_after_finish_without_usage_or_done_is_broken() -> None:
    with pytest.raises(BackendProtocolError, match=r"before \[DONE\]"):
        await events(choice({"content": "Hi"}), choice({}, "stop"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("", None), ("soon", None), ("5", None)],
)
def test_go_durations_of_ratelimit_reset_headers(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


def test_ratelimit_reset_waits_for_the_exhausted_limit_else_the_later_one() -> None:
    both = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert parse_ratelimit_reset(httpx.Headers(both)) == 360.0
    assert parse_ratelimit_reset(httpx.Headers({**both, "x-ratelimit-remaining-requests": "0"})) == 1.0
    assert parse_ratelimit_reset(httpx.Headers({})) is None


# llama.cpp tools/server/server-task.cpp to_json_oaicompat_chat_stream: with include_usage
# the last chunk has empty choices, usage with prompt_tokens_details.cached_tokens, and
# the slot's timings (server-common.cpp server_slot_stats::to_json, milliseconds).
async def test_llama_cpp_usage_details_and_timings_reach_finish() -> None:
    last = (
        b'data: {"choices":[],"created":1733000000,"id":"chatcmpl-abc","model":"smollm2",'
        b'"system_fingerprint":"b1-deadbee","object":"chat.completion.chunk",'
        b'"usage":{"completion_tokens":8,"prompt_tokens":31,"total_tokens":39,"prompt_tokens_details":{"cached_tokens":30}},'
        b'"timings":{"cache_n":30,"prompt_n":1,"prompt_ms":12.5,"prompt_per_token_ms":12.5,"prompt_per_second":80.0,'
        b'"predicted_n":8,"predicted_ms":250.0,"predicted_per_token_ms":31.25,"predicted_per_second":32.0}}\n\n'
    )
    got = await events(choice({"content": "Hi"}), choice({}, "stop"), last, DONE)
    assert got[-1] == Finish(
        FinishReason.STOP, Usage(31, 8, cached_prompt_tokens=30), Timings(prompt_eval=0.0125, generation=0.25)
    )


# OpenAI API reference, CompletionUsage: completion_tokens_details.reasoning_tokens (o-series).
async def test_reasoning_tokens_are_carried() -> None:
    usage = data({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 300, "total_tokens": 320,
                                           "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                                           "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0}}})
    got = await events(choice({"content": "4"}), choice({}, "stop"), usage, DONE)
    assert got[-1] == Finish(FinishReason.STOP, Usage(20, 300, cached_prompt_tokens=0, reasoning_tokens=256))
