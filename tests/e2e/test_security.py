"""TLS and mutual TLS, API keys with routes, admin methods and limits,
session ownership, and no secret in any output."""

import hashlib
import logging
import shutil

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.certs import Authority
from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import RetryInfo, ask, collect, details, failure
from tests.fakes import Gate
from turnout.v1 import generate_pb2_grpc, model_pb2, session_pb2

ALICE, BOB, ROOT = "key-alice-0123456789", "key-bob-0123456789", "key-root-0123456789"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_yaml(extra_alice: str = "") -> str:
    return (
        "routes:\n  - {name: chat, targets: [{backend: local, model: llama3.2:1b}]}\n"
        "  - {name: code, targets: [{backend: local, model: llama3.2:1b}]}\n"
        "auth:\n  keys:\n"
        f"    - {{name: alice, sha256: {sha(ALICE)}, routes: [chat]{extra_alice}}}\n"
        f"    - {{name: bob, key_env: BOB_KEY}}\n"
        f"    - {{name: root, sha256: {sha(ROOT)}, admin: true}}\n"
    )


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def test_tls_serves_tls_clients_and_refuses_plaintext(ollama, tmp_path):
    ca = Authority(tmp_path)
    server = ca.issue("server", "localhost", server=True)
    async with serve(backends_yaml(ollama) + f"tls: {{cert: '{server.cert}', key: '{server.key}'}}\n") as c:
        address = f"127.0.0.1:{c.gateway.port}"
        credentials = grpc.ssl_channel_credentials(ca.pem.cert.read_bytes())
        async with grpc.aio.secure_channel(address, credentials) as channel:
            answer = await collect(generate_pb2_grpc.GenerateServiceStub(channel).Generate(ask(model="llama3.2:1b")))
        async with grpc.aio.insecure_channel(address) as channel:
            refused = await failure(generate_pb2_grpc.GenerateServiceStub(channel).Generate(
                ask(model="llama3.2:1b"), timeout=5))
    assert answer[-1].WhichOneof("event") == "completed"
    assert refused.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(ollama, tmp_path):
    ca, rogue = Authority(tmp_path), Authority(tmp_path, "rogue CA")
    server = ca.issue("server", "localhost", server=True)
    good, bad = ca.issue("client", "svc-a", server=False), rogue.issue("intruder", "svc-x", server=False)
    tls = f"tls: {{cert: '{server.cert}', key: '{server.key}', client_ca: '{ca.pem.cert}'}}\n"
    async with serve(backends_yaml(ollama) + tls) as c:
        address = f"127.0.0.1:{c.gateway.port}"

        async def call(client):
            credentials = grpc.ssl_channel_credentials(
                ca.pem.cert.read_bytes(), client.key.read_bytes() if client else None,
                client.cert.read_bytes() if client else None)
            async with grpc.aio.secure_channel(address, credentials) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                try:
                    return (await collect(stub.Generate(ask(model="llama3.2:1b"), timeout=5)))[-1].WhichOneof("event")
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

        assert await call(good) == "completed"
        assert await call(None) == grpc.StatusCode.UNAVAILABLE
        assert await call(bad) == grpc.StatusCode.UNAVAILABLE


async def test_sighup_reload_serves_the_new_certificate_to_new_connections(ollama, tmp_path):
    first, second = Authority(tmp_path, "first CA"), Authority(tmp_path, "second CA")
    old, new = first.issue("old", "localhost", server=True), second.issue("new", "localhost", server=True)
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(old.cert, live_cert)
    shutil.copy(old.key, live_key)
    async with serve(backends_yaml(ollama) + f"tls: {{cert: '{live_cert}', key: '{live_key}'}}\n") as c:
        address = f"127.0.0.1:{c.gateway.port}"

        async def trusts(ca: Authority) -> bool:
            credentials = grpc.ssl_channel_credentials(ca.pem.cert.read_bytes())
            async with grpc.aio.secure_channel(address, credentials) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    return True
                except grpc.aio.AioRpcError:
                    return False

        assert (await trusts(first), await trusts(second)) == (True, False)
        shutil.copy(new.cert, live_cert)
        shutil.copy(new.key, live_key)
        c.gateway.tls.reload()
        assert (await trusts(second), await trusts(first)) == (True, False)


async def test_api_keys_authenticate_and_routes_are_enforced(ollama):
    async with serve(backends_yaml(ollama) + keys_yaml(), env={"BOB_KEY": BOB}) as c:
        missing = await failure(c.generate.Generate(ask(model="chat")))
        wrong = await failure(c.generate.Generate(ask(model="chat"), metadata=bearer("nope")))
        alice_chat = await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        alice_code = await failure(c.generate.Generate(ask(model="code"), metadata=bearer(ALICE)))
        bob_code = await collect(c.generate.Generate(ask(model="code"), metadata=bearer(BOB)))
        health = await c.health.Check(health_pb2.HealthCheckRequest())
    assert missing.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in missing.details() and "nope" not in wrong.details()
    assert alice_chat[-1].WhichOneof("event") == bob_code[-1].WhichOneof("event") == "completed"
    assert alice_code.code() == grpc.StatusCode.PERMISSION_DENIED and "'code'" in alice_code.details()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert c.gateway.registry.get_sample_value("turnout_key_requests_total", {"key": "alice", "code": "OK"}) == 1


async def test_admin_methods_need_an_admin_key(ollama):
    async with serve(backends_yaml(ollama) + keys_yaml(), env={"BOB_KEY": BOB}) as c:
        pull = model_pb2.PullModelRequest(backend="local", model="qwen3:0.6b")
        denied = await failure(c.models.PullModel(pull, metadata=bearer(BOB)))
        allowed = [p.status async for p in c.models.PullModel(pull, metadata=bearer(ROOT))]
        listing = await c.models.ListModels(model_pb2.ListModelsRequest(), metadata=bearer(BOB))
        reflection = reflection_pb2_grpc.ServerReflectionStub(c.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reflect_denied = await failure(reflection.ServerReflectionInfo(iter([request]), metadata=bearer(BOB)))
        call = reflection.ServerReflectionInfo(iter([request]), metadata=bearer(ROOT))
        services = (await call.read()).list_services_response.service
        call.cancel()
    assert denied.code() == reflect_denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert allowed[-1] == "success" and listing.models
    assert "turnout.v1.GenerateService" in {s.name for s in services}


async def test_concurrency_limit_gives_resource_exhausted_with_retry_info(ollama):
    ollama.script(Gate("held"))
    async with serve(backends_yaml(ollama) + keys_yaml(", max_concurrent_streams: 1"), env={"BOB_KEY": BOB}) as c:
        held = c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE))
        await ollama.hung.wait()
        over = await failure(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        bob = await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(BOB)))
        ollama.release.set()
        await collect(held)
        after = await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details(over, RetryInfo) is not None
    assert bob[-1].WhichOneof("event") == after[-1].WhichOneof("event") == "completed"


async def test_requests_per_minute_limit_says_when_to_retry(ollama):
    async with serve(backends_yaml(ollama) + keys_yaml(", requests_per_minute: 2"), env={"BOB_KEY": BOB}) as c:
        for _ in range(2):
            await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        over = await failure(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 25 <= details(over, RetryInfo).retry_delay.seconds <= 31


async def test_a_session_is_invisible_to_other_keys(ollama):
    async with serve(backends_yaml(ollama) + keys_yaml(), env={"BOB_KEY": BOB}) as c:
        s = c.sessions
        await s.CreateSession(session_pb2.CreateSessionRequest(session_id="alices"), metadata=bearer(ALICE))
        await collect(c.generate.Generate(ask(model="chat", session_id="alices"), metadata=bearer(ALICE)))
        attempts = [
            s.GetSession(session_pb2.GetSessionRequest(session_id="alices"), metadata=bearer(BOB)),
            s.ListFrames(session_pb2.ListFramesRequest(session_id="alices"), metadata=bearer(BOB)),
            s.AppendFrame(session_pb2.AppendFrameRequest(session_id="alices", frame=session_pb2.Frame(
                role=2, content="x")), metadata=bearer(BOB)),
            s.DeleteSession(session_pb2.DeleteSessionRequest(session_id="alices"), metadata=bearer(BOB)),
            s.WatchSession(session_pb2.WatchSessionRequest(session_id="alices"), metadata=bearer(BOB)),
            c.generate.Generate(ask(model="chat", session_id="alices"), metadata=bearer(BOB)),
        ]
        codes = [(await failure(call)).code() for call in attempts]
        bobs_list = await s.ListSessions(session_pb2.ListSessionsRequest(), metadata=bearer(BOB))
        alices_list = await s.ListSessions(session_pb2.ListSessionsRequest(), metadata=bearer(ALICE))
        frames = await s.ListFrames(session_pb2.ListFramesRequest(session_id="alices"), metadata=bearer(ALICE))
    assert codes == [grpc.StatusCode.NOT_FOUND] * 6
    assert [x.id for x in bobs_list.sessions] == [] and [x.id for x in alices_list.sessions] == ["alices"]
    assert len(frames.frames) == 2


async def test_malformed_request_bytes_are_invalid_argument(ollama):
    async with serve(backends_yaml(ollama)) as c:
        raw = c.channel.unary_stream("/turnout.v1.GenerateService/Generate")
        error = await failure(raw(b"\xff\xff\xff\xff"))
        unary = c.channel.unary_unary("/turnout.v1.SessionService/AppendFrame")
        append_error = await failure(unary(b"\x0a\x05ab"))
    assert error.code() == append_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid turnout.v1.GenerateRequest message" in error.details()


async def test_limits_on_metadata_and_tools(ollama):
    from turnout.v1 import generate_pb2

    async with serve(backends_yaml(ollama) + "limits: {max_tools: 1, max_metadata_entries: 2}\n") as c:
        too_many_tools = await failure(c.generate.Generate(ask(model="llama3.2:1b", tools=[
            generate_pb2.Tool(name="a"), generate_pb2.Tool(name="b")])))
        too_much_metadata = await failure(c.generate.Generate(ask(model="llama3.2:1b", metadata={
            "a": "1", "b": "2", "c": "3"})))
        huge = await failure(c.generate.Generate(ask("x" * (17 << 20), model="llama3.2:1b")))
    assert too_many_tools.details().startswith("tools: has 2 tools; the limit is 1")
    assert too_much_metadata.details().startswith("metadata: has 3 entries; the limit is 2")
    assert huge.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_key_of_a_caller_never_reaches_upstream_or_logs(ollama, caplog):
    caplog.set_level(logging.DEBUG)
    async with serve(backends_yaml(ollama) + keys_yaml(), env={"BOB_KEY": BOB}) as c:
        await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        await failure(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE + "x")))
    upstream = str([(r.headers, r.body) for r in ollama.requests])
    assert "request_id" in caplog.text or "request" in caplog.text
    assert ALICE not in upstream and ALICE not in caplog.text


async def test_calls_refused_by_the_guard_are_counted(ollama):
    async with serve(backends_yaml(ollama) + keys_yaml(", requests_per_minute: 1"), env={"BOB_KEY": BOB}) as c:
        await collect(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        limited = await failure(c.generate.Generate(ask(model="chat"), metadata=bearer(ALICE)))
        unknown = await failure(c.generate.Generate(ask(model="chat"), metadata=bearer("not-a-key")))
        value = c.gateway.registry.get_sample_value
        counts = {code: value("turnout_requests_total", {"route": "none", "backend": "none", "model": "none",
                                                          "code": code}) for code in ("RESOURCE_EXHAUSTED", "UNAUTHENTICATED")}
        keyed = (value("turnout_key_requests_total", {"key": "alice", "code": "RESOURCE_EXHAUSTED"}),
                 value("turnout_key_requests_total", {"key": "none", "code": "UNAUTHENTICATED"}))
    assert (limited.code(), unknown.code()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED)
    assert counts == {"RESOURCE_EXHAUSTED": 1, "UNAUTHENTICATED": 1}
    assert keyed == (1, 1)
