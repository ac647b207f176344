"""Random and malformed GenerateRequest and AppendFrame messages, and raw
bytes, always get a clean status: never UNKNOWN or INTERNAL, and the server
stays up. The gateway and a fake upstream run on a loop in a background
thread, so hypothesis can drive plain synchronous tests."""

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway import config as config_module
from gateway.server import Gateway
from tests.fakes import FakeOllama
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc, session_pb2, session_pb2_grpc

BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
text = st.text(max_size=40)
role = st.integers(min_value=-3, max_value=8)
tool_call = st.builds(common_pb2.ToolCall, id=text, name=text, arguments=st.sampled_from(["", "{}", "[1]", "{x", '{"a":1}']) | text)
message = st.builds(generate_pb2.Message, role=role, content=text, tool_call_id=text, tool_name=text,
                    images=st.lists(st.binary(max_size=16), max_size=2), tool_calls=st.lists(tool_call, max_size=2))
options = st.builds(generate_pb2.GenerationOptions, temperature=st.floats(allow_nan=True, allow_infinity=True),
                    top_p=st.floats(allow_nan=True), max_tokens=st.integers(0, 2**32 - 1),
                    stop=st.lists(text, max_size=6), seed=st.integers(-2**63, 2**63 - 1))
tool = st.builds(generate_pb2.Tool, name=text, description=text,
                 parameters=st.sampled_from(["", "{}", "[]", "nope", '{"type":"object"}']) | text)
generate_request = st.builds(
    generate_pb2.GenerateRequest, model=st.sampled_from(["", "m", "missing", "r"]) | text,
    messages=st.lists(message, max_size=4), session_id=st.sampled_from(["", "s1", "bad id", "x" * 200]) | text,
    tools=st.lists(tool, max_size=3), options=options, task=text, metadata=st.dictionaries(text, text, max_size=3))
frame = st.builds(session_pb2.Frame, role=role, content=text, tool_calls=st.lists(tool_call, max_size=2),
                  state=st.text(max_size=200), metadata=st.dictionaries(text, text, max_size=3))
append_request = st.builds(session_pb2.AppendFrameRequest, session_id=st.sampled_from(["s1", "", "bad id"]) | text,
                           frame=frame, expected_seq=st.integers(0, 2**64 - 1))


@pytest.fixture(scope="module")
def target():
    """(loop, address) of a gateway running in a background thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state = {}

    async def run():
        async with FakeOllama(models=["m"]) as ollama:
            yaml = (f"listen: 127.0.0.1:0\nsessions: {{store: memory}}\nlimits: {{max_message_bytes: 4096}}\n"
                    f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
                    "routes:\n  - {name: r, targets: [{backend: local, model: m}]}\n")
            gateway = Gateway(config_module.parse(yaml, {}))
            state["address"] = f"127.0.0.1:{await gateway.start()}"
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await gateway.stop(grace=0)

    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), daemon=True)
    thread.start()
    ready.wait(30)
    yield loop, state["address"]
    loop.call_soon_threadsafe(state["stop"].set)
    thread.join(30)


def _code(loop, address, call) -> grpc.StatusCode:
    async def go():
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                result = call(channel)
                if hasattr(result, "__aiter__"):
                    async for _ in result:
                        pass
                else:
                    await result
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    return asyncio.run_coroutine_threadsafe(go(), loop).result(30)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(generate_request)
def test_random_generate_requests_get_a_clean_status(target, request_):
    loop, address = target
    assert _code(loop, address, lambda ch: generate_pb2_grpc.GenerateServiceStub(ch).Generate(request_, timeout=10)) not in BAD


@FUZZ
@given(append_request)
def test_random_append_frames_get_a_clean_status(target, request_):
    loop, address = target
    assert _code(loop, address, lambda ch: session_pb2_grpc.SessionServiceStub(ch).AppendFrame(request_, timeout=10)) not in BAD


@FUZZ
@given(st.binary(max_size=64), st.sampled_from([
    "/turnout.v1.GenerateService/Generate", "/turnout.v1.GenerateService/Complete",
    "/turnout.v1.SessionService/AppendFrame", "/turnout.v1.SessionService/ListFrames",
    "/turnout.v1.ModelService/PullModel"]))
def test_raw_bytes_get_a_clean_status(target, data, method):
    loop, address = target
    streaming = method.endswith(("Generate", "PullModel"))
    assert _code(loop, address, lambda ch: (ch.unary_stream if streaming else ch.unary_unary)(method)(data, timeout=10)) not in BAD


def test_the_server_is_still_up(target):
    loop, address = target
    status = _code(loop, address, lambda ch: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()))
    assert status == grpc.StatusCode.OK
