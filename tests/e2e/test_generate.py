"""Generate and Complete through the real server, against each backend kind."""

import json

from tests.e2e.conftest import SECRET, backends_yaml, serve
from tests.e2e.helpers import ask, collect, kinds, text
from tests.fakes import HttpError, Reply
from turnout.v1 import common_pb2, generate_pb2


async def test_ollama_text_streams_started_deltas_completed(ollama):
    async with serve(backends_yaml(ollama)) as c:
        responses = await collect(c.generate.Generate(ask("hello", model="llama3.2:1b")))
    assert kinds(responses)[0] == "started" and kinds(responses)[-1] == "completed"
    assert set(kinds(responses)[1:-1]) == {"delta"}
    started, completed = responses[0].started, responses[-1].completed
    assert (started.route, started.backend, started.model, started.attempt) == ("llama3.2:1b", "local", "llama3.2:1b", 1)
    assert len(started.request_id) == 32
    assert text(responses) == "Hello world"
    assert completed.finish_reason == generate_pb2.FINISH_REASON_STOP
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (10, 5)
    assert completed.total_time.ToNanoseconds() >= completed.time_to_first_token.ToNanoseconds() > 0
    body = ollama.requests[-1].json
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "hello"}]


async def test_openai_text_streams_with_usage_and_the_key(openai):
    async with serve(backends_yaml(openai=openai)) as c:
        responses = await collect(c.generate.Generate(ask("hello", model="gpt-4o-mini")))
    assert text(responses) == "Hello world"
    assert responses[0].started.backend == "cloud"
    assert responses[-1].completed.usage.completion_tokens == 5
    request = openai.requests[-1]
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json["stream_options"] == {"include_usage": True}


async def test_usage_absent_when_the_backend_reports_none(ollama):
    ollama.script(Reply("ok", usage=None))
    async with serve(backends_yaml(ollama)) as c:
        responses = await collect(c.generate.Generate(ask(model="llama3.2:1b")))
    assert not responses[-1].completed.HasField("usage")


async def test_options_reach_ollama_as_its_own_names(ollama):
    options = generate_pb2.GenerationOptions(temperature=0.2, top_p=0.9, max_tokens=64, stop=["END"], seed=7)
    async with serve(backends_yaml(ollama)) as c:
        await collect(c.generate.Generate(ask(model="llama3.2:1b", options=options)))
    sent = ollama.requests[-1].json["options"]
    assert sent == {"temperature": 0.2, "top_p": 0.9, "num_predict": 64, "stop": ["END"], "seed": 7}


async def _tool_call_roundtrip(client, model):
    tool = generate_pb2.Tool(name="get_weather", description="weather",
                             parameters='{"type":"object","properties":{"city":{"type":"string"}}}')
    return await collect(client.generate.Generate(ask("weather in Tokyo?", model=model, tools=[tool])))


async def test_ollama_tool_calls_arrive_whole(ollama):
    ollama.script(Reply(tool_calls=(("get_weather", {"city": "Tokyo"}),)))
    async with serve(backends_yaml(ollama)) as c:
        responses = await _tool_call_roundtrip(c, "llama3.2:1b")
    calls = [call for r in responses if r.WhichOneof("event") == "delta" for call in r.delta.tool_calls]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("get_weather", {"city": "Tokyo"})]
    assert responses[-1].completed.finish_reason == generate_pb2.FINISH_REASON_TOOL_CALLS
    assert ollama.requests[-1].json["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


async def test_openai_tool_call_fragments_are_assembled(openai):
    openai.script(Reply(tool_calls=(("get_weather", {"city": "Tokyo", "unit": "c"}),)))
    async with serve(backends_yaml(openai=openai)) as c:
        responses = await _tool_call_roundtrip(c, "gpt-4o-mini")
    calls = [call for r in responses if r.WhichOneof("event") == "delta" for call in r.delta.tool_calls]
    assert len(calls) == 1 and calls[0].id
    assert json.loads(calls[0].arguments) == {"city": "Tokyo", "unit": "c"}
    assert responses[-1].completed.finish_reason == generate_pb2.FINISH_REASON_TOOL_CALLS


async def test_reasoning_is_streamed_apart_from_content(ollama, openai):
    ollama.script(Reply("42", reasoning=("let me ", "think")))
    openai.script(Reply("42", reasoning=("hmm",)))
    async with serve(backends_yaml(ollama, openai)) as c:
        local = await collect(c.generate.Generate(ask(model="llama3.2:1b")))
        cloud = await collect(c.generate.Generate(ask(model="gpt-4o-mini")))
    assert "".join(r.delta.reasoning for r in local[1:-1]) == "let me think"
    assert "".join(r.delta.reasoning for r in cloud[1:-1]) == "hmm"
    assert text(local) == text(cloud) == "42"


async def test_images_go_as_base64_to_ollama_and_data_urls_to_openai(ollama, openai):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    message = generate_pb2.Message(role=common_pb2.ROLE_USER, content="what is this?", images=[png])
    async with serve(backends_yaml(ollama, openai)) as c:
        for model in ("llama3.2:1b", "gpt-4o-mini"):
            await collect(c.generate.Generate(generate_pb2.GenerateRequest(model=model, messages=[message])))
    assert ollama.requests[-1].json["messages"][0]["images"] == ["iVBORw0KGgoAAAAAAAAAAA=="]
    parts = openai.requests[-1].json["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAA=="}}


async def test_complete_returns_the_assembled_answer(ollama):
    ollama.script(Reply("Hel", "lo", reasoning=("r",)))
    async with serve(backends_yaml(ollama)) as c:
        response = await c.generate.Complete(generate_pb2.CompleteRequest(request=ask(model="llama3.2:1b")))
    assert (response.content, response.reasoning) == ("Hello", "r")
    assert response.started.backend == "local"
    assert response.completed.finish_reason == generate_pb2.FINISH_REASON_STOP


async def test_route_by_name_and_default_route(ollama, openai):
    yaml = backends_yaml(ollama, openai) + (
        "routes:\n"
        "  - {name: chat, targets: [{backend: cloud, model: gpt-4o-mini}]}\n"
        "default_route: chat\n"
    )
    async with serve(yaml) as c:
        named = await collect(c.generate.Generate(ask(model="chat")))
        default = await collect(c.generate.Generate(ask()))
    assert named[0].started.route == default[0].started.route == "chat"
    assert openai.requests[-1].json["model"] == "gpt-4o-mini"


async def test_rule_by_task_picks_a_route(ollama, openai):
    yaml = backends_yaml(ollama, openai) + (
        "routes:\n"
        "  - {name: code, targets: [{backend: local, model: llama3.2:1b}]}\n"
        "rules:\n"
        "  - {when: {task: coding}, route: code}\n"
    )
    async with serve(yaml) as c:
        responses = await collect(c.generate.Generate(ask(model="gpt-4o-mini", task="coding")))
    assert (responses[0].started.route, responses[0].started.backend) == ("code", "local")


async def test_failed_first_target_falls_back_to_the_next(ollama, openai):
    ollama.script(HttpError(500, "runner crashed"))
    yaml = backends_yaml(ollama, openai) + (
        "routes:\n"
        "  - {name: chat, targets: [{backend: local, model: llama3.2:1b}, {backend: cloud, model: gpt-4o-mini}]}\n"
    )
    async with serve(yaml) as c:
        responses = await collect(c.generate.Generate(ask(model="chat")))
    assert (responses[0].started.backend, responses[0].started.attempt) == ("cloud", 2)
    assert text(responses) == "Hello world"
