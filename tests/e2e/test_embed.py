"""EmbeddingService.Embed through the real server: the exact upstream request
body for both protocols, vectors in input order, and routing, retries, keys,
limits and metrics shared with Generate."""

import asyncio
import hashlib

import grpc
import pytest

from tests.e2e.conftest import SECRET, backends_yaml, serve
from tests.e2e.helpers import BadRequest, ask, collect, details, failure
from tests.fakes import Hang, HttpError, embedding_vector
from turnout.v1 import embedding_pb2

TEXTS = ["the first text", "a second, longer piece of text", "third"]
ROUTE_OPTIONS = (
    "routes:\n"
    "  - name: search\n"
    "    options: {num_ctx: 2048, keep_alive: 1m}\n"
    "    targets: [{backend: local, model: 'llama3.2:1b', options: {num_thread: 2}}]\n"
)


def embed(model: str, inputs=TEXTS, **fields) -> embedding_pb2.EmbedRequest:
    return embedding_pb2.EmbedRequest(model=model, inputs=inputs, **fields)


def vectors(response) -> list[list[float]]:
    return [list(e.values) for e in response.embeddings]


async def test_ollama_gets_its_embed_body_and_vectors_come_back_in_input_order(ollama):
    request = embed("search", dimensions=8, truncate=False, backend_options='{"num_ctx": 8192}')
    async with serve(backends_yaml(ollama) + ROUTE_OPTIONS) as c:
        response = await c.embeddings.Embed(request)
    assert ollama.requests[-1].path == "/api/embed"
    assert ollama.requests[-1].json == {
        "model": "llama3.2:1b", "input": TEXTS, "truncate": False, "dimensions": 8,
        "options": {"num_ctx": 8192, "num_thread": 2}, "keep_alive": "1m",
    }
    assert vectors(response) == [embedding_vector(text, 8) for text in TEXTS]
    assert (response.route, response.backend, response.model, response.attempt) == (
        "search", "local", "llama3.2:1b", 1)
    assert response.usage.prompt_tokens == 10 and len(response.request_id) == 32


async def test_openai_gets_its_embeddings_body_with_the_key(openai):
    request = embed("gpt-4o-mini", dimensions=6, truncate=True, backend_options='{"user": "u1", "model": "x"}')
    async with serve(backends_yaml(openai=openai)) as c:
        response = await c.embeddings.Embed(request)
    sent = openai.requests[-1]
    assert (sent.path, sent.headers["authorization"]) == ("/v1/embeddings", f"Bearer {SECRET}")
    assert sent.json == {"model": "gpt-4o-mini", "input": TEXTS, "encoding_format": "float", "dimensions": 6,
                         "user": "u1"}
    assert vectors(response) == [embedding_vector(text, 6) for text in TEXTS]
    assert (response.backend, response.usage.prompt_tokens) == ("cloud", 10)


async def test_a_failed_attempt_falls_back_to_the_next_target_and_counts_like_generate(ollama, openai):
    route = ("routes:\n  - name: vec\n    targets: [{backend: local, model: 'llama3.2:1b', priority: 0},"
             " {backend: cloud, model: gpt-4o-mini, priority: 1}]\n")
    ollama.script(HttpError(503, "overloaded"))
    async with serve(backends_yaml(ollama, openai) + route) as c:
        response = await c.embeddings.Embed(embed("vec", inputs=["one"]))
        registry = c.gateway.registry
        sample = registry.get_sample_value
        assert sample("turnout_retries_total", {"route": "vec", "reason": "server_error"}) == 1
        assert sample("turnout_upstream_errors_total", {"backend": "local", "kind": "server_error"}) == 1
        labels = {"route": "vec", "backend": "cloud", "model": "gpt-4o-mini"}
        assert sample("turnout_embed_requests_total", {**labels, "code": "OK"}) == 1
        assert sample("turnout_embed_duration_seconds_count", labels) == 1
        assert sample("turnout_tokens_total", {"backend": "cloud", "model": "gpt-4o-mini", "kind": "prompt"}) == 1
        assert sample("turnout_key_requests_total", {"key": "none", "code": "OK"}) == 1
        assert not sample("turnout_requests_total", {**labels, "code": "OK"})
        assert not sample("turnout_time_to_first_token_seconds_count", labels)
    assert (response.backend, response.attempt, vectors(response)) == ("cloud", 2, [embedding_vector("one")])


async def test_task_rules_route_embeddings_but_text_rules_do_not(ollama, openai):
    config = backends_yaml(ollama, openai) + (
        "routes:\n  - {name: search, targets: [{backend: cloud, model: gpt-4o-mini}]}\n"
        "  - {name: chat, targets: [{backend: local, model: 'llama3.2:1b'}]}\n"
        "rules:\n  - {when: {match: 'first'}, route: chat}\n  - {when: {task: search}, route: search}\n"
    )
    async with serve(config) as c:
        by_task = await c.embeddings.Embed(embed("", task="search"))
        by_name = await c.embeddings.Embed(embed("llama3.2:1b"))
    assert (by_task.route, by_task.backend) == ("search", "cloud")
    assert (by_name.route, by_name.backend) == ("llama3.2:1b", "local")


async def test_unknown_model_and_missing_model_are_not_found_and_unavailable(ollama):
    async with serve(backends_yaml(ollama) + "routes:\n  - {name: gone, targets: [{backend: local, model: nope}]}\n"
                     ) as c:
        unknown = await failure(c.embeddings.Embed(embed("gpt-5")))
        missing = await failure(c.embeddings.Embed(embed("gone")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "llama3.2:1b" in unknown.details()
    assert missing.code() == grpc.StatusCode.UNAVAILABLE and "not found" in missing.details()


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_keys_and_their_limits_apply_to_embed(ollama):
    config = backends_yaml(ollama) + (
        "routes:\n  - {name: chat, targets: [{backend: local, model: 'llama3.2:1b'}]}\n"
        f"auth:\n  keys:\n    - {{name: alice, sha256: {_sha('alice-key')}, routes: [chat], requests_per_minute: 2}}\n"
    )
    alice = (("authorization", "Bearer alice-key"),)
    async with serve(config) as c:
        missing = await failure(c.embeddings.Embed(embed("chat")))
        denied = await failure(c.embeddings.Embed(embed("llama3.2:1b"), metadata=alice))
        allowed = await c.embeddings.Embed(embed("chat"), metadata=alice)
        over = await failure(c.embeddings.Embed(embed("chat"), metadata=alice))
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(allowed.embeddings) == 3
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("request_, field_name", [
    (embed("llama3.2:1b", inputs=[]), "inputs"),
    (embed("llama3.2:1b", inputs=["ok", ""]), "inputs[1]"),
    (embed("llama3.2:1b", inputs=["x"] * 5), "inputs"),
    (embed("llama3.2:1b", inputs=["ok", "y" * 101]), "inputs[1]"),
    (embed("llama3.2:1b", dimensions=0), "dimensions"),
    (embed("llama3.2:1b", backend_options="num_ctx: 1"), "backend_options"),
], ids=["none", "empty", "too-many", "too-large", "dimensions", "backend_options"])
async def test_bad_embed_requests_are_invalid_argument_naming_the_field(ollama, request_, field_name):
    async with serve(backends_yaml(ollama) + "limits: {max_embed_inputs: 4, max_embed_input_bytes: 100}\n") as c:
        error = await failure(c.embeddings.Embed(request_))
        sample = c.gateway.registry.get_sample_value
        assert sample("turnout_embed_requests_total",
                      {"route": "none", "backend": "none", "model": "none", "code": "INVALID_ARGUMENT"}) == 1
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error, BadRequest).field_violations[0].field == field_name
    assert not [r for r in ollama.requests if r.path == "/api/embed"]


async def test_embed_and_generate_share_one_backend_pool(ollama):
    async with serve(backends_yaml(ollama)) as c:
        await collect(c.generate.Generate(ask(model="llama3.2:1b")))
        await c.embeddings.Embed(embed("llama3.2:1b"))
        await collect(c.generate.Generate(ask(model="llama3.2:1b")))
    assert [r.path for r in ollama.requests if r.method == "POST"] == ["/api/chat", "/api/embed", "/api/chat"]
    assert ollama.connections == 1


async def test_consecutive_embed_failures_eject_the_backend(ollama, openai):
    route = ("routes:\n  - name: vec\n    targets: [{backend: local, model: 'llama3.2:1b', priority: 0},"
             " {backend: cloud, model: gpt-4o-mini, priority: 1}]\n"
             "outlier_detection: {consecutive_failures: 2, base_ejection: 60s}\n")
    ollama.script(HttpError(500), HttpError(500))
    async with serve(backends_yaml(ollama, openai) + route) as c:
        attempts = [(await c.embeddings.Embed(embed("vec", inputs=["x"]))).attempt for _ in range(3)]
    assert attempts == [2, 2, 1]
    assert len([r for r in ollama.requests if r.path == "/api/embed"]) == 2


async def test_the_caller_deadline_closes_the_upstream_embed_request(ollama):
    ollama.script(Hang())
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.embeddings.Embed(embed("llama3.2:1b"), timeout=0.5))
        await asyncio.wait_for(ollama.disconnected.wait(), 5)
        in_flight = c.gateway.registry.get_sample_value("turnout_in_flight_requests", {"backend": "local"})
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert in_flight == 0
