"""Generation controls (response_format, tool_choice, reasoning,
backend_options, Message.reasoning) as each backend receives them: the exact
upstream request body, read off the loopback fakes."""

import grpc
import pytest

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import BadRequest, ask, collect, details, failure, text
from tests.fakes import Reply
from turnout.v1 import common_pb2, generate_pb2, session_pb2

SCHEMA = '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'
PARSED_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = generate_pb2.Tool(name="get_weather", description="weather", parameters='{"type":"object"}')
TIME = generate_pb2.Tool(name="get_time", description="time", parameters='{"type":"object"}')
HISTORY = [
    generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi"),
    generate_pb2.Message(role=common_pb2.ROLE_ASSISTANT, content="Hello", reasoning="greet back"),
    generate_pb2.Message(role=common_pb2.ROLE_USER, content="weather in Oslo?"),
]


def _function(tool):
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": {"type": "object"}}}


def _routes(backend: str, model: str) -> str:
    """A route with option defaults on the route and on its one target."""
    return (
        "routes:\n"
        "  - name: chat\n"
        "    options: {num_ctx: 4096, top_k: 20, keep_alive: 5m}\n"
        f"    targets: [{{backend: {backend}, model: '{model}', options: {{top_k: 30, repeat_penalty: 1.1}}}}]\n"
    )


def _everything(**fields) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(
        model="chat", messages=HISTORY, tools=[WEATHER, TIME],
        options=generate_pb2.GenerationOptions(temperature=0.1),
        response_format=generate_pb2.ResponseFormat(
            type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=generate_pb2.JsonSchema(name="weather", schema=SCHEMA, strict=True)),
        reasoning=generate_pb2.REASONING_HIGH,
        backend_options='{"num_ctx": 8192, "temperature": 0.9, "mirostat": 2}',
        **fields,
    )


async def test_every_control_reaches_ollama_in_its_own_wire_shape(ollama):
    async with serve(backends_yaml(ollama) + _routes("local", "llama3.2:1b")) as c:
        await collect(c.generate.Generate(_everything(tool_choice=generate_pb2.ToolChoice(tool="get_weather"))))
    assert ollama.requests[-1].json == {
        "model": "llama3.2:1b",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello", "thinking": "greet back"},
            {"role": "user", "content": "weather in Oslo?"},
        ],
        "stream": True,
        "tools": [_function(WEATHER)],
        "options": {"num_ctx": 8192, "top_k": 30, "repeat_penalty": 1.1, "mirostat": 2, "temperature": 0.1},
        "format": PARSED_SCHEMA,
        "think": "high",
        "keep_alive": "5m",
    }


async def test_every_control_reaches_openai_in_its_own_wire_shape(openai):
    async with serve(backends_yaml(openai=openai) + _routes("cloud", "gpt-4o-mini")) as c:
        await collect(c.generate.Generate(_everything(tool_choice=generate_pb2.ToolChoice(tool="get_weather"))))
    assert openai.requests[-1].json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "weather in Oslo?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [_function(WEATHER), _function(TIME)],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.1,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "weather", "schema": PARSED_SCHEMA, "strict": True}},
        "reasoning_effort": "high",
        "num_ctx": 8192, "top_k": 30, "repeat_penalty": 1.1, "mirostat": 2, "keep_alive": "5m",
    }


MODES = [
    (generate_pb2.TOOL_CHOICE_MODE_AUTO, "auto"),
    (generate_pb2.TOOL_CHOICE_MODE_NONE, "none"),
    (generate_pb2.TOOL_CHOICE_MODE_REQUIRED, "required"),
]


@pytest.mark.parametrize("mode, wire", MODES)
async def test_tool_choice_modes_reach_openai_as_strings(openai, mode, wire):
    request = ask(model="gpt-4o-mini", tools=[WEATHER], tool_choice=generate_pb2.ToolChoice(mode=mode))
    async with serve(backends_yaml(openai=openai)) as c:
        await collect(c.generate.Generate(request))
    assert openai.requests[-1].json["tool_choice"] == wire


async def test_tool_choice_on_ollama_sends_all_no_or_one_tool(ollama):
    sent = []
    async with serve(backends_yaml(ollama)) as c:
        for choice in (generate_pb2.ToolChoice(mode=generate_pb2.TOOL_CHOICE_MODE_AUTO),
                       generate_pb2.ToolChoice(mode=generate_pb2.TOOL_CHOICE_MODE_NONE),
                       generate_pb2.ToolChoice(tool="get_time")):
            await collect(c.generate.Generate(ask(model="llama3.2:1b", tools=[WEATHER, TIME], tool_choice=choice)))
            body = ollama.requests[-1].json
            sent.append([t["function"]["name"] for t in body.get("tools", [])])
            assert "tool_choice" not in body
    assert sent == [["get_weather", "get_time"], [], ["get_time"]]


async def test_required_tool_choice_on_ollama_is_failed_precondition_without_calling_it(ollama):
    request = ask(model="llama3.2:1b", tools=[WEATHER],
                  tool_choice=generate_pb2.ToolChoice(mode=generate_pb2.TOOL_CHOICE_MODE_REQUIRED))
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tool_choice" in error.details() and "Ollama cannot force a tool call" in error.details()
    assert not [r for r in ollama.requests if r.path == "/api/chat"]


@pytest.mark.parametrize("level, think, effort", [
    (generate_pb2.REASONING_OFF, False, "none"),
    (generate_pb2.REASONING_ON, True, "medium"),
    (generate_pb2.REASONING_LOW, "low", "low"),
    (generate_pb2.REASONING_MEDIUM, "medium", "medium"),
])
async def test_reasoning_levels_reach_both_backends(ollama, openai, level, think, effort):
    async with serve(backends_yaml(ollama, openai)) as c:
        await collect(c.generate.Generate(ask(model="llama3.2:1b", reasoning=level)))
        await collect(c.generate.Generate(ask(model="gpt-4o-mini", reasoning=level)))
    assert ollama.requests[-1].json["think"] == think
    assert openai.requests[-1].json["reasoning_effort"] == effort


async def test_json_object_format_and_no_controls_send_nothing_extra(ollama, openai):
    json_object = generate_pb2.ResponseFormat(type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    async with serve(backends_yaml(ollama, openai)) as c:
        await collect(c.generate.Generate(ask(model="llama3.2:1b", response_format=json_object)))
        assert ollama.requests[-1].json["format"] == "json"
        await collect(c.generate.Generate(ask(model="gpt-4o-mini", response_format=json_object)))
        assert openai.requests[-1].json["response_format"] == {"type": "json_object"}
        await collect(c.generate.Generate(ask(model="llama3.2:1b", tools=[WEATHER])))
        await collect(c.generate.Generate(ask(model="gpt-4o-mini", tools=[WEATHER])))
    assert set(ollama.requests[-1].json) == {"model", "messages", "stream", "tools"}
    assert set(openai.requests[-1].json) == {"model", "messages", "stream", "stream_options", "tools"}


async def test_gateway_fields_win_over_backend_options(ollama, openai):
    options = '{"model": "other", "stream": false, "messages": [], "keep_alive": 0}'
    async with serve(backends_yaml(ollama, openai)) as c:
        assert text(await collect(c.generate.Generate(ask(model="llama3.2:1b", backend_options=options)))) == \
            "Hello world"
        assert text(await collect(c.generate.Generate(ask(model="gpt-4o-mini", backend_options=options)))) == \
            "Hello world"
    ollama_body, openai_body = ollama.requests[-1].json, openai.requests[-1].json
    assert (ollama_body["model"], ollama_body["stream"], ollama_body["keep_alive"]) == ("llama3.2:1b", True, 0)
    assert ollama_body["options"] == {"model": "other", "stream": False, "messages": []}
    assert (openai_body["model"], openai_body["stream"], openai_body["keep_alive"]) == ("gpt-4o-mini", True, 0)


async def test_streamed_reasoning_is_kept_by_a_session_and_sent_back(ollama):
    ollama.script(Reply("4", reasoning=("2+2 ", "is 4")), Reply("8"))
    async with serve(backends_yaml(ollama)) as c:
        await collect(c.generate.Generate(ask("2+2?", model="llama3.2:1b", session_id="s1")))
        await collect(c.generate.Generate(ask("and doubled?", model="llama3.2:1b", session_id="s1")))
        frames = (await c.sessions.ListFrames(session_pb2.ListFramesRequest(session_id="s1"))).frames
    assert [f.reasoning for f in frames] == ["", "2+2 is 4", "", ""]
    assert ollama.requests[-1].json["messages"] == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "thinking": "2+2 is 4"},
        {"role": "user", "content": "and doubled?"},
    ]


def _bad(field_name, **fields):
    fields.setdefault("messages", [generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")])
    request = generate_pb2.GenerateRequest(model="llama3.2:1b", **fields)
    return pytest.param(request, field_name, id=field_name)


@pytest.mark.parametrize("request_, field_name", [
    _bad("response_format.json_schema.schema", response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=generate_pb2.JsonSchema(schema="[1]"))),
    _bad("response_format.json_schema.schema", response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=generate_pb2.JsonSchema(schema="{oops"))),
    _bad("response_format.json_schema.schema", response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)),
    _bad("response_format.json_schema.name", response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=generate_pb2.JsonSchema(name="has space", schema="{}"))),
    _bad("response_format.json_schema", response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT, json_schema=generate_pb2.JsonSchema(schema="{}"))),
    _bad("response_format.type", response_format=generate_pb2.ResponseFormat(type=42)),
    _bad("tool_choice.tool", tools=[WEATHER], tool_choice=generate_pb2.ToolChoice(tool="get_time")),
    _bad("tool_choice.mode", tool_choice=generate_pb2.ToolChoice(mode=generate_pb2.TOOL_CHOICE_MODE_REQUIRED)),
    _bad("tool_choice.mode", tool_choice=generate_pb2.ToolChoice(mode=17)),
    _bad("reasoning", reasoning=9),
    _bad("backend_options", backend_options="num_ctx=8192"),
    _bad("backend_options", backend_options="[1, 2]"),
    _bad("messages[0].reasoning", messages=[
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi", reasoning="not mine")]),
])
async def test_bad_controls_are_invalid_argument_naming_the_field(ollama, request_, field_name):
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error, BadRequest).field_violations[0].field == field_name
    assert not [r for r in ollama.requests if r.path == "/api/chat"]
