"""The loopback fakes speak their protocols correctly (driven with plain httpx)."""

import asyncio
import json

import httpx
import pytest

from tests.fakes import (
    FakeOllama, FakeOpenAI, Garbage, Gate, Hang, HttpError, MidStreamError, Reply, Truncate, unused_port,
)

CHAT = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
OAI_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}


async def ndjson(client: httpx.AsyncClient, path: str, body: dict) -> list[dict]:
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        return [json.loads(line) async for line in response.aiter_lines() if line]


async def sse(client: httpx.AsyncClient, body: dict) -> list[str]:
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        raw = (await response.aread()).decode()
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(event.startswith("data: ") for event in events)
    return [event[len("data: "):] for event in events]


async def test_ollama_reply_is_valid_ndjson_ending_with_done():
    async with FakeOllama() as fake, httpx.AsyncClient(base_url=fake.url) as client:
        fake.script(Reply("Hi", " there", reasoning=("hmm",), tool_calls=(("get_weather", {"city": "Tokyo"}),)))
        lines = await ndjson(client, "/api/chat", CHAT)
        default = await ndjson(client, "/api/chat", CHAT)
        missing = await client.post("/api/chat", json={**CHAT, "model": "nope"})
        request = (await fake.wait_for_requests(2, path="/api/chat"))[0]

    assert [line["message"].get("thinking") for line in lines[:1]] == ["hmm"]
    assert "".join(line["message"]["content"] for line in lines) == "Hi there"
    (call,) = lines[3]["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == 13
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert all(line["done"] is False and line["created_at"].endswith("Z") for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (10, 5)
    assert "".join(line["message"]["content"] for line in default) == "Hello world"
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "nope" not found, try pulling it first'}
    assert request.json == CHAT and request.headers["content-type"] == "application/json"


async def test_openai_reply_ends_with_done_and_tool_fragments_reassemble():
    args = {"city": "Tokyo", "days": [1, 2]}
    async with FakeOpenAI(api_key="sk-test") as fake:
        async with httpx.AsyncClient(base_url=fake.url, headers={"Authorization": "Bearer sk-test"}) as client:
            fake.script(Reply("Hi", reasoning=("r",), tool_calls=(("get_weather", args),)))
            events = await sse(client, OAI_CHAT)
            models = (await client.get("/models")).json()

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["r"]
    fragments = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert len(fragments) >= 3 and fragments[0]["type"] == "function" and fragments[0]["function"]["name"]
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == args
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
    assert all(c["usage"] is None for c in chunks[:-1])
    assert models["data"] == [{"id": "gpt-4o-mini", "object": "model", "created": 1700000000, "owned_by": "library"}]


async def test_http_error_shapes():
    async with FakeOllama() as ollama, FakeOpenAI(api_key="k") as openai, httpx.AsyncClient() as client:
        ollama.script(HttpError(503, "busy"))
        openai.script(HttpError(429, "slow down", headers={"retry-after": "2"}), HttpError(400, "bad"))
        auth = {"Authorization": "Bearer k"}
        o503 = await client.post(ollama.url + "/api/chat", json=CHAT)
        o404 = await client.get(ollama.url + "/api/nothing")
        a429 = await client.post(openai.url + "/chat/completions", json=OAI_CHAT, headers=auth)
        a400 = await client.post(openai.url + "/chat/completions", json=OAI_CHAT, headers=auth)
        a401 = await client.get(openai.url + "/models")

    assert (o503.status_code, o503.json()) == (503, {"error": "busy"})
    assert o503.headers["content-type"].startswith("application/json")
    assert (o404.status_code, o404.text) == (404, "404 page not found")
    assert a429.status_code == 429 and a429.headers["retry-after"] == "2"
    assert a429.json() == {"error": {"message": "slow down", "type": "api_error", "param": None, "code": None}}
    assert a400.json()["error"]["type"] == "invalid_request_error"
    assert a401.status_code == 401 and a401.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("fake_type, path, body", [
    (FakeOllama, "/api/chat", CHAT), (FakeOpenAI, "/chat/completions", OAI_CHAT),
])
async def test_hang_then_client_close_sets_disconnected(fake_type, path, body):
    async with fake_type() as fake, httpx.AsyncClient(base_url=fake.url) as client:
        fake.script(Hang("partial"))
        async with client.stream("POST", path, json=body) as response:
            await fake.hung.wait()
            async for text in response.aiter_text():
                if "partial" in text:
                    break
            assert not fake.disconnected.is_set()
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        assert fake.disconnect_time is not None


async def test_keep_alive_and_stream_endings():
    async with FakeOllama() as fake, httpx.AsyncClient(base_url=fake.url) as client:
        fake.script(MidStreamError("a", message="boom"), Truncate("b"), Garbage("c"), Gate("d"))
        assert (await ndjson(client, "/api/chat", CHAT))[-1] == {"error": "boom"}
        assert (await ndjson(client, "/api/chat", CHAT))[-1]["done"] is False
        async with client.stream("POST", "/api/chat", json=CHAT) as response:
            assert (await response.aread()).endswith(b"\nthis is not json\n")
        async with client.stream("POST", "/api/chat", json=CHAT) as response:
            lines = response.aiter_lines()
            assert json.loads(await anext(lines))["message"]["content"] == "d"
            await fake.hung.wait()
            fake.release.set()
            assert json.loads(await anext(lines))["done"] is True
            assert [line async for line in lines] == []
        assert (await client.get("/")).text == "Ollama is running"
        assert fake.connections == 1 and len(fake.requests) == 5


async def test_pull_progress_order_then_tags_and_delete():
    async with FakeOllama(models=[]) as fake, httpx.AsyncClient(base_url=fake.url) as client:
        progress = await ndjson(client, "/api/pull", {"model": "qwen3:0.6b"})
        tags = (await client.get("/api/tags")).json()["models"]
        deleted = await client.request("DELETE", "/api/delete", json={"model": "qwen3:0.6b"})
        again = await client.request("DELETE", "/api/delete", json={"model": "qwen3:0.6b"})

    statuses = [line["status"] for line in progress]
    layer = statuses[1]
    assert statuses == ["pulling manifest", layer, layer, layer, "verifying sha256 digest",
                        "writing manifest", "removing unused layers", "success"]
    assert layer == "pulling " + progress[1]["digest"][7:19] and "completed" not in progress[1]
    assert [line["completed"] for line in progress[2:4]] == [progress[1]["total"] // 2, progress[1]["total"]]
    assert [t["name"] for t in tags] == ["qwen3:0.6b"] and len(tags[0]["digest"]) == 64
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert again.json() == {"error": "model 'qwen3:0.6b' not found"}


async def test_chunked_request_body_is_recorded_and_unused_port_refuses():
    async def body():
        yield b'{"model":'
        yield b'"gpt-4o-mini"}'

    async with FakeOpenAI() as fake, httpx.AsyncClient(base_url=fake.url) as client:
        waiter = asyncio.create_task(fake.wait_for_requests(1, path="/v1/chat/completions"))
        await (await client.send(client.build_request("POST", "/chat/completions", content=body()))).aclose()
        (request,) = await waiter
    assert request.headers["transfer-encoding"] == "chunked" and request.json == {"model": "gpt-4o-mini"}
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{unused_port()}/")


async def test_openai_stream_endings_without_done():
    async with FakeOpenAI() as fake, httpx.AsyncClient(base_url=fake.url) as client:
        fake.script(MidStreamError("a", message="boom"), Truncate("b"), Garbage("c"))
        failed, truncated, garbage = [await sse(client, OAI_CHAT) for _ in range(3)]

    assert json.loads(failed[-1]) == {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}
    assert json.loads(truncated[-1])["choices"][0]["delta"] == {"content": "b"}
    assert garbage[-1] == "this is not json"
    assert "[DONE]" not in failed + truncated + garbage
