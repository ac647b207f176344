"""ModelService: what the gateway can reach, and model management on Ollama."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, AsyncIterator, Callable

from adapters.base import Adapter
from gateway.config import redact_url
from gateway.domain import BackendKind
from gateway.errors import BackendModelMissing, InvalidRequest, NotFound
from gateway.routing.state import Health
from gateway.services.convert import duration
from gateway.services.status import abort, unary
from turnout.v1 import model_pb2, model_pb2_grpc

if TYPE_CHECKING:
    from gateway.runtime import Runtime, Runtimes

_KINDS = {BackendKind.OLLAMA: model_pb2.BACKEND_KIND_OLLAMA, BackendKind.OPENAI: model_pb2.BACKEND_KIND_OPENAI}
_STATES = {
    Health.UNKNOWN: model_pb2.BACKEND_STATE_UNSPECIFIED,
    Health.HEALTHY: model_pb2.BACKEND_STATE_HEALTHY,
    Health.EJECTED: model_pb2.BACKEND_STATE_EJECTED,
    Health.DOWN: model_pb2.BACKEND_STATE_DOWN,
}


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """Answers from the runtime current when each call arrives (a config
    reload may swap it); PullModel and DeleteModel hold it until they end."""

    def __init__(self, runtimes: Runtimes, clock: Callable[[], float] = time.monotonic) -> None:
        self._runtimes = runtimes
        self._clock = clock

    async def ListModels(self, request, context) -> model_pb2.ListModelsResponse:
        runtime = self._runtimes.current
        catalog, states = runtime.catalog, runtime.states
        models = []
        for name, backends in catalog.all_models().items():
            infos = [catalog.info(b, name) for b in backends]
            model = model_pb2.Model(
                name=name,
                backends=backends,
                family=next((i.family for i in infos if i.family), ""),
                healthy=any(states[b].health(self._clock()) is Health.HEALTHY for b in backends),
            )
            size = next((i.size_bytes for i in infos if i.size_bytes is not None), None)
            if size is not None:
                model.size_bytes = size
            models.append(model)
        return model_pb2.ListModelsResponse(models=models)

    async def ListBackends(self, request, context) -> model_pb2.ListBackendsResponse:
        runtime = self._runtimes.current
        out = []
        for b in runtime.config.backends:
            state = runtime.states[b.name]
            now = self._clock()
            health = state.health(now)
            backend = model_pb2.Backend(
                name=b.name,
                kind=_KINDS[b.kind],
                endpoint=redact_url(b.url),
                state=_STATES[health],
                in_flight=state.in_flight,
                requests_total=state.requests_total,
                errors_total=state.errors_total,
                weight=b.weight,
                priority=b.priority,
                models=runtime.catalog.models_of(b.name),
            )
            self._scheduling(runtime, backend, now)
            if state.latency_estimate is not None:
                backend.latency_estimate.CopyFrom(duration(state.latency_estimate))
            if health is Health.EJECTED:
                backend.ejected_until.FromNanoseconds(int((time.time() + state.ejected_until - now) * 1e9))
            out.append(backend)
        return model_pb2.ListBackendsResponse(backends=out)

    @staticmethod
    def _scheduling(runtime: Runtime, backend: model_pb2.Backend, now: float) -> None:
        scheduler = runtime.scheduler
        load = runtime.loads[backend.name]
        limit = scheduler.slots.limit(load.capacity)
        if limit is not None:
            backend.capacity = limit
        backend.queued = scheduler.waiting_for(backend.name)
        backend.load_signal = load.signal
        report = load.current(now)
        if report is not None and report.running is not None:
            backend.reported_running = report.running
        if report is not None and report.waiting is not None:
            backend.reported_waiting = report.waiting
        backend.loaded_models.extend(load.loaded(now))

    @unary
    async def ListRoutes(self, request, context) -> model_pb2.ListRoutesResponse:
        return self._runtimes.current.routes

    @staticmethod
    def _adapter(runtime: Runtime, backend: str, model: str) -> Adapter:
        if not backend:
            raise InvalidRequest("backend", "is required")
        if not model.strip():
            raise InvalidRequest("model", "is required")
        adapter = runtime.adapters.get(backend)
        if adapter is None:
            raise NotFound(f"no backend named {backend!r}; backends: {', '.join(runtime.adapters)}")
        return adapter

    async def PullModel(self, request, context) -> AsyncIterator[model_pb2.PullModelResponse]:
        try:
            with self._runtimes.hold() as runtime:
                async for p in self._adapter(runtime, request.backend, request.model).pull(request.model):
                    yield model_pb2.PullModelResponse(
                        status=p.status, digest=p.digest, total_bytes=p.total, completed_bytes=p.completed
                    )
                await runtime.refresh(request.backend)
        except Exception as exc:
            await abort(context, exc, uuid.uuid4().hex)

    @unary
    async def DeleteModel(self, request, context) -> model_pb2.DeleteModelResponse:
        with self._runtimes.hold() as runtime:
            try:
                await self._adapter(runtime, request.backend, request.model).delete(request.model)
            except BackendModelMissing:
                raise NotFound(f"backend {request.backend!r} has no model {request.model!r}") from None
            await runtime.refresh(request.backend)
        return model_pb2.DeleteModelResponse()
