"""The server interceptor in front of every turnout method.

1. Requests that are not valid protobuf become INVALID_ARGUMENT naming the
   message type, instead of gRPC's own INTERNAL "Exception deserializing".
2. With API keys configured: `authorization: Bearer <key>` is required
   (UNAUTHENTICATED otherwise); reflection and PullModel/DeleteModel need an
   admin key (PERMISSION_DENIED); Generate, Complete and Embed are admitted by the
   key's concurrency and per-minute limits (RESOURCE_EXHAUSTED with
   RetryInfo). Health checks stay open.
3. The key is set in gateway.auth.CURRENT_KEY inside the handler's own task,
   where the servicers read it (route permission, session ownership, logs).
   Streaming handlers are driven by a coroutine that writes each response,
   not by an async generator handed to gRPC: a cancelled call then unwinds in
   the RPC's own task, so its concurrency slot is released there and then
   (an abandoned generator would be finalized later, in another context).
"""

from __future__ import annotations

import contextlib
import inspect
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import grpc

from gateway.auth import CURRENT_KEY, ApiKey, KeyRing, Limiter
from gateway.metrics import NONE, Metrics
from gateway.errors import InvalidRequest, LimitExceeded, PermissionDenied, TurnoutError, Unauthenticated
from gateway.services.status import abort

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
ADMIN_PREFIXES = ("/grpc.reflection.", "/turnout.v1.ModelService/PullModel", "/turnout.v1.ModelService/DeleteModel")
EMBED_PREFIX = "/turnout.v1.EmbeddingService/"
LIMITED_PREFIXES = ("/turnout.v1.GenerateService/", EMBED_PREFIX)


@dataclass(frozen=True, slots=True)
class _Malformed:
    message_type: str


def _safe(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Malformed(method.rsplit("/", 1)[-1] + "Request")

    return parse


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyRing, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._metrics = metrics
        self._limiter = Limiter()
        self._clock = clock

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if handler.request_streaming:
            return self._wrap_streaming_requests(handler, details)
        return self._wrap(handler, details)

    def use_keys(self, keys: KeyRing) -> None:
        """The keys for every call from now on (a config reload)."""
        self._keys = keys

    def _key(self, details: grpc.HandlerCallDetails) -> ApiKey | None:
        """The caller's key; raises for a missing, unknown or under-privileged one."""
        if not self._keys.enabled:
            return None
        token = ""
        for name, value in details.invocation_metadata or ():
            if name == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
                token = value[7:].strip()
        if not token:
            raise Unauthenticated("this gateway needs an API key: send metadata `authorization: Bearer <key>`")
        key = self._keys.identify(token)
        if key is None:
            raise Unauthenticated("the API key is not valid")
        if details.method.startswith(ADMIN_PREFIXES) and not key.admin:
            raise PermissionDenied(f"{details.method} needs an admin key; key {key.name!r} is not one")
        return key

    def _admit(self, key: ApiKey | None, method: str) -> bool:
        if key is None or not method.startswith(LIMITED_PREFIXES):
            return False
        wait = self._limiter.admit(key, self._clock())
        if wait is not None:
            raise LimitExceeded(f"key {key.name!r} is over its concurrency or requests-per-minute limit", wait)
        self._metrics.key_streams_in_flight.labels(key.name).inc()
        return True

    def _count_refusal(self, method: str, key: ApiKey | None, exc: TurnoutError) -> None:
        """A generation or embedding refused here never reaches its servicer:
        it is counted as the servicer counts requests, with no route (the
        per-key limit alert reads the key series)."""
        if not method.startswith(LIMITED_PREFIXES):
            return
        code = exc.status.name
        requests = self._metrics.embed_requests if method.startswith(EMBED_PREFIX) else self._metrics.requests
        requests.labels(NONE, NONE, NONE, code).inc()
        self._metrics.key_requests.labels(key.name if key else NONE, code).inc()

    def _release(self, key: ApiKey) -> None:
        self._limiter.release(key)
        self._metrics.key_streams_in_flight.labels(key.name).dec()

    def _wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        inner = handler.unary_unary or handler.unary_stream
        streaming = handler.unary_stream is not None

        async def enter(request: Any, context: grpc.aio.ServicerContext) -> tuple[ApiKey | None, bool]:
            key = None
            try:
                if isinstance(request, _Malformed):
                    raise InvalidRequest("request", f"is not a valid turnout.v1.{request.message_type} message")
                key = self._key(details)
                return key, self._admit(key, method)
            except TurnoutError as exc:
                self._count_refusal(method, key, exc)
                await abort(context, exc, uuid.uuid4().hex)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key, admitted = await enter(request, context)
            token = CURRENT_KEY.set(key)
            try:
                if not inspect.isasyncgenfunction(inner):
                    return await inner(request, context)
                async with contextlib.aclosing(inner(request, context)) as responses:
                    async for response in responses:
                        await context.write(response)
            finally:
                if admitted:
                    self._release(key)
                CURRENT_KEY.reset(token)

        make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        return make(behavior, request_deserializer=_safe(handler.request_deserializer, method),
                    response_serializer=handler.response_serializer)

    def _wrap_streaming_requests(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """Client-streaming methods (server reflection): the key check only."""
        inner = handler.stream_stream or handler.stream_unary

        async def check(context: grpc.aio.ServicerContext) -> None:
            try:
                self._key(details)
            except TurnoutError as exc:
                await abort(context, exc, uuid.uuid4().hex)

        if handler.stream_stream is not None:
            async def behavior(requests: Any, context: grpc.aio.ServicerContext):
                await check(context)
                async for response in inner(requests, context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        async def unary_behavior(requests: Any, context: grpc.aio.ServicerContext):
            await check(context)
            return await inner(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            unary_behavior, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
