"""Errors -> gRPC status with google.rpc details (BadRequest, RetryInfo,
ErrorInfo). Our own bugs become INTERNAL with no trace to the caller: the
trace goes to the log with the request id the caller can quote."""

from __future__ import annotations

import functools
import logging
import math
import re
import uuid
from typing import Any, Awaitable, Callable, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.errors import InvalidRequest, TurnoutError

DOMAIN = "turnout.gateway"
MAX_MESSAGE = 1024
log = logging.getLogger("turnout")


def _reason(exc: TurnoutError) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).upper()


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def bounded(text: str) -> str:
    """Error text cut to MAX_MESSAGE characters: messages echo caller input
    (a model name, a session id), and gRPC refuses trailers over ~8 KiB (the
    message travels twice: grpc-message and the status details)."""
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "… (cut)"


def rich_status(exc: TurnoutError) -> grpc.Status:
    details = [_pack(error_details_pb2.ErrorInfo(reason=_reason(exc), domain=DOMAIN))]
    if isinstance(exc, InvalidRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(field=bounded(exc.field), description=bounded(exc.description))
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = duration_pb2.Duration(seconds=max(1, math.ceil(retry_after)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(
        status_pb2.Status(code=exc.status.value[0], message=bounded(exc.message), details=details)
    )


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, request_id: str) -> NoReturn:
    if not isinstance(exc, TurnoutError):
        log.error("internal error in request %s", request_id, exc_info=exc)
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal error (request id {request_id}); the gateway log has the details"
        )
    await context.abort_with_status(rich_status(exc))


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def unary(handler: Handler) -> Handler:
    """Wraps a unary servicer method so any error it raises becomes its status."""

    @functools.wraps(handler)
    async def guarded(self: object, request: object, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await abort(context, exc, uuid.uuid4().hex)

    return guarded  # type: ignore[return-value]
