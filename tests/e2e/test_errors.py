"""Each upstream failure class and each bad request maps to a precise status."""

import asyncio
import time

import grpc
import pytest

from tests.e2e.conftest import SECRET, backends_yaml, serve
from tests.e2e.helpers import BadRequest, RetryInfo, ask, details, failure, kinds
from tests.fakes import FakeOpenAI, Garbage, Hang, HttpError, MidStreamError, Truncate, unused_port
from turnout.v1 import common_pb2, generate_pb2, model_pb2


def one_attempt(backend: str, model: str) -> str:
    """A route `r` that tries `backend` once, so an error reaches the caller as it is."""
    return f"routes:\n  - {{name: r, retry: {{attempts: 1}}, targets: [{{backend: {backend}, model: {model}}}]}}\n"


async def _failure_after_output(call, fake):
    """Reads `started` and the first delta, lets the fake fail the stream,
    and returns (the events seen, the error)."""
    seen = [(await call.read()).WhichOneof("event"), (await call.read()).WhichOneof("event")]
    fake.release.set()
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            seen.append(response.WhichOneof("event"))
    except grpc.aio.AioRpcError as exc:
        return seen, exc
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize("status", [500, 503])
async def test_upstream_5xx_before_output_is_unavailable(ollama, status):
    ollama.script(HttpError(status, "runner crashed"))
    async with serve(backends_yaml(ollama) + one_attempt("local", "llama3.2:1b")) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"HTTP {status}: runner crashed" in error.details()


async def test_upstream_429_carries_retry_info(openai):
    openai.script(HttpError(429, "Rate limit reached", headers={"retry-after": "7"}))
    async with serve(backends_yaml(openai=openai) + one_attempt("cloud", "gpt-4o-mini")) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error, RetryInfo).retry_delay.seconds == 7


async def test_upstream_400_is_invalid_argument_and_not_retried(ollama, openai):
    ollama.script(HttpError(400, "invalid think value: \"loud\""))
    yaml = backends_yaml(ollama, openai) + (
        "routes:\n  - {name: r, targets: [{backend: local, model: llama3.2:1b}, {backend: cloud, model: gpt-4o-mini}]}\n"
    )
    async with serve(yaml) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid think value" in error.details()
    assert not [r for r in openai.requests if r.path.endswith("/chat/completions")]


async def test_upstream_4xx_about_capability_is_failed_precondition(ollama):
    # Ollama server/routes.go: a missing capability (errCapabilities) is HTTP 400 with
    # "<model> does not support tools" (handleScheduleError); not a malformed request.
    ollama.script(HttpError(400, "registry.ollama.ai/library/llama3.2:1b does not support tools"))
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(ask(model="llama3.2:1b")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_model_missing_on_the_backend_is_unavailable_naming_it(ollama):
    async with serve(backends_yaml(ollama) + "routes:\n  - {name: r, targets: [{backend: local, model: nope:1b}]}\n") as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "not found, try pulling it first" in error.details()


@pytest.mark.parametrize("behaviour", [MidStreamError("Hel", message="CUDA error", hold=True), Truncate("Hel", hold=True),
                                       Garbage("Hel", hold=True)], ids=["error-line", "no-done", "garbage"])
async def test_ollama_failure_after_output_ends_unavailable_without_retry(ollama, behaviour):
    ollama.script(behaviour)
    async with serve(backends_yaml(ollama)) as c:
        seen, error = await _failure_after_output(c.generate.Generate(ask(model="llama3.2:1b")), ollama)
    assert seen == ["started", "delta"]
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "after output started" in error.details()
    assert len([r for r in ollama.requests if r.path == "/api/chat"]) == 1


@pytest.mark.parametrize("behaviour", [MidStreamError("Hel", message="overloaded", hold=True), Truncate("Hel", hold=True),
                                       Garbage("Hel", hold=True)], ids=["error-event", "no-done", "garbage"])
async def test_openai_failure_after_output_ends_unavailable(openai, behaviour):
    openai.script(behaviour)
    async with serve(backends_yaml(openai=openai)) as c:
        seen, error = await _failure_after_output(c.generate.Generate(ask(model="gpt-4o-mini")), openai)
    assert seen == ["started", "delta"]
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_failure_before_any_output_is_retried_elsewhere(ollama, openai):
    ollama.script(Truncate())
    yaml = backends_yaml(ollama, openai) + (
        "routes:\n  - {name: r, targets: [{backend: local, model: llama3.2:1b}, {backend: cloud, model: gpt-4o-mini}]}\n"
    )
    async with serve(yaml) as c:
        responses = [r async for r in c.generate.Generate(ask(model="r"))]
    assert responses[0].started.attempt == 2 and kinds(responses)[-1] == "completed"


async def test_connection_refused_is_unavailable():
    yaml = f"backends:\n  - {{name: gone, kind: ollama, url: 'http://127.0.0.1:{unused_port()}', models: [m]}}\n"
    async with serve(yaml) as c:
        error = await failure(c.generate.Generate(ask(model="m")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in error.details()


async def test_unknown_model_is_not_found_and_lists_what_exists(ollama):
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(ask(model="gpt-5")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "llama3.2:1b" in error.details()


def _bad(field_name, **fields):
    return pytest.param(generate_pb2.GenerateRequest(model="llama3.2:1b", **fields), field_name, id=field_name)


USER = generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")


@pytest.mark.parametrize("request_, field_name", [
    _bad("messages"),
    _bad("messages[0].role", messages=[generate_pb2.Message(content="no role")]),
    _bad("tools[0].parameters", messages=[USER], tools=[generate_pb2.Tool(name="t", parameters="[1, 2]")]),
    _bad("tools[0].name", messages=[USER], tools=[generate_pb2.Tool(name="has space")]),
    _bad("options.temperature", messages=[USER], options=generate_pb2.GenerationOptions(temperature=3.5)),
    _bad("options.top_p", messages=[USER], options=generate_pb2.GenerationOptions(top_p=0)),
    _bad("options.max_tokens", messages=[USER], options=generate_pb2.GenerationOptions(max_tokens=0)),
    _bad("messages[0]", messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content="x" * 70_000)]),
    _bad("messages[1].tool_calls[0].arguments", messages=[USER, generate_pb2.Message(
        role=common_pb2.ROLE_ASSISTANT, tool_calls=[common_pb2.ToolCall(name="f", arguments="{oops")])]),
])
async def test_bad_request_is_invalid_argument_naming_the_field(ollama, request_, field_name):
    async with serve(backends_yaml(ollama) + "limits: {max_message_bytes: 65536}\n") as c:
        error = await failure(c.generate.Generate(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error, BadRequest).field_violations[0].field == field_name
    assert error.details().startswith(field_name)
    assert not [r for r in ollama.requests if r.path == "/api/chat"]


async def test_caller_deadline_closes_the_upstream_within_100ms(ollama):
    ollama.script(Hang("Hel"))
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(ask(model="llama3.2:1b"), timeout=0.5))
        ended = time.monotonic()
        await asyncio.wait_for(ollama.disconnected.wait(), 1)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert ollama.disconnect_time - ended < 0.1
        backends = await c.models.ListBackends(model_pb2.ListBackendsRequest())
        assert backends.backends[0].in_flight == 0


async def test_caller_cancel_closes_the_upstream_within_100ms(ollama):
    ollama.script(Hang("Hel"))
    async with serve(backends_yaml(ollama)) as c:
        call = c.generate.Generate(ask(model="llama3.2:1b"))
        assert (await call.read()).WhichOneof("event") == "started"
        await ollama.hung.wait()
        cancelled = time.monotonic()
        call.cancel()
        await asyncio.wait_for(ollama.disconnected.wait(), 1)
        assert ollama.disconnect_time - cancelled < 0.1
        backends = await c.models.ListBackends(model_pb2.ListBackendsRequest())
        assert backends.backends[0].in_flight == 0


async def test_no_secret_in_errors_or_listings(openai):
    openai.script(HttpError(500, "boom"))
    async with serve(backends_yaml(openai=openai) + one_attempt("cloud", "gpt-4o-mini")) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
        listing = await c.models.ListBackends(model_pb2.ListBackendsRequest())
    assert SECRET not in error.details() and SECRET not in str(listing)


async def test_upstream_refusing_our_key_is_unavailable_and_not_leaked():
    async with FakeOpenAI(api_key="another-key") as openai:
        yaml = (f"backends:\n  - {{name: cloud, kind: openai, url: '{openai.url}', api_key: '${{CLOUD_KEY}}',"
                " models: [gpt-4o-mini]}\n")
        async with serve(yaml) as c:
            error = await failure(c.generate.Generate(ask(model="gpt-4o-mini")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 401" in error.details() and SECRET not in error.details()


async def test_an_error_that_echoes_a_huge_model_name_stays_within_grpc_limits(ollama):
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.generate.Generate(ask(model="m" * 8000)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert len(error.details()) < 1200 and error.details().endswith("(cut)")
