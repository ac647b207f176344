"""The async core: resolve a route, run attempts, fall back, report timings.

One generation is one `Dispatcher.run` async generator. It yields a Started
once the first upstream event arrived (so the caller learns the backend that
really serves it), then Delta events, then one Completed. An attempt that
fails before anything reached the caller is retried on the plan's next target
when the error is retryable; after a Delta was yielded, a failure ends the
stream with StreamInterrupted — never a silent second attempt.

Every started attempt calls BackendState.begin and end exactly once, and the
upstream stream is closed on every path (completion, error, cancellation by
the caller or its deadline, or the consumer closing this generator).
Consumers must close the generator (contextlib.aclosing) when they stop early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Mapping

from adapters.base import Adapter
from gateway.domain import (
    ChatRequest,
    Delta,
    Finish,
    FinishReason,
    Message,
    Options,
    Role,
    Tool,
    Usage,
)
from gateway.errors import BackendError, BackendProtocolError, BackendUnreachable, NoTargetAvailable, StreamInterrupted
from gateway.routing.router import Plan, Router
from gateway.routing.state import BackendState, Target


@dataclass(frozen=True, slots=True)
class Generation:
    """A validated generation request, in domain terms."""

    request_id: str
    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    options: Options = Options()
    task: str = ""
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    request_id: str
    session_id: str
    route: str
    backend: str
    model: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Completed:
    reason: FinishReason
    usage: Usage | None
    time_to_first_token: float
    total_time: float


GenerationEvent = Started | Delta | Completed


def last_user_text(messages: tuple[Message, ...]) -> str:
    for message in reversed(messages):
        if message.role is Role.USER:
            return message.content
    return ""


class Dispatcher:
    def __init__(
        self,
        router: Router,
        states: Mapping[str, BackendState],
        adapters: Mapping[str, Adapter],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._states = states
        self._adapters = adapters
        self._clock = clock

    async def run(self, generation: Generation) -> AsyncIterator[GenerationEvent]:
        start = self._clock()
        route = self._router.resolve(generation.model, generation.task, last_user_text(generation.messages))
        plan = Plan(route, self._states)
        failures: list[tuple[str, BackendError]] = []
        while (target := plan.next()) is not None:
            state = self._states[target.backend]
            stream = self._adapters[target.backend].stream_chat(
                ChatRequest(target.model, generation.messages, generation.tools, generation.options)
            )
            state.begin()
            try:
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    event = BackendProtocolError(f"backend {target.backend!r} sent an empty stream")
                except BackendError as exc:
                    event = exc
                if isinstance(event, BackendError):
                    state.record_failure(backend_down=isinstance(event, BackendUnreachable))
                    if not event.retryable:
                        raise event
                    failures.append((target.backend, event))
                    continue
                first_token = self._clock() - start
                state.record_success(first_token)
                yield self._started(generation, route.name, target, plan.attempt)
                while not isinstance(event, Finish):
                    yield event
                    event = await self._next_after_output(stream, target, state)
                yield Completed(event.reason, event.usage, first_token, self._clock() - start)
                return
            finally:
                state.end()
                await stream.aclose()
        raise self._exhausted(route.name, failures)

    @staticmethod
    async def _next_after_output(
        stream: AsyncIterator[Delta | Finish], target: Target, state: BackendState
    ) -> Delta | Finish:
        """The next upstream event once output reached the caller: a failure
        now ends the generation instead of moving to another target."""
        try:
            return await anext(stream)
        except BackendError as exc:
            state.record_failure(backend_down=False)
            raise StreamInterrupted(
                f"the stream from backend {target.backend!r} broke after output started: {exc.message}"
            ) from exc
        except StopAsyncIteration:
            state.record_failure(backend_down=False)
            raise StreamInterrupted(
                f"the stream from backend {target.backend!r} ended without finishing"
            ) from None

    @staticmethod
    def _started(generation: Generation, route: str, target: Target, attempt: int) -> Started:
        return Started(
            request_id=generation.request_id,
            session_id=generation.session_id,
            route=route,
            backend=target.backend,
            model=target.model,
            attempt=attempt,
        )

    @staticmethod
    def _exhausted(route: str, failures: list[tuple[str, BackendError]]) -> NoTargetAvailable:
        if not failures:
            return NoTargetAvailable(f"route {route!r} has no target to try")
        detail = "; ".join(exc.message for _, exc in failures)
        waits = [exc.retry_after for _, exc in failures if exc.retry_after is not None]
        return NoTargetAvailable(
            f"route {route!r}: all {len(failures)} attempt(s) failed: {detail}",
            retry_after=min(waits) if waits else None,
        )
