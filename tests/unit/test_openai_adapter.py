"""OpenAI Chat Completions adapter: payload mapping, chunk decoding, and HTTP
behaviour through httpx.MockTransport (PROTOCOLS.md section B)."""

from __future__ import annotations

import json
import re
from typing import AsyncIterator, Callable

import httpx
import pytest

from adapters.http import HttpSettings, build_client
from tests.unit.reads import in_reads
from adapters.openai import OpenAIAdapter, OpenAIChatDecoder, build_chat_payload, image_mime
from adapters.streams import StreamDecodeError
from gateway.domain import (
    BackendKind,
    ChatRequest,
    Delta,
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    Options,
    Role,
    Tool,
    ToolCall,
    Usage,
)
from gateway.errors import (
    BackendAuthFailed,
    BackendModelMissing,
    BackendProtocolError,
    BackendRateLimited,
    BackendRejected,
    BackendServerError,
    Unsupported,
)

MINIMAL_STREAM = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":\\"Tokyo\\"}"}}]},"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}\n'
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
MINIMAL_EVENTS = [
    Delta(tool_calls=(ToolCall("call_a", "get_weather", '{"city":"Tokyo"}'),)),
    Finish(FinishReason.TOOL_CALLS, Usage(prompt_tokens=10, completion_tokens=5)),
]
REQUEST = ChatRequest(model="gpt-4o-mini", messages=(Message(Role.USER, "hi"),))
PNG = b"\x89PNG\r\n\x1a\n0000"

Handler = Callable[[httpx.Request], httpx.Response]


def adapter(handler: Handler) -> OpenAIAdapter:
    client = build_client(
        "https://api.example.test/v1",
        HttpSettings(),
        headers={"Authorization": "Bearer sk-secret"},
        transport=httpx.MockTransport(handler),
    )
    return OpenAIAdapter("cloud", client)


def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], "usage": None}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def sse(*events: bytes, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, content=b"".join(events))


def tool_fragment(fragment: dict) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]})


def feed_all(decoder: OpenAIChatDecoder, stream: bytes) -> list:
    payloads = [line[6:].decode() for line in stream.split(b"\n") if line.startswith(b"data: ")]
    return [event for payload in payloads for event in decoder.feed(payload)]


async def collect(stream: AsyncIterator) -> list:
    return [item async for item in stream]


def test_payload_maps_messages_tools_and_options() -> None:
    request = ChatRequest(
        model="gpt-4o-mini",
        messages=(
            Message(Role.SYSTEM, "be brief"),
            Message(Role.USER, "what is this?", images=(PNG,)),
            Message(Role.ASSISTANT, tool_calls=(ToolCall("c1", "get_weather", '{"city":"Tokyo"}'),)),
            Message(Role.TOOL, "11C", tool_call_id="c1", tool_name="get_weather"),
        ),
        tools=(Tool("get_weather", "weather", {"type": "object"}),),
        options=Options(temperature=0.5, top_p=0.9, max_tokens=64, stop=("END",), seed=3),
    )
    assert build_chat_payload(request) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgowMDAw"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}}
                ],
            },
            {"role": "tool", "content": "11C", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object"}},
            }
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "stop": ["END"],
        "seed": 3,
    }


def test_payload_omits_unset_options() -> None:
    assert set(build_chat_payload(REQUEST)) == {"model", "messages", "stream", "stream_options"}


@pytest.mark.parametrize(
    ("image", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"GIF89a...", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7", "application/octet-stream"),
    ],
)
def test_image_mime_from_magic_bytes(image: bytes, mime: str) -> None:
    assert image_mime(image) == mime


def test_decoder_minimal_stream_gives_whole_tool_call_and_usage() -> None:
    decoder = OpenAIChatDecoder("cloud")
    assert feed_all(decoder, MINIMAL_STREAM) == MINIMAL_EVENTS
    assert decoder.finished


def test_decoder_accepts_name_and_id_on_a_later_fragment() -> None:
    decoder = OpenAIChatDecoder("cloud")
    decoder.feed(tool_fragment({"index": 1, "function": {"arguments": "{"}}))
    decoder.feed(tool_fragment({"index": 1, "id": "x", "function": {"name": "f", "arguments": "}"}}))
    assert decoder.feed(chunk({}, "tool_calls")[6:].decode()) == [Delta(tool_calls=(ToolCall("x", "f", "{}"),))]
    assert decoder.feed("[DONE]") == [Finish(FinishReason.TOOL_CALLS)]


def test_decoder_done_without_a_finish_reason_is_a_protocol_error() -> None:
    decoder = OpenAIChatDecoder("cloud")
    decoder.feed(chunk({"content": "cut o"})[6:].decode())
    with pytest.raises(BackendProtocolError, match="no finish_reason"):
        decoder.feed("[DONE]")


def test_decoder_generates_missing_tool_call_id() -> None:
    decoder = OpenAIChatDecoder("cloud")
    decoder.feed(tool_fragment({"index": 0, "function": {"name": "f"}}))
    [delta] = decoder.feed(chunk({}, "tool_calls")[6:].decode())
    assert re.fullmatch(r"call_[a-z0-9]{8}", delta.tool_calls[0].id)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("function_call", FinishReason.TOOL_CALLS),
        ("content_filter", FinishReason.CONTENT_FILTER),
    ],
)
def test_decoder_finish_reason_map(reason: str, expected: FinishReason) -> None:
    decoder = OpenAIChatDecoder("cloud")
    decoder.feed(chunk({}, reason)[6:].decode())
    assert decoder.feed("[DONE]") == [Finish(expected, None)]


def test_decoder_reasoning_fields() -> None:
    decoder = OpenAIChatDecoder("cloud")
    assert decoder.feed(chunk({"reasoning": "a"})[6:].decode()) == [Delta(reasoning="a")]
    assert decoder.feed(chunk({"reasoning_content": "b"})[6:].decode()) == [Delta(reasoning="b")]


def test_decoder_error_payload_raises_server_error() -> None:
    with pytest.raises(BackendServerError, match="failed mid-stream: overloaded"):
        OpenAIChatDecoder("cloud").feed('{"error":{"message":"overloaded","type":"api_error"}}')


def test_decoder_non_json_raises_decode_error() -> None:
    with pytest.raises(StreamDecodeError):
        OpenAIChatDecoder("cloud").feed("<html>")


async def test_stream_chat_text_posts_to_v1_chat_completions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return in_reads(chunk({"content": "Hel"}), chunk({"content": "lo"}, "stop"), b"data: [DONE]\n\n")(request)

    events = await collect(adapter(handler).stream_chat(REQUEST))
    assert events == [Delta("Hel"), Delta("lo"), Finish(FinishReason.STOP)]
    assert seen[0].url.path == "/v1/chat/completions"
    assert json.loads(seen[0].content) == build_chat_payload(REQUEST)


async def test_stream_chat_tool_calls_from_minimal_stream() -> None:
    assert await collect(adapter(sse(MINIMAL_STREAM)).stream_chat(REQUEST)) == MINIMAL_EVENTS


async def test_stream_chat_events_of_one_read_are_coalesced_into_one_delta() -> None:
    handler = sse(chunk({"content": "Hel"}), chunk({"content": "lo"}, "stop"), b"data: [DONE]\n\n")
    assert await collect(adapter(handler).stream_chat(REQUEST)) == [Delta("Hello"), Finish(FinishReason.STOP)]


async def test_stream_chat_reasoning() -> None:
    handler = in_reads(chunk({"reasoning": "think"}), chunk({"content": "ok"}, "stop"), b"data: [DONE]\n\n")
    events = await collect(adapter(handler).stream_chat(REQUEST))
    assert events[:2] == [Delta(reasoning="think"), Delta(content="ok")]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, BackendAuthFailed),
        (404, BackendModelMissing),
        (429, BackendRateLimited),
        (500, BackendServerError),
        (400, BackendRejected),
    ],
)
async def test_stream_chat_http_error_before_stream(status: int, error: type) -> None:
    body = b'{"error":{"message":"nope","type":"invalid_request_error","param":null,"code":null}}'
    with pytest.raises(error, match=f"HTTP {status}: nope$"):
        await collect(adapter(sse(body, status=status)).stream_chat(REQUEST))


async def test_stream_chat_429_carries_retry_after_and_no_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "slow"}}
        return httpx.Response(429, headers={"retry-after-ms": "1500"}, json=body)

    with pytest.raises(BackendRateLimited) as caught:
        await collect(adapter(handler).stream_chat(REQUEST))
    assert caught.value.retry_after == 1.5
    assert "sk-secret" not in str(caught.value) and "example.test" not in str(caught.value)


async def test_stream_chat_mid_stream_error_event() -> None:
    handler = sse(chunk({"content": "pa"}), b'data: {"error":{"message":"server died"}}\n\n')
    with pytest.raises(BackendServerError, match="server died"):
        await collect(adapter(handler).stream_chat(REQUEST))


async def test_stream_chat_without_done_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError, match=r"before \[DONE\]"):
        await collect(adapter(sse(chunk({"content": "x"}, "stop"))).stream_chat(REQUEST))


async def test_stream_chat_garbage_event_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError, match="malformed"):
        await collect(adapter(sse(b"data: <html>\n\n")).stream_chat(REQUEST))


async def test_list_models_reads_v1_models() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        body = {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}
        return httpx.Response(200, json=body)

    assert await adapter(handler).list_models() == [ModelInfo("gpt-4o")]
    assert seen == ["/v1/models"]


async def test_probe_raises_auth_failed_on_401() -> None:
    handler = sse(b'{"error":{"message":"bad key"}}', status=401)
    with pytest.raises(BackendAuthFailed, match="bad key"):
        await adapter(handler).probe()


async def test_pull_is_unsupported_on_first_iteration() -> None:
    stream = adapter(sse()).pull("m")
    with pytest.raises(Unsupported, match="cannot pull"):
        await anext(stream)


async def test_delete_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="cannot delete"):
        await adapter(sse()).delete("m")


def test_kind_is_openai() -> None:
    assert OpenAIAdapter.kind is BackendKind.OPENAI
