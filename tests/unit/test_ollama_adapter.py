"""Ollama native adapter: payload mapping, chunk decoding, and HTTP behaviour
through httpx.MockTransport (PROTOCOLS.md section A)."""

from __future__ import annotations

import json
import re
from typing import AsyncIterator, Callable

import httpx
import pytest

from adapters.http import HttpSettings, build_client
from tests.unit.reads import in_reads
from adapters.ollama import OllamaAdapter, OllamaChatDecoder, build_chat_payload
from gateway.domain import (
    BackendKind,
    ChatRequest,
    Delta,
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    Options,
    PullProgress,
    Role,
    Timings,
    Tool,
    ToolCall,
    Usage,
)
from gateway.errors import (
    BackendModelMissing,
    BackendProtocolError,
    BackendRateLimited,
    BackendRejected,
    BackendServerError,
)

FINAL_LINE = (
    b'{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant",'
    b'"content":""},"done_reason":"stop","done":true,"total_duration":182242375,'
    b'"load_duration":41295167,"prompt_eval_count":169,"prompt_eval_duration":24573166,'
    b'"eval_count":15,"eval_duration":115959084}\n'
)
TOOL_LINE = (
    b'{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc12345",'
    b'"function":{"index":0,"name":"get_weather","arguments":{"city":"T\xc5\x8dky\xc5\x8d","n":1}}}]},'
    b'"done":false}\n'
)
# The final line's api.Metrics durations are nanoseconds.
FINAL_TIMINGS = Timings(load=0.041295167, prompt_eval=0.024573166, generation=0.115959084, total=0.182242375)
REQUEST = ChatRequest(model="llama3.2", messages=(Message(Role.USER, "hi"),))

Handler = Callable[[httpx.Request], httpx.Response]


def adapter(handler: Handler) -> OllamaAdapter:
    client = build_client(
        "http://127.0.0.1:11434", HttpSettings(), transport=httpx.MockTransport(handler)
    )
    return OllamaAdapter("local", client)


def content_line(text: str, field: str = "content") -> bytes:
    return json.dumps({"message": {"role": "assistant", field: text}, "done": False}).encode() + b"\n"


def ndjson(*lines: bytes, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, content=b"".join(lines))


async def collect(stream: AsyncIterator) -> list:
    return [item async for item in stream]


def test_payload_maps_messages_tools_and_options() -> None:
    request = ChatRequest(
        model="llama3.2",
        messages=(
            Message(Role.SYSTEM, "be brief"),
            Message(Role.USER, "look", images=(b"\x89PNG",)),
            Message(Role.ASSISTANT, tool_calls=(ToolCall("c1", "get_weather", '{"city":"Tokyo"}'),)),
            Message(Role.TOOL, "11C", tool_name="get_weather", tool_call_id="c1"),
        ),
        tools=(Tool("get_weather", "weather", {"type": "object"}),),
        options=Options(temperature=0.2, max_tokens=256, stop=("END",), seed=0),
    )
    assert build_chat_payload(request) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "look", "images": ["iVBORw=="]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}],
            },
            {"role": "tool", "content": "11C", "tool_name": "get_weather", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object"}},
            }
        ],
        "stream": True,
        "options": {"temperature": 0.2, "num_predict": 256, "stop": ["END"], "seed": 0},
    }


def test_payload_omits_unset_options_and_tools() -> None:
    assert build_chat_payload(REQUEST) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_payload_rejects_tool_arguments_that_are_not_a_json_object() -> None:
    bad = Message(Role.ASSISTANT, tool_calls=(ToolCall("c1", "f", "[1]"),))
    with pytest.raises(BackendRejected):
        build_chat_payload(ChatRequest(model="m", messages=(bad,)))


def test_decoder_final_line_gives_stop_and_usage() -> None:
    decoder = OllamaChatDecoder("local")
    events = decoder.feed(json.loads(FINAL_LINE))
    assert events == [Finish(FinishReason.STOP, Usage(prompt_tokens=169, completion_tokens=15), FINAL_TIMINGS)]
    assert decoder.finished


def test_decoder_whole_tool_call_keeps_id_and_compact_arguments() -> None:
    decoder = OllamaChatDecoder("local")
    events = decoder.feed(json.loads(TOOL_LINE)) + decoder.feed(json.loads(FINAL_LINE))
    call = ToolCall("call_abc12345", "get_weather", '{"city":"Tōkyō","n":1}')
    assert events == [Delta(tool_calls=(call,)), Finish(FinishReason.TOOL_CALLS, Usage(169, 15), FINAL_TIMINGS)]


def test_decoder_generates_tool_call_id_when_absent() -> None:
    line = {"message": {"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "done": False}
    [delta] = OllamaChatDecoder("local").feed(line)
    assert re.fullmatch(r"call_[a-z0-9]{8}", delta.tool_calls[0].id)
    assert delta.tool_calls[0].arguments == "{}"


def test_decoder_thinking_becomes_reasoning_and_empty_chunks_are_skipped() -> None:
    decoder = OllamaChatDecoder("local")
    assert decoder.feed({"message": {"thinking": "hmm"}, "done": False}) == [Delta(reasoning="hmm")]
    assert decoder.feed({"message": {"content": ""}, "done": False}) == []


def test_decoder_length_and_missing_usage() -> None:
    assert OllamaChatDecoder("local").feed({"done": True, "done_reason": "length"}) == [
        Finish(FinishReason.LENGTH, None)
    ]


def test_decoder_error_line_raises_server_error() -> None:
    with pytest.raises(BackendServerError, match="failed mid-stream: out of memory"):
        OllamaChatDecoder("local").feed({"error": "out of memory"})


async def test_stream_chat_text_then_finish_and_posts_payload() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return in_reads(content_line("Hel"), content_line("lo"), FINAL_LINE)(request)

    events = await collect(adapter(handler).stream_chat(REQUEST))
    assert events == [Delta("Hel"), Delta("lo"), Finish(FinishReason.STOP, Usage(169, 15), FINAL_TIMINGS)]
    assert seen[0].url.path == "/api/chat"
    assert json.loads(seen[0].content) == build_chat_payload(REQUEST)


async def test_stream_chat_tool_calls() -> None:
    events = await collect(adapter(ndjson(TOOL_LINE, FINAL_LINE)).stream_chat(REQUEST))
    assert events[-1].reason is FinishReason.TOOL_CALLS
    assert events[0].tool_calls[0].name == "get_weather"


async def test_stream_chat_lines_of_one_read_are_coalesced_into_one_delta() -> None:
    events = await collect(adapter(ndjson(content_line("Hel"), content_line("lo"), FINAL_LINE)).stream_chat(REQUEST))
    assert events == [Delta("Hello"), Finish(FinishReason.STOP, Usage(169, 15), FINAL_TIMINGS)]


async def test_stream_chat_reasoning() -> None:
    handler = in_reads(content_line("plan", "thinking"), content_line("answer"), FINAL_LINE)
    events = await collect(adapter(handler).stream_chat(REQUEST))
    assert events[:2] == [Delta(reasoning="plan"), Delta(content="answer")]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, BackendModelMissing),
        (429, BackendRateLimited),
        (500, BackendServerError),
        (400, BackendRejected),
    ],
)
async def test_stream_chat_http_error_before_stream(status: int, error: type) -> None:
    handler = ndjson(b'{"error":"model \'x\' not found"}', status=status)
    with pytest.raises(error, match="HTTP %d: model 'x' not found" % status):
        await collect(adapter(handler).stream_chat(REQUEST))


async def test_stream_chat_429_carries_retry_after() -> None:
    handler = lambda request: httpx.Response(429, headers={"retry-after": "7"}, text="busy")
    with pytest.raises(BackendRateLimited) as caught:
        await collect(adapter(handler).stream_chat(REQUEST))
    assert caught.value.retry_after == 7.0
    assert "busy" in caught.value.message


async def test_stream_chat_mid_stream_error_line() -> None:
    handler = in_reads(content_line("par"), b'{"error":"runner crashed"}\n')
    stream = adapter(handler).stream_chat(REQUEST)
    assert await anext(stream) == Delta("par")
    with pytest.raises(BackendServerError, match="runner crashed"):
        await anext(stream)


async def test_stream_chat_error_in_the_same_read_fails_before_any_output() -> None:
    stream = adapter(ndjson(content_line("par"), b'{"error":"runner crashed"}\n')).stream_chat(REQUEST)
    with pytest.raises(BackendServerError, match="runner crashed"):
        await anext(stream)


async def test_stream_chat_without_done_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError, match="before done"):
        await collect(adapter(ndjson(content_line("cut"))).stream_chat(REQUEST))


async def test_stream_chat_garbage_line_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError, match="malformed"):
        await collect(adapter(ndjson(b"<html>oops</html>\n")).stream_chat(REQUEST))


async def test_closing_stream_chat_closes_the_upstream_response() -> None:
    closed: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield content_line("one")
            yield content_line("two")

        async def aclose(self) -> None:
            closed.append(True)

    stream = adapter(lambda request: httpx.Response(200, stream=Body())).stream_chat(REQUEST)
    assert await anext(stream) == Delta("one")
    await stream.aclose()
    assert closed == [True]


async def test_list_models() -> None:
    body = {"models": [{"name": "llama3.2:latest", "size": 2019393189, "details": {"family": "llama"}}]}
    models = await adapter(lambda request: httpx.Response(200, json=body)).list_models()
    assert models == [ModelInfo("llama3.2:latest", size_bytes=2019393189, family="llama")]


async def test_probe_raises_on_server_error() -> None:
    with pytest.raises(BackendServerError):
        await adapter(lambda request: httpx.Response(503, text="down")).probe()


async def test_pull_streams_progress() -> None:
    handler = ndjson(
        b'{"status":"pulling manifest"}\n',
        b'{"status":"pulling 0123456789ab","digest":"sha256:0123","total":100,"completed":40}\n',
        b'{"status":"success"}\n',
    )
    progress = await collect(adapter(handler).pull("llama3.2"))
    assert progress == [
        PullProgress("pulling manifest"),
        PullProgress("pulling 0123456789ab", "sha256:0123", 100, 40),
        PullProgress("success"),
    ]


async def test_pull_error_line_raises_server_error() -> None:
    handler = ndjson(
        b'{"status":"pulling manifest"}\n',
        b'{"error":"pull model manifest: file does not exist"}\n',
    )
    with pytest.raises(BackendServerError, match="file does not exist"):
        await collect(adapter(handler).pull("nope"))


async def test_delete_sends_model_in_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    await adapter(handler).delete("llama3.2")
    assert (seen[0].method, seen[0].url.path) == ("DELETE", "/api/delete")
    assert json.loads(seen[0].content) == {"model": "llama3.2"}


async def test_delete_missing_model() -> None:
    handler = lambda request: httpx.Response(404, json={"error": "model 'x' not found"})
    with pytest.raises(BackendModelMissing):
        await adapter(handler).delete("x")


def test_kind_is_ollama() -> None:
    assert OllamaAdapter.kind is BackendKind.OLLAMA
