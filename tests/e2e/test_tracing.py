"""One trace from the caller, through turnout, to the model server: spans
exported with OTLP to a real receiver on loopback (tests/otlp.py), decoded
with opentelemetry-proto."""

import asyncio
import logging
import signal

import pytest
from prometheus_client.openmetrics.exposition import generate_latest

from tests.e2e.conftest import SECRET, backends_yaml, serve, spawn
from tests.e2e.helpers import ask, collect, failure, text
from tests.e2e.test_cli import run
from tests.e2e.test_observability import _traffic_until_both_workers_served
from tests.fakes import Gate, HttpError, Reply
from tests.otlp import PROTOCOLS, OtlpReceiver
from turnout.v1 import embedding_pb2, generate_pb2, session_pb2

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = [("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"), ("tracestate", "caller=opaque")]
PROMPT, ANSWER, PRIVATE = "PLANTED-PROMPT-2b9c", "PLANTED-ANSWER-77d1", "PLANTED-METADATA-e5a0"
ROUTE = "routes:\n  - {name: r, targets: [{backend: local, model: llama3.2:1b}, {backend: cloud, model: gpt-4o-mini}]}\n"


def tracing_yaml(receiver: OtlpReceiver, extra: str = "") -> str:
    return f"tracing: {{endpoint: '{receiver.endpoint}', protocol: {receiver.protocol}{extra}}}\n"


def sampled(upstream_request) -> bool:
    """The W3C sampled flag of the traceparent turnout sent upstream."""
    return bool(int(upstream_request.headers["traceparent"].rsplit("-", 1)[1], 16) & 1)


def by_name(spans, name: str):
    return [s for s in spans if s.name == name]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_retried_generation_is_one_trace_under_the_callers_span(ollama, openai, protocol):
    ollama.script(HttpError(503, "PLANTED-UPSTREAM-ERROR"))
    openai.script(Reply(ANSWER))
    async with OtlpReceiver(protocol) as receiver:
        yaml = backends_yaml(ollama, openai) + ROUTE + tracing_yaml(receiver, ", metadata: [tenant]")
        async with serve(yaml) as c:
            request = ask(PROMPT, model="r", metadata={"tenant": "acme", "private": PRIVATE})
            responses = await collect(c.generate.Generate(request, metadata=CALLER))
            assert text(responses) == ANSWER and responses[0].started.attempt == 2
        spans = await receiver.wait_for_spans(3)

    assert {s.trace_id for s in spans} == {TRACE_ID}
    [rpc] = by_name(spans, "turnout.v1.GenerateService/Generate")
    assert rpc.parent_id == CALLER_SPAN and rpc.span.trace_state == "caller=opaque"
    assert rpc.span.kind == rpc.span.SPAN_KIND_SERVER
    assert rpc.attributes | {
        "rpc.system": "grpc", "rpc.grpc.status_code": 0, "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "r", "gen_ai.response.model": "gpt-4o-mini", "turnout.route": "r",
        "turnout.attempts": 2, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5,
        "turnout.request.metadata.tenant": "acme",
    } == rpc.attributes
    failed, served = sorted((s for s in spans if s.span.kind == s.span.SPAN_KIND_CLIENT),
                            key=lambda s: s.attributes["turnout.attempt"])
    assert failed.parent_id == served.parent_id == rpc.span_id
    assert failed.name == "chat llama3.2:1b" and served.name == "chat gpt-4o-mini"
    assert failed.attributes | {
        "turnout.backend": "local", "turnout.outcome": "error", "error.type": "server_error",
        "server.address": "127.0.0.1", "server.port": ollama.port,
    } == failed.attributes
    assert failed.span.status.code == failed.span.status.STATUS_CODE_ERROR
    assert served.attributes | {
        "turnout.backend": "cloud", "turnout.outcome": "ok", "turnout.retry_reason": "server_error",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5, "server.port": openai.port,
    } == served.attributes
    assert served.events == ["queue_wait", "first_token", "completion"]

    [to_local] = await ollama.wait_for_requests(1, "/api/chat")
    [to_cloud] = await openai.wait_for_requests(1, "/v1/chat/completions")
    assert to_local.headers["traceparent"] == f"00-{TRACE_ID}-{failed.span_id}-01"
    assert to_cloud.headers["traceparent"] == f"00-{TRACE_ID}-{served.span_id}-01"
    assert to_cloud.headers["tracestate"] == "caller=opaque"

    for planted in (PROMPT, ANSWER, PRIVATE, SECRET, "PLANTED-UPSTREAM-ERROR"):
        assert planted.encode() not in receiver.raw


async def test_unary_calls_embed_session_calls_and_failures_have_spans_with_their_status(ollama):
    async with OtlpReceiver() as receiver:
        async with serve(backends_yaml(ollama) + tracing_yaml(receiver)) as c:
            complete = generate_pb2.CompleteRequest(request=ask(model="llama3.2:1b"))
            assert (await c.generate.Complete(complete, metadata=CALLER)).content
            await failure(c.generate.Generate(ask(model="nope"), metadata=CALLER))
            await c.sessions.CreateSession(session_pb2.CreateSessionRequest(), metadata=CALLER)
            embed = embedding_pb2.EmbedRequest(model="llama3.2:1b", inputs=[PROMPT])
            assert (await c.embeddings.Embed(embed, metadata=CALLER)).embeddings
        spans = await receiver.wait_for_spans(6)

    [complete_span] = by_name(spans, "turnout.v1.GenerateService/Complete")
    [attempt] = [s for s in spans if s.parent_id == complete_span.span_id]
    assert complete_span.parent_id == CALLER_SPAN and attempt.attributes["turnout.outcome"] == "ok"
    assert complete_span.attributes["gen_ai.response.model"] == "llama3.2:1b"
    [missing] = by_name(spans, "turnout.v1.GenerateService/Generate")
    assert missing.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND: the caller's error, not turnout's
    assert missing.span.status.code == missing.span.status.STATUS_CODE_UNSET
    [session] = by_name(spans, "turnout.v1.SessionService/CreateSession")
    assert session.trace_id == TRACE_ID and session.attributes["rpc.method"] == "CreateSession"
    assert "gen_ai.operation.name" not in session.attributes
    [embed_span] = by_name(spans, "turnout.v1.EmbeddingService/Embed")
    [embed_attempt] = [s for s in spans if s.parent_id == embed_span.span_id]
    assert embed_span.attributes["gen_ai.operation.name"] == "embeddings"
    assert embed_attempt.name == "embeddings llama3.2:1b" and embed_attempt.attributes["turnout.outcome"] == "ok"
    assert PROMPT.encode() not in receiver.raw


async def test_a_call_the_guard_refuses_has_its_span_and_no_attempt(ollama):
    auth = "auth:\n  keys:\n    - {name: alice, key_env: ALICE_KEY}\n"
    async with OtlpReceiver() as receiver:
        async with serve(backends_yaml(ollama) + auth + tracing_yaml(receiver), env={"ALICE_KEY": "k-planted"}) as c:
            refused = await failure(c.generate.Generate(ask(model="llama3.2:1b"), metadata=CALLER))
        spans = await receiver.wait_for_spans(1)
    [rpc] = spans
    assert refused.code().name == "UNAUTHENTICATED" and rpc.parent_id == CALLER_SPAN
    assert rpc.attributes["rpc.grpc.status_code"] == 16 and b"k-planted" not in receiver.raw


async def test_request_log_line_and_latency_exemplars_carry_the_trace(ollama, caplog):
    async with OtlpReceiver() as receiver:
        async with serve(backends_yaml(ollama) + tracing_yaml(receiver)) as c:
            with caplog.at_level(logging.INFO, logger="turnout.requests"):
                await collect(c.generate.Generate(ask(model="llama3.2:1b"), metadata=CALLER))
            exposition = generate_latest(c.gateway.registry).decode()
        spans = await receiver.wait_for_spans(2)

    [rpc] = by_name(spans, "turnout.v1.GenerateService/Generate")
    [line] = [r.fields for r in caplog.records if r.getMessage() == "request"]
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, rpc.span_id)
    for histogram in ("turnout_request_duration_seconds_bucket", "turnout_time_to_first_token_seconds_bucket"):
        assert any(row.startswith(histogram) and f'# {{trace_id="{TRACE_ID}"}}' in row
                   for row in exposition.splitlines()), histogram


async def test_off_by_default_nothing_is_propagated_or_logged(ollama, caplog):
    async with serve(backends_yaml(ollama)) as c:
        with caplog.at_level(logging.INFO, logger="turnout.requests"):
            await collect(c.generate.Generate(ask(model="llama3.2:1b"), metadata=CALLER))
        exposition = generate_latest(c.gateway.registry).decode()
    [upstream] = await ollama.wait_for_requests(1, "/api/chat")
    assert "traceparent" not in upstream.headers
    [line] = [r.fields for r in caplog.records if r.getMessage() == "request"]
    assert "trace_id" not in line and "trace_id" not in exposition


async def test_a_sampler_ratio_of_zero_follows_the_callers_decision(ollama):
    unsampled = [("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-00")]
    async with OtlpReceiver() as receiver:
        async with serve(backends_yaml(ollama) + tracing_yaml(receiver, ", sampler_ratio: 0")) as c:
            await collect(c.generate.Generate(ask(model="llama3.2:1b")))
            await collect(c.generate.Generate(ask(model="llama3.2:1b"), metadata=unsampled))
            await collect(c.generate.Generate(ask(model="llama3.2:1b"), metadata=CALLER))
        spans = await receiver.wait_for_spans(2)
    [root, unsampled_upstream, sampled_upstream] = await ollama.wait_for_requests(3, "/api/chat")
    assert {s.trace_id for s in spans} == {TRACE_ID} and len(spans) == 2
    assert not sampled(root) and TRACE_ID not in root.headers["traceparent"]
    assert not sampled(unsampled_upstream) and unsampled_upstream.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert sampled(sampled_upstream)


async def test_a_call_queued_behind_a_full_backend_shows_its_wait(ollama):
    ollama.script(Gate("held"), Reply("queued"))
    yaml = (f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}', max_concurrency: 1}}\n"
            "routes:\n  - {name: chat, targets: [{backend: local, model: llama3.2:1b}]}\n")
    async with OtlpReceiver() as receiver:
        async with serve(yaml + tracing_yaml(receiver)) as c:
            held = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"))))
            await ollama.wait_for_requests(1, "/api/chat")
            queued = asyncio.create_task(collect(c.generate.Generate(ask(model="chat"), metadata=CALLER)))
            while not c.gateway.registry.get_sample_value("turnout_queue_depth", {"route": "chat"}):
                await asyncio.sleep(0.01)
            ollama.release.set()
            await asyncio.gather(held, queued)
        spans = await receiver.wait_for_spans(4)

    [rpc] = [s for s in by_name(spans, "turnout.v1.GenerateService/Generate") if s.trace_id == TRACE_ID]
    [attempt] = [s for s in spans if s.parent_id == rpc.span_id]
    [queue_wait] = [e for e in attempt.span.events if e.name == "queue_wait"]
    waited = attempt.attributes["turnout.queue.wait_seconds"]
    assert waited > 0 and queue_wait.time_unix_nano - attempt.span.start_time_unix_nano == pytest.approx(waited * 1e9)


async def test_each_worker_process_exports_its_own_spans(ollama, tmp_path):
    async with OtlpReceiver() as receiver:
        config = "workers: 2\nlogging: {format: json}\n" + backends_yaml(ollama) + tracing_yaml(receiver)
        async with spawn(config, tmp_path) as gateway:
            sent = await _traffic_until_both_workers_served(gateway.address, gateway.process.stderr)
            gateway.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(gateway.process.wait(), 20) == 0
        spans = await receiver.wait_for_spans(2 * sent)

    rpcs = by_name(spans, "turnout.v1.GenerateService/Generate")
    assert len(rpcs) == sent and len({rpc.resource["service.instance.id"] for rpc in rpcs}) == 2
    for rpc in rpcs:
        [attempt] = [s for s in spans if s.parent_id == rpc.span_id]
        assert attempt.resource == rpc.resource and attempt.trace_id == rpc.trace_id


async def test_check_config_shows_where_traces_go_but_no_header_value(tmp_path):
    path = tmp_path / "traced.yaml"
    path.write_text("tracing: {endpoint: 'http://user:pw@collector:4318', sampler_ratio: 0.5, "
                    "headers: {x-api-key: '${OTLP_TOKEN}'}}\n")
    code, out, err = await run("check-config", str(path), env={"OTLP_TOKEN": SECRET})
    assert code == 0, err
    assert "tracing: OTLP http/protobuf to http://***@collector:4318, sampler ratio 0.5, 1 header(s)" in out
    assert SECRET not in out + err and "pw" not in out
