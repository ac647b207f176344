"""GenerateService: Generate (streaming) and Complete (unary)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, AsyncIterator, Callable, Mapping, NoReturn

import grpc

from gateway import tracing
from gateway.auth import current_key
from gateway.dispatch import Completed, GenerationEvent, Started, Trace
from gateway.domain import Delta, ToolCall
from gateway.errors import LimitExceeded, TurnoutError
from gateway.metrics import NONE, Metrics
from gateway.services import convert
from gateway.services.session import session_id
from gateway.services.status import abort
from gateway.sessions.conversation import Answer, Conversations
from turnout.v1 import generate_pb2, generate_pb2_grpc

if TYPE_CHECKING:
    from gateway.runtime import Runtime, Runtimes

log = logging.getLogger("turnout.requests")
LOGGED_METADATA, LOGGED_VALUE = 32, 256
# A call cancelled with less than this left of its deadline ran out of time. The caller's
# own timer fires first (our copy of its deadline starts when its headers reach us, later),
# and its RST_STREAM(CANCEL) looks the same as a caller who gave up early.
DEADLINE_SLACK = 0.25


class GenerateServicer(generate_pb2_grpc.GenerateServiceServicer):
    def __init__(
        self,
        runtimes: Runtimes,
        conversations: Conversations,
        metrics: Metrics,
        new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._runtimes = runtimes
        self._metrics = metrics
        self._conversations = conversations
        self._new_request_id = new_request_id

    async def _events(
        self, request: generate_pb2.GenerateRequest, outcome: Outcome
    ) -> AsyncIterator[GenerationEvent]:
        """The call's events, on the runtime current when it arrived (held to its end)."""
        with self._runtimes.hold() as runtime:
            async with contextlib.aclosing(self._generate(request, outcome, runtime)) as events:
                async for event in events:
                    yield event

    async def _generate(
        self, request: generate_pb2.GenerateRequest, outcome: Outcome, runtime: Runtime
    ) -> AsyncIterator[GenerationEvent]:
        limits = runtime.limits
        generation = convert.to_generation(request, limits, outcome.request_id)
        key = current_key()
        if key is not None:
            generation = dataclasses.replace(generation, allowed_routes=key.routes)
        new = generation.messages
        if generation.session_id:
            session_id(generation.session_id)
            generation = dataclasses.replace(
                generation, messages=await self._conversations.context(generation.session_id, new)
            )
        remaining = outcome.context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        started: Started | None = None
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        sent = 0
        async with contextlib.aclosing(runtime.dispatcher.run(generation, deadline, outcome.trace)) as events:
            async for event in events:
                if isinstance(event, Started):
                    started = event
                elif isinstance(event, Delta):
                    sent += delta_bytes(event)
                    if sent > limits.max_response_bytes:
                        raise LimitExceeded(
                            f"the response passed limits.max_response_bytes ({limits.max_response_bytes} "
                            "bytes); the upstream stream was closed"
                        )
                    if generation.session_id:  # kept only to record the answer
                        content.append(event.content)
                        reasoning.append(event.reasoning)
                        calls.extend(event.tool_calls)
                elif generation.session_id and started is not None:  # Completed: record, then tell the caller
                    answer = Answer(
                        "".join(content), tuple(calls), started.backend, started.model, "".join(reasoning)
                    )
                    await self._conversations.record(generation.session_id, new, answer)
                yield event

    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generate_pb2.GenerateResponse]:
        outcome = Outcome(self._metrics, self._new_request_id(), context, request.metadata)
        try:
            async with contextlib.aclosing(self._events(request, outcome)) as events:
                async for event in events:
                    outcome.see(event)
                    yield convert.response_pb(event)
        except Exception as exc:
            await outcome.abort(exc)
        finally:
            outcome.finish()

    async def Complete(
        self, request: generate_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> generate_pb2.CompleteResponse:
        outcome = Outcome(self._metrics, self._new_request_id(), context, request.request.metadata)
        response = generate_pb2.CompleteResponse()
        content: list[str] = []
        reasoning: list[str] = []
        try:
            async with contextlib.aclosing(self._events(request.request, outcome)) as events:
                async for event in events:
                    outcome.see(event)
                    if isinstance(event, Started):
                        response.started.CopyFrom(convert.started_pb(event))
                    elif isinstance(event, Delta):
                        content.append(event.content)
                        reasoning.append(event.reasoning)
                        response.tool_calls.extend(convert.tool_calls_pb(event.tool_calls))
                    else:
                        response.completed.CopyFrom(convert.completed_pb(event))
        except Exception as exc:
            await outcome.abort(exc)
        finally:
            outcome.finish()
        response.content = "".join(content)
        response.reasoning = "".join(reasoning)
        return response


def delta_bytes(delta: Delta) -> int:
    """The bytes of text a delta adds to the response (content, reasoning, tool calls)."""
    size = len(delta.content.encode()) + len(delta.reasoning.encode())
    return size + sum(len(c.id) + len(c.name) + len(c.arguments.encode()) for c in delta.tool_calls)


class Outcome:
    """What one request did: when it ends, exactly one log line (never message
    text) and its request metrics, whatever the ending (OK, error, cancelled).
    The caller's `metadata` is in the log line (bounded: LOGGED_METADATA
    entries, each value cut at LOGGED_VALUE characters), never in a metric.
    An Embed (`embed`) counts in the embed series and has no first token.
    A failure is recorded before its status is sent (`abort`), so a caller
    that sees the status also finds it in the metrics."""

    def __init__(
        self, metrics: Metrics, request_id: str, context: grpc.aio.ServicerContext,
        metadata: Mapping[str, str] | None = None, embed: bool = False,
    ) -> None:
        self.metrics, self.request_id, self.context, self.embed = metrics, request_id, context, embed
        self.metadata = {key[:LOGGED_VALUE]: value[:LOGGED_VALUE]
                         for key, value in itertools.islice(sorted((metadata or {}).items()), LOGGED_METADATA)}
        key = current_key()
        self.key = key.name if key else NONE
        self.start = time.monotonic()
        self.trace = Trace()
        self.code = "CANCELLED"
        self.finished = False

    def see(self, event: GenerationEvent) -> None:
        if isinstance(event, Completed):
            self.code = "OK"

    async def abort(self, exc: BaseException) -> NoReturn:
        """Records the failure, then ends the call with its status."""
        self.code = exc.status.name if isinstance(exc, TurnoutError) else "INTERNAL"
        self.finish()
        await abort(self.context, exc, self.request_id)

    def finish(self) -> None:
        """Records the request once; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        remaining = self.context.time_remaining()
        if self.code == "CANCELLED" and remaining is not None and remaining < DEADLINE_SLACK:
            self.code = "DEADLINE_EXCEEDED"
        t, duration = self.trace, time.monotonic() - self.start
        m, exemplar = self.metrics, tracing.exemplar()
        requests, durations = (m.embed_requests, m.embed_duration) if self.embed else (m.requests, m.request_duration)
        requests.labels(t.route, t.backend, t.model, self.code).inc()
        m.key_requests.labels(self.key, self.code).inc()
        if t.attempts:
            durations.labels(t.route, t.backend, t.model).observe(duration, exemplar)
        if t.time_to_first_token is not None and not self.embed:
            m.time_to_first_token.labels(t.route, t.backend, t.model).observe(t.time_to_first_token, exemplar)
        usage = t.usage
        if usage is not None:
            for kind, count in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
                if count:
                    m.tokens.labels(t.backend, t.model, kind).inc(count)
        log.info("request", extra={"fields": {
            "request_id": self.request_id, "kind": "embed" if self.embed else "generation", "key": self.key,
            "route": t.route, "backend": t.backend, "model": t.model, "attempts": t.attempts, "reason": t.reason,
            "queue_ms": round(t.queued * 1000, 1), "code": self.code, "duration_ms": round(duration * 1000, 1),
            "ttft_ms": None if t.time_to_first_token is None else round(t.time_to_first_token * 1000, 1),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None, "metadata": self.metadata,
            **tracing.log_fields(),
        }})
        tracing.annotate(self.request_id, t)
