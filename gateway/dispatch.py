"""The async core: resolve a route, run attempts, fall back, report timings.

One generation is one `Dispatcher.run` async generator. It yields a Started
once the first upstream event arrived (so the caller learns the backend that
really serves it), then Delta events, then one Completed. An attempt that
fails before anything reached the caller (connect error, no first token within
the target's or route's `first_token_timeout`, 429/5xx, model missing, a broken
stream) is retried on the plan's next target when the error is retryable,
after a jittered exponential backoff, and never past the caller's deadline;
after a Delta was yielded, a failure ends the stream with StreamInterrupted —
never a silent second attempt. Failures feed outlier ejection; a Retry-After
keeps that backend out of rotation until then.

Each attempt first gets a slot from the scheduler (gateway/scheduling), which
may queue it in turnout or spill it to a later tier; backoff happens before,
never while holding a slot. Every started attempt calls BackendState.begin
and end exactly once (and moves the in-flight gauge with them), releases its
slot, and closes the upstream stream on every path (completion, error,
cancellation by the caller or its deadline, or the consumer closing this
generator).
Consumers must close the generator (contextlib.aclosing) when they stop early.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Mapping, Protocol

from adapters.base import Adapter
from gateway.domain import (
    ChatRequest,
    Controls,
    Delta,
    Embeddings,
    Finish,
    FinishReason,
    Message,
    Options,
    Role,
    Timings,
    Tool,
    Usage,
)
from gateway.errors import (
    BackendBusy,
    BackendError,
    BackendModelMissing,
    BackendProtocolError,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    DeadlineExceeded,
    NoTargetAvailable,
    PermissionDenied,
    StreamInterrupted,
)
from gateway.metrics import NONE, Metrics
from gateway.routing.retry_budget import RetryBudget
from gateway.routing.router import Affinity, Plan, Route, Router
from gateway.routing.state import BackendState, Target
from gateway.tracing import Tracing
from gateway.scheduling.prefix import block_hashes, estimate_tokens, render
from gateway.scheduling.scheduler import Admission, Prompt, Scheduler

log = logging.getLogger("turnout")
JITTER = 0.2
ANSWER_KEPT = 262_144  # characters of an answer an adaptive route keeps for the prefix index: more than a server caches


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
    allowed_routes: frozenset[str] | None = None
    controls: Controls = Controls()

    def open(self, adapter: Adapter, target: Target) -> AsyncIterator[Delta | Finish]:
        """One attempt's upstream stream; the request's backend options win
        key by key over the target's (which hold the route's)."""
        options = {**target.options, **self.controls.backend_options}
        controls = dataclasses.replace(self.controls, backend_options=options)
        return adapter.stream_chat(ChatRequest(target.model, self.messages, self.tools, self.options, controls))


class Work(Protocol):
    """What `Dispatcher.run` routes: a Generation, or another request whose
    attempt is an upstream stream of events ending in a Finish (an Embed is
    one Embeddings event, then Finish)."""

    request_id: str
    model: str
    messages: tuple[Message, ...]
    task: str
    session_id: str
    allowed_routes: frozenset[str] | None

    def open(self, adapter: Adapter, target: Target) -> AsyncIterator[Delta | Embeddings | Finish]: ...


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
    timings: Timings | None = None


GenerationEvent = Started | Delta | Embeddings | Completed


@dataclass(slots=True)
class Trace:
    """What one generation did, filled in by the dispatcher as it goes, for
    the request's log line and metrics: also when it fails or is cancelled."""

    route: str = NONE
    backend: str = NONE
    model: str = NONE
    attempts: int = 0
    time_to_first_token: float | None = None
    usage: Usage | None = None
    reason: str = NONE
    queued: float = 0.0


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
        metrics: Metrics,
        scheduler: Scheduler,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._router = router
        self._states = states
        self._adapters = adapters
        self._metrics = metrics
        self._scheduler = scheduler
        self._clock = clock
        self._rng = rng or random.Random()
        self._affinity = Affinity()
        self._budgets: dict[str, RetryBudget] = {}
        self._tracing = tracing or Tracing()

    async def run(
        self, generation: Work, deadline: float | None = None, trace: Trace | None = None
    ) -> AsyncIterator[GenerationEvent]:
        """`deadline` is the caller's, in this dispatcher's clock; None for none.
        `trace`, when given, is filled in with what happened."""
        trace = trace or Trace()
        start = self._clock()
        route = self._router.resolve(generation.model, generation.task, last_user_text(generation.messages))
        if generation.allowed_routes is not None and route.name not in generation.allowed_routes:
            allowed = ", ".join(sorted(generation.allowed_routes)) or "none"
            raise PermissionDenied(f"this API key may not use route {route.name!r} (it may use: {allowed})")
        trace.route = route.name
        plan = Plan(route, self._states, start, self._affinity.get(route, generation.session_id))
        prompt_text = render(generation.messages) if route.adaptive else ""
        prompt = Prompt(block_hashes(prompt_text), estimate_tokens(prompt_text)) if route.adaptive else Prompt()
        failures: list[tuple[str, BackendError]] = []
        while True:
            plan.now = self._clock()
            if not plan.pool():
                break
            if plan.attempt > 0:
                if not await self._back_off(route, plan.attempt + 1, deadline):
                    break
                self._metrics.retries.labels(route.name, failures[-1][1].kind).inc()
                plan.now = self._clock()
            admission = await self._scheduler.admit(route, plan.pool(), prompt, deadline)
            target = admission.target
            plan.take(target)
            trace.backend, trace.model, trace.attempts = target.backend, target.model, plan.attempt
            trace.reason, trace.queued = admission.reason, trace.queued + admission.queued
            state = self._states[target.backend]
            in_flight = self._metrics.in_flight.labels(target.backend)
            attempt = self._tracing.attempt(admission, plan.attempt, failures[-1][1].kind if failures else "")
            stream = attempt.stream(generation.open(self._adapters[target.backend], target))
            state.begin()
            in_flight.inc()
            self._budget(route).begin()
            ok = False
            try:
                event = await self._first_event(stream, route, target, deadline)
                if isinstance(event, BackendError):
                    attempt.failed(event)
                    self._record_failure(state, event)
                    if not event.retryable:
                        raise event
                    failures.append((target.backend, event))
                    continue
                now = self._clock()
                first_token = now - start
                trace.time_to_first_token = first_token
                state.record_success(first_token)
                self._scheduler.first_token(admission, prompt, now - admission.start)
                self._affinity.remember(route, generation.session_id, target)
                yield self._started(generation, route.name, target, plan.attempt)
                answer: list[str] = []
                kept = 0
                while not isinstance(event, Finish):
                    if route.adaptive and isinstance(event, Delta) and kept < ANSWER_KEPT:
                        answer.append(event.content)  # for the prefix index: the next turn starts with it
                        kept += len(event.content)
                    yield event
                    event = await self._next_after_output(stream, target, state)
                trace.usage = event.usage
                ok = True
                self._remember_answer(route, admission, prompt, prompt_text, "".join(answer))
                yield Completed(event.reason, event.usage, first_token, self._clock() - start, event.timings)
                return
            finally:
                try:
                    state.end()
                    in_flight.dec()
                    self._budget(route).end()
                    await stream.aclose()
                    attempt.end()
                finally:
                    await self._scheduler.release(admission, ok)
        raise self._exhausted(route.name, failures)

    def _remember_answer(
        self, route: Route, admission: Admission, prompt: Prompt, prompt_text: str, answer: str
    ) -> None:
        if route.adaptive:
            text = prompt_text + render((Message(Role.ASSISTANT, answer),))
            self._scheduler.completed(admission, block_hashes(text, prompt.hashes))

    def _budget(self, route: Route) -> RetryBudget:
        if route.name not in self._budgets:
            self._budgets[route.name] = RetryBudget(route.retry.budget_percent, route.retry.min_retry_concurrency)
        return self._budgets[route.name]

    async def _back_off(self, route: Route, attempt: int, deadline: float | None) -> bool:
        """Waits before attempt `attempt` (2, 3, ...); False when the caller's
        deadline would pass first, so no attempt is started that cannot finish,
        or when the route's retry budget is spent (counted)."""
        retry = route.retry
        delay = min(retry.backoff * 2 ** (attempt - 2), retry.max_backoff)
        delay *= 1 + self._rng.uniform(-JITTER, JITTER)
        if deadline is not None and self._clock() + delay >= deadline:
            return False
        budget = self._budget(route)
        if not budget.can_retry():
            self._metrics.retry_budget_refusals.labels(route.name).inc()
            return False
        with budget.retrying():
            await asyncio.sleep(delay)
        return True

    async def _first_event(
        self, stream: AsyncIterator[Delta | Embeddings | Finish], route: Route, target: Target, deadline: float | None
    ) -> Delta | Embeddings | Finish | BackendError:
        """The attempt's first event, or the BackendError that ended it. Waits
        at most the first-token timeout (target's, else route's) and never
        past the caller's deadline."""
        limit = target.first_token_timeout or route.first_token_timeout
        remaining = None if deadline is None else deadline - self._clock()
        timeout = min((t for t in (limit, remaining) if t is not None), default=None)
        try:
            async with asyncio.timeout(timeout):
                return await anext(stream)
        except StopAsyncIteration:
            return BackendProtocolError(f"backend {target.backend!r} sent an empty stream")
        except BackendError as exc:
            return exc
        except TimeoutError:
            if timeout == limit:
                return BackendTimeout(f"backend {target.backend!r} sent no first token within {limit:g}s")
            raise DeadlineExceeded("the caller's deadline passed before the first token") from None

    def _record_failure(self, state: BackendState, error: BackendError) -> None:
        self._metrics.upstream_errors.labels(state.name, error.kind).inc()
        counts = not isinstance(error, (BackendModelMissing, BackendRejected, BackendRateLimited, BackendBusy))
        if state.record_failure(self._clock(), counts, error.retry_after):
            log.warning(
                "backend %s ejected for %.1fs after %d consecutive failures (ejection %d): %s",
                state.name, state.ejected_until - self._clock(), state.policy.consecutive_failures,
                state.ejections, error.kind,
            )

    async def _next_after_output(
        self, stream: AsyncIterator[Delta | Embeddings | Finish], target: Target, state: BackendState
    ) -> Delta | Embeddings | Finish:
        """The next upstream event once output reached the caller: a failure
        now ends the generation instead of moving to another target."""
        try:
            return await anext(stream)
        except BackendError as exc:
            self._record_failure(state, exc)
            raise StreamInterrupted(
                f"the stream from backend {target.backend!r} broke after output started: {exc.message}"
            ) from exc
        except StopAsyncIteration:
            self._record_failure(state, BackendProtocolError("stream ended without finishing"))
            raise StreamInterrupted(
                f"the stream from backend {target.backend!r} ended without finishing"
            ) from None

    @staticmethod
    def _started(generation: Work, route: str, target: Target, attempt: int) -> Started:
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
