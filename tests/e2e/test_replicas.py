"""Two gateway processes sharing one real Redis: a session started through
one continues through the other, and is watchable from either."""

import asyncio

import grpc

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask, collect
from turnout.v1 import generate_pb2_grpc, session_pb2, session_pb2_grpc


async def test_a_turn_through_one_replica_is_visible_and_watchable_through_the_other(ollama, redis_url, tmp_path):
    config = (f"sessions: {{store: redis, redis_url: '{redis_url}'}}\n"
              f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n")
    async with spawn(config, tmp_path, "a") as first, spawn(config, tmp_path, "b") as second:
        async with grpc.aio.insecure_channel(first.address) as a, grpc.aio.insecure_channel(second.address) as b:
            await session_pb2_grpc.SessionServiceStub(a).CreateSession(
                session_pb2.CreateSessionRequest(session_id="shared", system_prompt="Be brief."))
            watch = session_pb2_grpc.SessionServiceStub(b).WatchSession(
                session_pb2.WatchSessionRequest(session_id="shared"))
            await collect(generate_pb2_grpc.GenerateServiceStub(a).Generate(
                ask("first question", model="llama3.2:1b", session_id="shared")))
            seen = [(await asyncio.wait_for(watch.read(), 10)).frame for _ in range(2)]
            await collect(generate_pb2_grpc.GenerateServiceStub(b).Generate(
                ask("second question", model="llama3.2:1b", session_id="shared")))
            watch.cancel()
    assert [(f.seq, f.content) for f in seen] == [(1, "first question"), (2, "Hello world")]
    assert [m["content"] for m in ollama.requests[-1].json["messages"]] == [
        "Be brief.", "first question", "Hello world", "second question"]
