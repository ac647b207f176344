"""OpenTelemetry tracing (SPEC §8): one trace from the caller, through
turnout, to the model server.

- `RpcSpans`, a server interceptor, opens one SERVER span per turnout RPC,
  continuing the W3C `traceparent`/`tracestate` found in the gRPC metadata,
  and makes it current for the handler.
- `Tracing.attempt` opens one CLIENT span per upstream attempt, a child of
  the RPC's. Its `stream` wraps the adapter's events: the span is current
  while the first event is awaited, which is when the HTTP request goes out,
  so the hook adapters/http.py installs puts that span's `traceparent` on it.
  It starts when the request began waiting for a slot (SPEC §4b); events
  mark the end of that queue wait, the first token and the completion.
- Export: OTLP over HTTP/protobuf or gRPC with the official SDK, batched.

Off (no `tracing:` endpoint and no OTEL_EXPORTER_OTLP_*ENDPOINT) nothing is
built: no interceptor, no HTTP hook, and `attempt` returns a shared no-op, so
an untraced request costs a few calls (bench: turnout_1w vs turnout_1w_traced).

Each Gateway owns its TracerProvider (never the global one), built in the
process that serves; `--workers N` spawns workers that each build their own
after start and export their own spans, told apart by service.instance.id.

Attributes follow the GenAI semantic conventions (gen_ai.operation.name,
gen_ai.request.model, gen_ai.response.model, gen_ai.usage.input_tokens and
output_tokens, gen_ai.response.finish_reasons, server.address/port), gRPC's
(rpc.system, rpc.service, rpc.method, rpc.grpc.status_code), and turnout.*
(route, backend, attempt, outcome, retry_reason, schedule.reason,
queue.wait_seconds). Never message text, never
error messages (they may quote upstream text), never headers; request
metadata values only for the keys `tracing.metadata` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.config import BackendConfig, TracingConfig
from gateway.domain import Finish, StreamEvent, Usage
from gateway.errors import BackendError

if TYPE_CHECKING:
    from gateway.dispatch import Trace
    from gateway.scheduling.scheduler import Admission

W3C = TraceContextTextMapPropagator()
OFF = TracingConfig()
TRACED = "/turnout.v1."
OPERATIONS = {
    "/turnout.v1.GenerateService/Generate": "chat",
    "/turnout.v1.GenerateService/Complete": "chat",
    "/turnout.v1.EmbeddingService/Embed": "embeddings",
}
# The GenAI operation of the RPC being handled, for its attempts' spans.
OPERATION: contextvars.ContextVar[str] = contextvars.ContextVar("turnout_operation", default="chat")
# Server-side gRPC codes that mark the span as an error (OpenTelemetry's RPC conventions).
SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})


def exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter for `config.protocol`; with no endpoint configured it
    reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT and _HEADERS itself. Imported
    here so a gateway without tracing never loads either."""
    headers = dict(config.headers) or None
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=config.endpoint or None, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = config.endpoint
    if endpoint and not urllib.parse.urlsplit(endpoint).path.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint or None, headers=headers)


def _server(url: str) -> dict[str, Any]:
    """server.address and server.port of a backend URL (never its userinfo)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


class Tracing:
    def __init__(self, config: TracingConfig = OFF, backends: Iterable[BackendConfig] = ()) -> None:
        self.enabled = config.enabled
        self._metadata = config.metadata
        self._servers = {b.name: _server(b.url) for b in backends}
        self._provider: TracerProvider | None = None
        if not self.enabled:
            return
        sampler = None if config.sampler_ratio is None else ParentBased(TraceIdRatioBased(config.sampler_ratio))
        resource = Resource.create({
            "service.name": config.service_name,
            "service.version": __version__,
            "service.instance.id": uuid.uuid4().hex,
        })
        self._provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(exporter(config)))
        self._tracer = self._provider.get_tracer("turnout", __version__)

    def know_backends(self, backends: Iterable[BackendConfig]) -> None:
        """Adds the server address of backends a config reload brought."""
        self._servers = {**self._servers, **{b.name: _server(b.url) for b in backends}}

    def interceptor(self) -> RpcSpans | None:
        return RpcSpans(self._tracer, self._metadata) if self.enabled else None

    def attempt(self, admission: Admission, number: int, retry_reason: str) -> Attempt | NoAttempt:
        """The span of attempt `number` on the admitted target, a child of the
        current (RPC) span; `retry_reason` is the kind of failure that caused
        it. It starts when the request began waiting for a slot; the
        `queue_wait` event marks when it got one. In a trace not sampled
        there is none: the upstream gets the RPC span's (unsampled) context."""
        if not self.enabled or not trace.get_current_span().is_recording():
            return NO_ATTEMPT
        target = admission.target
        operation = OPERATION.get()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": target.model,
            "turnout.backend": target.backend,
            "turnout.attempt": number,
            **self._servers.get(target.backend, {}),
        }
        if retry_reason:
            attributes["turnout.retry_reason"] = retry_reason
        if admission.reason:
            attributes["turnout.schedule.reason"] = admission.reason
        waited = {"turnout.queue.wait_seconds": admission.queued}
        now = time.time_ns()
        span = self._tracer.start_span(f"{operation} {target.model}", kind=SpanKind.CLIENT,
                                       attributes=attributes | waited, start_time=now - int(admission.queued * 1e9))
        span.add_event("queue_wait", waited, timestamp=now)
        return Attempt(span, target.model)

    def shutdown(self) -> None:
        """Exports what is left and stops the exporter; blocks (call it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()


class NoAttempt:
    """The attempt when tracing is off: the stream passes through untouched."""

    def stream(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        return events

    def failed(self, error: BackendError) -> None:
        pass

    def end(self) -> None:
        pass


NO_ATTEMPT = NoAttempt()


class Attempt:
    """One upstream attempt's span. Its outcome: `ok` (the backend finished),
    `error` (with error.type, the failure's kind), or `cancelled` (the caller
    went away, its deadline passed, or the consumer stopped early)."""

    def __init__(self, span: trace.Span, model: str) -> None:
        self._span = span
        self._model = model
        self._outcome = "cancelled"

    async def stream(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        span = self._span
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                event = await anext(events)
            span.add_event("first_token")
            while True:
                if isinstance(event, Finish):
                    self._finish(event)
                yield event
                event = await anext(events)
        except StopAsyncIteration:
            return
        except BackendError as exc:
            self.failed(exc)
            raise
        finally:
            await events.aclose()

    def _finish(self, finish: Finish) -> None:
        self._outcome = "ok"
        self._span.set_attributes({
            "gen_ai.response.model": self._model,
            "gen_ai.response.finish_reasons": [finish.reason.value],
            **_usage(finish.usage),
        })
        self._span.add_event("completion")

    def failed(self, error: BackendError) -> None:
        self._outcome = "error"
        self._span.set_attribute("error.type", error.kind)
        self._span.set_status(Status(StatusCode.ERROR))

    def end(self) -> None:
        self._span.set_attribute("turnout.outcome", self._outcome)
        self._span.end()


def _usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {}
    counts = {"gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens}
    return {name: count for name, count in counts.items() if count is not None}


class RpcSpans(grpc.aio.ServerInterceptor):
    """One SERVER span per turnout.v1 RPC (not health or reflection), the
    child of the caller's W3C trace context when it sent one. It sits in
    front of the Guard, whose handlers are coroutines (streaming ones write
    with context.write), so a refused call has its span too."""

    def __init__(self, tracer: trace.Tracer, metadata: tuple[str, ...]) -> None:
        self._tracer = tracer
        self._metadata = metadata

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(TRACED) or handler.request_streaming:
            return handler
        inner = handler.unary_unary or handler.unary_stream

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self._span(details, request, context):
                return await inner(request, context)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.unary_unary_rpc_method_handler
        return make(behavior, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    @contextlib.contextmanager
    def _span(self, details: grpc.HandlerCallDetails, request: Any, context: grpc.aio.ServicerContext) -> Iterator[None]:
        carrier = {name: value for name, value in details.invocation_metadata or () if isinstance(value, str)}
        method = details.method[1:]
        service, _, name = method.rpartition("/")
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        operation = OPERATIONS.get(details.method)
        if operation:
            attributes.update(self._request_attributes(operation, request))
        span = self._tracer.start_span(method, W3C.extract(carrier), SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        operation_token = OPERATION.set(operation or "")
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            OPERATION.reset(operation_token)
            otel_context.detach(token)
            code = _status(context, error)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_ERRORS:
                span.set_attribute("error.type", code.name)
                span.set_status(Status(StatusCode.ERROR))
            span.end()

    def _request_attributes(self, operation: str, request: Any) -> dict[str, Any]:
        """GenAI attributes of the request (CompleteRequest wraps a GenerateRequest)."""
        generation = getattr(request, "request", request)
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation}
        model = getattr(generation, "model", None)
        if isinstance(model, str) and model:
            attributes["gen_ai.request.model"] = model
        metadata = getattr(generation, "metadata", None)
        for key in self._metadata if metadata is not None else ():
            if key in metadata:
                attributes[f"turnout.request.metadata.{key}"] = metadata[key]
        return attributes


def _status(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def annotate(request_id: str, generation: Trace) -> None:
    """Adds what a finished Generate or Complete did to its RPC span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        "turnout.request_id": request_id,
        "turnout.route": generation.route,
        "turnout.attempts": generation.attempts,
    }
    if generation.attempts:
        attributes |= {"turnout.backend": generation.backend, "gen_ai.response.model": generation.model}
    span.set_attributes(attributes | _usage(generation.usage))


def log_fields() -> dict[str, str]:
    """trace_id and span_id of the current span, for the request log line."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format_trace_id(context.trace_id), "span_id": format_span_id(context.span_id)}


def exemplar() -> dict[str, str] | None:
    """The Prometheus exemplar labels linking a latency sample to its trace,
    when that trace is sampled (so it exists in the collector)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format_trace_id(context.trace_id)}
