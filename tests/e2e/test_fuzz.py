"""Random and malformed GenerateRequest and AppendFrame messages, and raw
bytes, always get a clean status: never UNKNOWN or INTERNAL, and the server
stays up. Hostile JSON in tool parameters and tool-call arguments (nesting
thousands deep, lone surrogate escapes, NaN/Infinity, numbers thousands of
digits long) and seqs beyond sqlite's integers are INVALID_ARGUMENT naming
the field, or a valid answer. The gateway (sessions on sqlite) and a fake
upstream run on a loop in a background thread, so hypothesis can drive plain
synchronous tests."""

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway import config as config_module
from gateway.server import Gateway
from tests.e2e.helpers import BadRequest, details
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
def target(tmp_path_factory):
    """(loop, address) of a gateway running in a background thread."""
    database = tmp_path_factory.mktemp("fuzz") / "sessions.db"
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state = {}

    async def run():
        async with FakeOllama(models=["m"]) as ollama:
            yaml = (f"listen: 127.0.0.1:0\nsessions: {{store: sqlite, path: '{database}'}}\nlimits: {{max_message_bytes: 4096}}\n"
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
    return _outcome(loop, address, call)[0]


def _outcome(loop, address, call) -> tuple[grpc.StatusCode, str]:
    """The call's status code and, for INVALID_ARGUMENT, the field its BadRequest names."""
    async def go():
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                result = call(channel)
                if hasattr(result, "__aiter__"):
                    async for _ in result:
                        pass
                else:
                    await result
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                bad = details(exc, BadRequest)
                return exc.code(), bad.field_violations[0].field if bad else ""

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


def _nested(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return '{"a":' + opener * depth + "1" + closer * depth + "}"


hostile_json = st.one_of(
    st.builds(_nested, st.integers(1, 3000), st.sampled_from(["[", '{"a":'])),
    st.sampled_from(['{"a":"\\ud800"}', '{"\\udfff":1}', '{"a":["x\\udbff"]}', '{"a":"\\ud83d\\ude00"}']),
    st.sampled_from(['{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}', '{"a":1e999}', '{"a":-1e400}']),
    st.builds(lambda digits, sign: f'{{"a":{sign}{"9" * digits}}}', st.integers(1, 6000), st.sampled_from(["", "-"])),
    st.builds(lambda digits: f'{{"a":0.{"1" * digits}e5}}', st.integers(1, 6000)),
)


def _hostile_generate(parameters: str, arguments: str) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(model="r", messages=[
        generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi"),
        generate_pb2.Message(role=common_pb2.ROLE_ASSISTANT, tool_calls=[
            common_pb2.ToolCall(id="c1", name="f", arguments=arguments)]),
        generate_pb2.Message(role=common_pb2.ROLE_TOOL, content="42", tool_call_id="c1", tool_name="f"),
    ], tools=[generate_pb2.Tool(name="f", parameters=parameters)])


@FUZZ
@given(hostile_json, st.booleans())
def test_hostile_json_is_invalid_argument_naming_the_field_or_served(target, hostile, in_parameters):
    loop, address = target
    parameters, arguments = (hostile, "{}") if in_parameters else ("{}", hostile)
    request_ = _hostile_generate(parameters, arguments)
    code, field = _outcome(loop, address, lambda ch: generate_pb2_grpc.GenerateServiceStub(ch).Generate(request_, timeout=10))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert field == ("tools[0].parameters" if in_parameters else "messages[1].tool_calls[0].arguments")


@FUZZ
@given(hostile_json)
def test_hostile_json_in_a_session_frame_is_invalid_argument(target, hostile):
    loop, address = target
    request_ = session_pb2.AppendFrameRequest(session_id="hostile", frame=session_pb2.Frame(
        role=common_pb2.ROLE_ASSISTANT, tool_calls=[common_pb2.ToolCall(id="c1", name="f", arguments=hostile)]))
    code, field = _outcome(loop, address, lambda ch: session_pb2_grpc.SessionServiceStub(ch).AppendFrame(request_, timeout=10))
    assert (code, field) in ((grpc.StatusCode.OK, ""), (grpc.StatusCode.INVALID_ARGUMENT, "frame.tool_calls[0].arguments"),
                             (grpc.StatusCode.INVALID_ARGUMENT, "frame"))  # over max_message_bytes


def _append_one(loop, address) -> None:
    frame = session_pb2.Frame(role=common_pb2.ROLE_USER, content="x")
    request_ = session_pb2.AppendFrameRequest(session_id="seqs", frame=frame)
    assert _code(loop, address, lambda ch: session_pb2_grpc.SessionServiceStub(ch).AppendFrame(request_, timeout=10)) == (
        grpc.StatusCode.OK)


SEQS = st.sampled_from([0, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)


@FUZZ
@given(SEQS, st.sampled_from([session_pb2.ORDER_OLDEST_FIRST, session_pb2.ORDER_NEWEST_FIRST]))
def test_any_from_seq_lists_cleanly_on_sqlite(target, seq, order):
    loop, address = target
    _append_one(loop, address)
    request_ = session_pb2.ListFramesRequest(session_id="seqs", from_seq=seq, order=order)
    assert _code(loop, address, lambda ch: session_pb2_grpc.SessionServiceStub(ch).ListFrames(request_, timeout=10)) in (
        grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize("seq", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_any_after_seq_watches_cleanly_on_sqlite(target, seq):
    loop, address = target
    _append_one(loop, address)
    request_ = session_pb2.WatchSessionRequest(session_id="seqs", after_seq=seq)
    assert _code(loop, address, lambda ch: session_pb2_grpc.SessionServiceStub(ch).WatchSession(request_, timeout=0.3)) in (
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT)


def test_the_server_is_still_up(target):
    loop, address = target
    status = _code(loop, address, lambda ch: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()))
    assert status == grpc.StatusCode.OK
