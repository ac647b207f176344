"""The gateway's error tree. Each class carries its gRPC status, so the
services map any error to a status with one attribute lookup.

    TurnoutError              base; INTERNAL (a bug of ours)
    ├── InvalidRequest        the request is malformed; names the field (INVALID_ARGUMENT)
    ├── NotFound              unknown route, model, backend or session (NOT_FOUND)
    ├── AlreadyExists         a caller-chosen session id is taken (ALREADY_EXISTS)
    ├── Conflict              a conditional write lost to another writer (ABORTED)
    ├── LimitExceeded         a gateway limit was reached; may carry retry_after (RESOURCE_EXHAUSTED)
    ├── Unauthenticated       no API key, or an unknown one (UNAUTHENTICATED)
    ├── PermissionDenied      the key may not use that route or method (PERMISSION_DENIED)
    ├── Unsupported           the backend cannot do this operation (UNIMPLEMENTED)
    ├── NoTargetAvailable     every attempt failed, or nothing could be tried (UNAVAILABLE)
    ├── StreamInterrupted     the upstream failed after output reached the caller (UNAVAILABLE)
    ├── StoreUnavailable      the session store cannot be reached or is busy (UNAVAILABLE)
    ├── DeadlineExceeded      the caller's deadline ran out (DEADLINE_EXCEEDED)
    └── BackendError          one attempt against one backend failed
        ├── BackendUnreachable    connection refused or reset before a response
        ├── BackendTimeout        no response, or no first token, in time
        ├── BackendRateLimited    HTTP 429; may carry retry_after
        ├── BackendServerError    HTTP 5xx
        │   └── BackendBusy       HTTP 503: full or loading now; retried elsewhere, never ejects
        ├── BackendModelMissing   the backend does not have the model (HTTP 404)
        ├── BackendAuthFailed     the backend refused our credentials (HTTP 401)
        ├── BackendProtocolError  garbage, a stream without its terminator, a mid-stream error
        └── BackendRejected       HTTP 4xx (403 included) about the request itself; not retried

A BackendError's `retryable` says whether another target may be tried; its
`kind` is the bounded label used in logs and metrics. Messages never contain
upstream credentials: adapters build them from status codes and the upstream's
own error text only.
"""

from __future__ import annotations

import grpc


class TurnoutError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(TurnoutError):
    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(TurnoutError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TurnoutError):
    status = grpc.StatusCode.ALREADY_EXISTS


class Conflict(TurnoutError):
    status = grpc.StatusCode.ABORTED


class LimitExceeded(TurnoutError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthenticated(TurnoutError):
    status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TurnoutError):
    status = grpc.StatusCode.PERMISSION_DENIED


class Unsupported(TurnoutError):
    status = grpc.StatusCode.UNIMPLEMENTED


class NoTargetAvailable(TurnoutError):
    """`retry_after` (seconds) is set when the earliest cooldown is known."""

    status = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamInterrupted(TurnoutError):
    status = grpc.StatusCode.UNAVAILABLE


class StoreUnavailable(TurnoutError):
    status = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TurnoutError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class BackendError(TurnoutError):
    status = grpc.StatusCode.UNAVAILABLE
    retryable = True
    kind = "error"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendUnreachable(BackendError):
    kind = "connect"


class BackendTimeout(BackendError):
    kind = "timeout"


class BackendRateLimited(BackendError):
    kind = "rate_limited"


class BackendServerError(BackendError):
    kind = "server_error"


class BackendBusy(BackendServerError):
    """A 503: the server is full or still loading. A burst of these from a
    saturated local tier must not eject it (SPEC §4b)."""


class BackendModelMissing(BackendError):
    kind = "model_missing"


class BackendAuthFailed(BackendError):
    kind = "auth"


class BackendProtocolError(BackendError):
    kind = "protocol"


class BackendRejected(BackendError):
    """The upstream refused the request itself (HTTP 4xx): retrying elsewhere
    would fail the same way, and the backend is not at fault. 400/422 become
    INVALID_ARGUMENT, 403 (moderation, region, plan) PERMISSION_DENIED; other
    4xx, and a 400 saying the model does not support a capability the
    request needs (`unsupported`: Ollama's "does not support tools"),
    FAILED_PRECONDITION."""

    retryable = False
    kind = "rejected"

    def __init__(self, message: str, http_status: int, unsupported: bool = False) -> None:
        super().__init__(message)
        self.http_status = http_status
        if http_status == 403:
            self.status = grpc.StatusCode.PERMISSION_DENIED
        elif http_status in (400, 422) and not unsupported:
            self.status = grpc.StatusCode.INVALID_ARGUMENT
        else:
            self.status = grpc.StatusCode.FAILED_PRECONDITION
