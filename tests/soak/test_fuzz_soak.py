"""`make soak`: 20,000 hostile requests through the real server (sessions on
sqlite, an Ollama fake upstream), 64 at a time, drawn from every class the
fault-injection pass found INTERNAL with: deep JSON nesting, lone surrogate
escapes, NaN/Infinity, huge numbers, seqs past 2^63, giant model names, and
random bytes in place of a request. None may end INTERNAL or UNKNOWN; the
count of each status is printed."""

import asyncio
import collections
import random

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.fakes import FakeOllama
from turnout.v1 import common_pb2, generate_pb2, session_pb2

REQUESTS = 20_000
CONCURRENCY = 64
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def hostile_json(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        depth = rng.randint(1, 3000)
        return '{"a":' + "[" * depth + "1" + "]" * depth + "}"
    if kind == 1:
        depth = rng.randint(1, 3000)
        return '{"a":' * depth + "1" + "}" * depth
    if kind == 2:
        return rng.choice(['{"a":"\\ud800"}', '{"\\udfff":1}', '{"a":["x\\udbff y"]}', '{"a":"\\ud83d\\ude00"}'])
    if kind == 3:
        return rng.choice(['{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}', '{"a":1e999}', '[NaN]'])
    if kind == 4:
        return '{"a":' + rng.choice(["", "-"]) + "9" * rng.randint(1, 6000) + "}"
    if kind == 5:
        return '{"a":0.' + "1" * rng.randint(1, 6000) + "e" + str(rng.randint(-400, 400)) + "}"
    return rng.choice(["", "{}", '{"type":"object"}', "[]", "{", "null", '"x"', '{"a":1}'])


def text(rng: random.Random, longest: int = 40) -> str:
    alphabet = "abc xyz_-/:.\u00e9\u6771\U0001f338\x00\t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def generate_request(rng: random.Random) -> generate_pb2.GenerateRequest:
    model = rng.choice(["m", "r", "", "missing", text(rng), "x" * rng.choice([300, 8000, 20000])])
    messages = [generate_pb2.Message(role=common_pb2.ROLE_USER, content=text(rng))]
    if rng.random() < 0.6:
        call = common_pb2.ToolCall(id="c1", name=rng.choice(["f", "", text(rng)]), arguments=hostile_json(rng))
        messages += [generate_pb2.Message(role=common_pb2.ROLE_ASSISTANT, tool_calls=[call]),
                     generate_pb2.Message(role=common_pb2.ROLE_TOOL, content="1", tool_call_id="c1", tool_name="f")]
    tools = [generate_pb2.Tool(name=rng.choice(["f", "g", text(rng)]), parameters=hostile_json(rng))
             for _ in range(rng.randint(0, 2))]
    options = generate_pb2.GenerationOptions(
        temperature=rng.choice([0.5, float("nan"), float("inf"), -1.0, 1e308]), top_p=rng.choice([0.5, float("nan")]),
        max_tokens=rng.choice([1, 0, 2**31, 2**32 - 1]), seed=rng.choice([0, -2**63, 2**63 - 1]),
        stop=[text(rng, 8) for _ in range(rng.randint(0, 5))])
    return generate_pb2.GenerateRequest(
        model=model, messages=messages, tools=tools, options=options, task=text(rng),
        session_id=rng.choice(["", "soak", "bad id", text(rng)]),
        metadata={text(rng, 8): text(rng) for _ in range(rng.randint(0, 3))})


SEQS = [0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]


async def one(channel: grpc.aio.Channel, rng: random.Random) -> grpc.StatusCode:
    kind = rng.randrange(10)
    try:
        if kind < 5:
            async for _ in channel.unary_stream("/turnout.v1.GenerateService/Generate",
                                                request_serializer=generate_pb2.GenerateRequest.SerializeToString,
                                                response_deserializer=generate_pb2.GenerateResponse.FromString)(
                    generate_request(rng), timeout=10):
                pass
        elif kind == 5:
            data = bytearray(generate_request(rng).SerializeToString())
            for _ in range(rng.randint(1, 8)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            async for _ in channel.unary_stream("/turnout.v1.GenerateService/Generate")(bytes(data), timeout=10):
                pass
        elif kind == 6:
            frame = session_pb2.Frame(role=rng.choice([0, 1, 2, 3, 4, 9]), content=text(rng), tool_calls=[
                common_pb2.ToolCall(id="c", name="f", arguments=hostile_json(rng))] if rng.random() < 0.5 else [])
            request = session_pb2.AppendFrameRequest(session_id=rng.choice(["soak", "bad id", text(rng)]), frame=frame)
            if rng.random() < 0.3:
                request.expected_seq = rng.choice(SEQS)
            await channel.unary_unary("/turnout.v1.SessionService/AppendFrame",
                                      request_serializer=session_pb2.AppendFrameRequest.SerializeToString)(
                request, timeout=10)
        elif kind in (7, 8):
            request = session_pb2.ListFramesRequest(session_id="soak", from_seq=rng.choice(SEQS),
                                                    order=rng.choice([0, 1, 2, 7]), page_size=rng.choice([0, 1, 10**6]))
            await channel.unary_unary("/turnout.v1.SessionService/ListFrames",
                                      request_serializer=session_pb2.ListFramesRequest.SerializeToString)(
                request, timeout=10)
        else:
            request = session_pb2.WatchSessionRequest(session_id="soak", after_seq=rng.choice(SEQS))
            async for _ in channel.unary_stream("/turnout.v1.SessionService/WatchSession",
                                                request_serializer=session_pb2.WatchSessionRequest.SerializeToString)(
                    request, timeout=0.2):
                pass
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


@pytest.mark.soak
async def test_twenty_thousand_hostile_requests_get_no_internal_or_unknown(tmp_path):
    rng = random.Random(20_000)
    async with FakeOllama(models=["m"]) as ollama:
        yaml = (f"sessions: {{store: sqlite, path: '{tmp_path / 'soak.db'}'}}\n"
                f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
                "routes:\n  - {name: r, targets: [{backend: local, model: m}]}\n")
        async with serve(yaml) as c:
            await c.sessions.AppendFrame(session_pb2.AppendFrameRequest(
                session_id="soak", frame=session_pb2.Frame(role=common_pb2.ROLE_USER, content="hi")))
            codes: collections.Counter = collections.Counter()
            seeds = iter(range(REQUESTS))

            async def worker() -> None:
                for seed in seeds:
                    codes[await one(c.channel, random.Random(rng.random() + seed))] += 1

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    print(f"\nfuzz: {sum(codes.values())} requests: " + ", ".join(f"{code.name} {n}" for code, n in codes.most_common()))
    assert sum(codes.values()) == REQUESTS
    assert not BAD & set(codes), {code.name: codes[code] for code in BAD & set(codes)}
