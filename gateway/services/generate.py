"""GenerateService: Generate (streaming) and Complete (unary)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from typing import AsyncIterator, Callable

import grpc

from gateway.config import LimitsConfig
from gateway.dispatch import Completed, Dispatcher, GenerationEvent, Started
from gateway.domain import Delta, ToolCall
from gateway.errors import TurnoutError
from gateway.services import convert
from gateway.services.session import session_id
from gateway.services.status import abort
from gateway.sessions.conversation import Answer, Conversations
from turnout.v1 import generate_pb2, generate_pb2_grpc

log = logging.getLogger("turnout.requests")


class GenerateServicer(generate_pb2_grpc.GenerateServiceServicer):
    def __init__(
        self,
        dispatcher: Dispatcher,
        conversations: Conversations,
        limits: LimitsConfig,
        new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._dispatcher = dispatcher
        self._conversations = conversations
        self._limits = limits
        self._new_request_id = new_request_id

    async def _events(
        self, request: generate_pb2.GenerateRequest, request_id: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[GenerationEvent]:
        generation = convert.to_generation(request, self._limits, request_id)
        new = generation.messages
        if generation.session_id:
            session_id(generation.session_id)
            generation = dataclasses.replace(
                generation, messages=await self._conversations.context(generation.session_id, new)
            )
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        started: Started | None = None
        content: list[str] = []
        calls: list[ToolCall] = []
        async with contextlib.aclosing(self._dispatcher.run(generation, deadline)) as events:
            async for event in events:
                if isinstance(event, Started):
                    started = event
                elif isinstance(event, Delta):
                    content.append(event.content)
                    calls.extend(event.tool_calls)
                elif generation.session_id and started is not None:  # Completed: record, then tell the caller
                    answer = Answer("".join(content), tuple(calls), started.backend, started.model)
                    await self._conversations.record(generation.session_id, new, answer)
                yield event

    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generate_pb2.GenerateResponse]:
        request_id = self._new_request_id()
        outcome = _Outcome(request_id, request.model)
        try:
            async with contextlib.aclosing(self._events(request, request_id, context)) as events:
                async for event in events:
                    outcome.see(event)
                    yield convert.response_pb(event)
        except Exception as exc:
            outcome.fail(exc)
            await abort(context, exc, request_id)
        finally:
            outcome.log()

    async def Complete(
        self, request: generate_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> generate_pb2.CompleteResponse:
        request_id = self._new_request_id()
        outcome = _Outcome(request_id, request.request.model)
        response = generate_pb2.CompleteResponse()
        content: list[str] = []
        reasoning: list[str] = []
        try:
            async with contextlib.aclosing(self._events(request.request, request_id, context)) as events:
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
            outcome.fail(exc)
            await abort(context, exc, request_id)
        finally:
            outcome.log()
        response.content = "".join(content)
        response.reasoning = "".join(reasoning)
        return response


class _Outcome:
    """What one request did, logged as one line when it ends (never message text)."""

    def __init__(self, request_id: str, model: str) -> None:
        self.request_id, self.model = request_id, model
        self.start = time.monotonic()
        self.started: Started | None = None
        self.completed: Completed | None = None
        self.code = "CANCELLED"

    def see(self, event: GenerationEvent) -> None:
        if isinstance(event, Started):
            self.started = event
        elif isinstance(event, Completed):
            self.completed = event
            self.code = "OK"

    def fail(self, exc: BaseException) -> None:
        self.code = exc.status.name if isinstance(exc, TurnoutError) else "INTERNAL"

    def log(self) -> None:
        s = self.started
        log.info(
            "request_id=%s model=%s route=%s backend=%s attempt=%s code=%s duration_ms=%.1f",
            self.request_id, self.model or "-", s.route if s else "-", s.backend if s else "-",
            s.attempt if s else 0, self.code, (time.monotonic() - self.start) * 1000,
        )
