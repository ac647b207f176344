"""EmbeddingService: Embed, routed through the same dispatcher as Generate."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Callable

import grpc

from gateway.auth import current_key
from gateway.config import LimitsConfig
from gateway.dispatch import Completed, Started
from gateway.domain import Embeddings
from gateway.embedding import Embedding
from gateway.errors import InvalidRequest
from gateway.metrics import Metrics
from gateway.services.controls import backend_options
from gateway.services.convert import metadata
from gateway.services.generate import Outcome
from turnout.v1 import embedding_pb2, embedding_pb2_grpc

if TYPE_CHECKING:
    from gateway.runtime import Runtime, Runtimes


def to_embedding(request: embedding_pb2.EmbedRequest, limits: LimitsConfig, request_id: str) -> Embedding:
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidRequest("request", f"is {size} bytes; the limit is {limits.max_request_bytes}")
    if not request.inputs:
        raise InvalidRequest("inputs", "at least one input is required")
    if len(request.inputs) > limits.max_embed_inputs:
        raise InvalidRequest("inputs", f"has {len(request.inputs)} inputs; the limit is {limits.max_embed_inputs}")
    for i, text in enumerate(request.inputs):
        if not text:
            raise InvalidRequest(f"inputs[{i}]", "must not be empty")
        if len(text.encode()) > limits.max_embed_input_bytes:
            raise InvalidRequest(
                f"inputs[{i}]", f"is {len(text.encode())} bytes; the limit is {limits.max_embed_input_bytes}"
            )
    if request.HasField("dimensions") and request.dimensions < 1:
        raise InvalidRequest("dimensions", "must be at least 1")
    metadata(request.metadata, "metadata", limits)
    key = current_key()
    return Embedding(
        request_id=request_id,
        model=request.model.strip(),
        inputs=tuple(request.inputs),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        truncate=request.truncate if request.HasField("truncate") else None,
        backend_options=backend_options(request.backend_options),
        task=request.task,
        allowed_routes=key.routes if key is not None else None,
    )


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(
        self,
        runtimes: Runtimes,
        metrics: Metrics,
        new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._runtimes = runtimes
        self._metrics = metrics
        self._new_request_id = new_request_id

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedResponse:
        outcome = Outcome(self._metrics, self._new_request_id(), context, request.metadata, embed=True)
        response = embedding_pb2.EmbedResponse(request_id=outcome.request_id)
        try:
            with self._runtimes.hold() as runtime:
                await self._embed(request, outcome, response, runtime)
        except Exception as exc:
            await outcome.abort(exc)
        finally:
            outcome.finish()
        return response

    async def _embed(
        self, request: embedding_pb2.EmbedRequest, outcome: Outcome, response: embedding_pb2.EmbedResponse,
        runtime: Runtime,
    ) -> None:
        embedding = to_embedding(request, runtime.limits, outcome.request_id)
        remaining = outcome.context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        async with contextlib.aclosing(runtime.dispatcher.run(embedding, deadline, outcome.trace)) as events:
            async for event in events:
                outcome.see(event)
                if isinstance(event, Started):
                    response.route, response.backend, response.model = event.route, event.backend, event.model
                    response.attempt = event.attempt
                elif isinstance(event, Embeddings):
                    response.embeddings.extend(embedding_pb2.Embedding(values=v) for v in event.vectors)
                elif isinstance(event, Completed) and event.usage and event.usage.prompt_tokens is not None:
                    response.usage.prompt_tokens = event.usage.prompt_tokens
