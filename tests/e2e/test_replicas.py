"""Two gateway processes sharing one real Redis: a session started through
one continues through the other, and is watchable from either; and the same
behind a real nginx (grpc_pass over both), where stopping one replica loses
no call."""

import asyncio
import contextlib
import shutil
import signal
import socket
import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask, collect
from tests.fakes import unused_port
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


def _nginx_config(directory, port: int, upstreams: list[str]) -> str:
    temp = " ".join(f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    servers = " ".join(f"server {address};" for address in upstreams)
    return (
        f"worker_processes 1; pid {directory}/nginx.pid; error_log {directory}/error.log warn; daemon off;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; {temp}\n"
        f"  upstream turnout {{ {servers} keepalive 16; }}\n"
        f"  server {{ listen 127.0.0.1:{port} http2;\n"
        "    location / { grpc_pass grpc://turnout; grpc_next_upstream error timeout non_idempotent; } } }\n"
    )


@contextlib.asynccontextmanager
async def nginx_in_front_of(upstreams: list[str], directory):
    binary = shutil.which("nginx")
    if binary is None:
        pytest.fail("nginx is not on PATH; install it with: apt-get install -y nginx-light", pytrace=False)
    port = unused_port()
    (directory / "nginx.conf").write_text(_nginx_config(directory, port, upstreams))
    process = await asyncio.create_subprocess_exec(binary, "-c", str(directory / "nginx.conf"),
                                                   "-e", str(directory / "error.log"))
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, (directory / "error.log").read_text()
            await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


async def _served(metrics_address: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://{metrics_address}/metrics")).text
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "turnout_requests_total")


async def test_replicas_behind_nginx_share_sessions_and_a_stop_loses_no_call(ollama, redis_url, tmp_path):
    config = (f"shutdown_grace: 5s\nsessions: {{store: redis, redis_url: '{redis_url}'}}\n"
              f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n")
    async with spawn(config, tmp_path, "a") as a, spawn(config, tmp_path, "b") as b:
        async with nginx_in_front_of([a.address, b.address], tmp_path) as proxy:
            async with grpc.aio.insecure_channel(proxy) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                for _ in range(10):
                    await collect(stub.Generate(ask(model="llama3.2:1b")))
                spread = [await _served(a.metrics_address), await _served(b.metrics_address)]

                turns = []
                for question in ("first", "second"):
                    before = [await _served(r.metrics_address) for r in (a, b)]
                    await collect(stub.Generate(ask(question, model="llama3.2:1b", session_id="across")))
                    after = [await _served(r.metrics_address) for r in (a, b)]
                    turns.append([x - y for x, y in zip(after, before, strict=True)].index(1))
                carried = [m["content"] for m in ollama.requests[-1].json["messages"]]

                b.process.send_signal(signal.SIGTERM)
                results = []
                for _ in range(20):
                    try:
                        results.append((await collect(stub.Generate(ask(model="llama3.2:1b"), timeout=10)))[-1]
                                       .WhichOneof("event"))
                    except grpc.aio.AioRpcError as exc:
                        results.append(exc.code().name)
                assert await asyncio.wait_for(b.process.wait(), 15) == 0
    assert sum(spread) == 10 and min(spread) > 0, f"calls per replica: {spread}"
    assert sorted(turns) == [0, 1], "the two turns of the session went to different replicas"
    assert carried == ["first", "Hello world", "second"]
    assert results == ["completed"] * 20
