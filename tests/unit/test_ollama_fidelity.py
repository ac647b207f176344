"""What Ollama's server really sends and reads (docs/api.md, api/types.go,
server/routes.go), fed byte for byte through the adapter."""

from __future__ import annotations

import httpx
import pytest

from adapters.http import HttpSettings, build_client
from adapters.ollama import OllamaAdapter, build_chat_payload
from gateway.domain import ChatRequest, Message, Role, ToolCall
from gateway.errors import BackendProtocolError
from tests.unit.reads import in_reads

REQUEST = ChatRequest(model="llama3.2", messages=(Message(Role.USER, "hi"),))


def adapter(*reads: bytes) -> OllamaAdapter:
    client = build_client("http://127.0.0.1:11434", HttpSettings(), transport=httpx.MockTransport(in_reads(*reads)))
    return OllamaAdapter("local", client)


# api/types.go ToolCall has `id`; the tool-calling docs echo the assistant turn with its
# calls and answer with {"role":"tool","tool_name":...}: templates name the result by tool_name.
def test_assistant_tool_calls_keep_their_id_and_a_tool_result_gets_its_tool_name() -> None:
    request = ChatRequest(model="qwen3", messages=(
        Message(Role.USER, "weather in Paris and Tokyo?"),
        Message(Role.ASSISTANT, tool_calls=(
            ToolCall("call_8x2kq0ab", "get_weather", '{"city":"Paris"}'),
            ToolCall("call_p1z7m3cd", "get_time", '{"city":"Tokyo"}'),
        )),
        Message(Role.TOOL, "14C", tool_call_id="call_8x2kq0ab"),
        Message(Role.TOOL, "09:00", tool_call_id="call_p1z7m3cd", tool_name="clock"),
    ))
    messages = build_chat_payload(request)["messages"]
    assert [call["id"] for call in messages[1]["tool_calls"]] == ["call_8x2kq0ab", "call_p1z7m3cd"]
    assert messages[2] == {"role": "tool", "content": "14C", "tool_name": "get_weather", "tool_call_id": "call_8x2kq0ab"}
    assert messages[3]["tool_name"] == "clock"


# docs/api.md "Load a model" / "Unload a model": a chat reply that is a model load or
# unload, not a generation (done_reason "load" / "unload", empty content).
@pytest.mark.parametrize("reason", [b"load", b"unload"])
async def test_a_load_or_unload_reply_is_not_a_finished_answer(reason: bytes) -> None:
    line = (b'{"model":"llama3.2","created_at":"2023-12-18T19:52:07.071755Z","message":{"role":"assistant","content":""},'
            b'"done_reason":"' + reason + b'","done":true}\n')
    with pytest.raises(BackendProtocolError, match=f"model {reason.decode()} instead of a generation"):
        [event async for event in adapter(line).stream_chat(REQUEST)]


# server/images.go PullModel: the last status is "success"; a body that ends before it
# (the server restarted, a proxy cut the stream) has not pulled the model.
async def test_a_pull_that_ends_without_success_is_an_error() -> None:
    lines = (
        b'{"status":"pulling manifest"}\n',
        b'{"status":"pulling dde5aa3fc5ff","digest":"sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff","total":2019377376,"completed":241970}\n',
    )
    progress = []
    with pytest.raises(BackendProtocolError, match='before "success"'):
        async for item in adapter(*lines).pull("llama3.2"):
            progress.append(item.status)
    assert progress == ["pulling manifest", "pulling dde5aa3fc5ff"]
