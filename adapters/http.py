"""The one place upstream HTTP clients are built, and where transport errors
and HTTP error statuses become BackendErrors.

The adapters speak httpx's API. Under it, `build_client` puts aiohttp's
connection pool (the httpx-aiohttp transport, as the official openai client
does): measured against nginx with 64 concurrent streams it moved turnout
from ~540 to ~N streams/s (bench/results.json). Tests pass their own transport
(httpx.MockTransport) in its place.

httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout,
a refused connection and a server hanging up mid-body included, so
`translate_transport_errors` classifies by the aiohttp exception underneath.

With `trace_context`, every request carries the W3C `traceparent` (and
`tracestate`) of the span current when it is sent (gateway/tracing.py makes
the attempt's span current then), so a traced model server joins the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.streams import StreamDecodeError, coalesce, decode_errors, json_object
from adapters.turns import bulk_turn
from gateway.domain import StreamEvent
from gateway.errors import (
    BackendAuthFailed,
    BackendBusy,
    BackendError,
    BackendModelMissing,
    BackendProtocolError,
    BackendRateLimited,
    BackendRejected,
    BackendServerError,
    BackendTimeout,
    BackendUnreachable,
    InvalidRequest,
)


JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts in seconds and pool sizes for one backend's client. A stream
    holds its connection for its whole life, so `max_connections` is the most
    concurrent streams to that backend; beyond it, requests wait for a slot."""

    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    max_connections: int = 4096
    max_keepalive_connections: int = 256
    keepalive_expiry: float = 30.0


_W3C = TraceContextTextMapPropagator()


async def send_trace_context(request: httpx.Request) -> None:
    """An httpx request hook: the current span's W3C trace context, if any."""
    _W3C.inject(request.headers)


def build_client(
    base_url: str,
    settings: HttpSettings,
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    trace_context: bool = False,
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry,
    )
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    if transport is None:
        transport = AiohttpTransport(limits=limits)
    url = httpx.URL(base_url)
    auth = (url.username, url.password) if url.username or url.password else None
    return httpx.AsyncClient(
        base_url=url.copy_with(username=None, password=None),
        auth=auth,
        headers=headers,
        timeout=timeout,
        limits=limits,
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        event_hooks={"request": [send_trace_context]} if trace_context else None,
    )


@contextlib.contextmanager
def translate_transport_errors(backend: str) -> Iterator[None]:
    """Turns httpx transport exceptions into BackendErrors, naming the backend
    but never the URL (which may carry credentials)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise _backend_error(backend, exc) from exc


def _backend_error(backend: str, exc: httpx.HTTPError) -> BackendError:
    """Names the backend, never the URL (which may carry credentials)."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError) or isinstance(exc, httpx.ConnectError):
        return BackendUnreachable(f"backend {backend!r} is unreachable (connection failed)")
    if isinstance(cause, (aiohttp.ServerTimeoutError, aiohttp.SocketTimeoutError)):
        return BackendTimeout(f"backend {backend!r} timed out ({type(cause).__name__})")
    if isinstance(cause, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)) or isinstance(
        exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
    ):
        return BackendProtocolError(f"backend {backend!r} broke the connection ({type(cause or exc).__name__})")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"backend {backend!r} timed out ({type(exc).__name__})")
    return BackendUnreachable(f"backend {backend!r} failed: {type(exc).__name__}")


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP
    date), the order openai-python uses; None when absent or unparsable."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - (time.time() if now is None else now))


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration string (`20ms`, `1s`, `6m0s`, `1h2m3.5s`); None when it is not one."""
    text = text.strip()
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _GO_UNIT_SECONDS[unit] for number, unit in parts)


def parse_ratelimit_reset(headers: httpx.Headers) -> float | None:
    """Seconds until the exhausted rate limit resets, from OpenAI's
    `x-ratelimit-reset-requests` / `-tokens` (Go durations such as `6m0s`).
    The limits whose `x-ratelimit-remaining-*` is 0 decide; when none says
    so, the later reset does, since waiting less would hit the limit again."""
    resets = {}
    for limit in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-reset-{limit}")
        seconds = parse_go_duration(value) if value is not None else None
        if seconds is not None:
            resets[limit] = seconds
    exhausted = [seconds for limit, seconds in resets.items() if headers.get(f"x-ratelimit-remaining-{limit}") == "0"]
    return max(exhausted or resets.values(), default=None)


def error_for_status(
    backend: str, status: int, upstream_message: str, headers: httpx.Headers
) -> BackendError:
    """Maps an upstream HTTP error status (before any stream data) to the
    BackendError that decides retry and the caller's gRPC status. 403 is a
    refusal of this request (OpenRouter's moderation, OpenAI's unsupported
    region), not broken credentials: it is not retried and does not eject
    the backend. A 400 saying the model "does not support" something
    (Ollama's capability check) is a precondition, not a malformed request."""
    detail = f"backend {backend!r} answered HTTP {status}: {upstream_message}"
    if status == 429:
        retry_after = parse_retry_after(headers)
        return BackendRateLimited(detail, retry_after=parse_ratelimit_reset(headers) if retry_after is None else retry_after)
    if status == 503:
        return BackendBusy(detail, retry_after=parse_retry_after(headers))
    if status >= 500:
        return BackendServerError(detail, retry_after=parse_retry_after(headers))
    if status == 404:
        return BackendModelMissing(detail)
    if status == 401:
        return BackendAuthFailed(detail)
    if status in (408, 409):
        return BackendServerError(detail)
    return BackendRejected(detail, http_status=status, unsupported="does not support" in upstream_message)


ERROR_TEXT_LIMIT = 300
DECODE_SLICE = 64 << 10
BULK_READ = 4 << 10  # a read this large means the upstream is ahead of the caller (a token's event is < 1 KiB)
DRAIN_TIMEOUT = 1.0


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Reads what is left of a body whose last event has arrived (typically
    just the chunked-encoding terminator), so the connection can return to the
    pool. Gives up after DRAIN_TIMEOUT; closing the response then closes the
    connection instead."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for _ in chunks:
                pass


def error_text(body: bytes) -> str:
    """The upstream's own error message: Ollama's `{"error": "..."}`, OpenAI's
    `{"error": {"message": "..."}}`, older vLLM's flat `{"object": "error",
    "message": "..."}`, else the start of the raw body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if error:
        return error_message(error)
    if isinstance(parsed, dict) and parsed.get("object") == "error":
        return error_message(parsed)
    return body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]


def error_message(error: object) -> str:
    """The text of an `error` value: a string (Ollama) or {"message": ...} (OpenAI)."""
    if isinstance(error, dict) and "message" in error:
        error = error["message"]
    return str(error)[:ERROR_TEXT_LIMIT]


async def raise_for_status(backend: str, response: httpx.Response) -> None:
    """Raises the BackendError for a non-2xx response, reading its body."""
    if response.is_success:
        return
    body = await response.aread()
    raise error_for_status(backend, response.status_code, error_text(body), response.headers)


def json_body(payload: dict) -> bytes:
    """The upstream request body. The gateway validates requests so that this
    always succeeds; should a payload still be unencodable (a lone surrogate,
    NaN, nesting past the encoder's recursion limit), that came from the
    caller's request: INVALID_ARGUMENT, not INTERNAL."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("request", f"cannot be sent upstream as JSON ({str(exc)[:120]})") from None


async def stream_events(
    client: httpx.AsyncClient,
    backend: str,
    path: str,
    payload: dict,
    decode: Callable[[bytes], list[StreamEvent]],
    finished: Callable[[], bool],
    terminator: str,
    end: Callable[[], list[StreamEvent]] = list,
) -> AsyncIterator[StreamEvent]:
    """POSTs `payload` and yields the events `decode` makes of each network
    read (at most DECODE_SLICE bytes at a time), consecutive deltas of one
    slice coalesced into one. After each slice it yields to the event loop
    (after a large read, through `bulk_turn`), so an upstream that floods
    cannot keep other streams or calls from running; and it
    reads the upstream only when the caller took the previous events, so
    what a slow caller has not taken yet waits in the socket (aiohttp stops
    reading it past its buffer limit) rather than in memory. Once `finished()`
    the rest of the body is drained so the connection can be reused. When the
    body ends first, `end()` gives the decoder's last events; unless that
    finished the stream, it is a BackendProtocolError naming `terminator`.
    Closing the iterator closes the upstream response at once."""
    with translate_transport_errors(backend), decode_errors(backend):
        body = json_body(payload)
        async with client.stream("POST", path, content=body, headers=JSON_HEADERS) as response:
            await raise_for_status(backend, response)
            chunks = response.aiter_bytes()
            async for data in chunks:
                for start in range(0, len(data), DECODE_SLICE):
                    events = coalesce(decode(data[start : start + DECODE_SLICE]))
                    if finished():
                        await drain(chunks)
                    for event in events:
                        yield event
                    if finished():
                        return
                    await (bulk_turn() if len(data) >= BULK_READ else asyncio.sleep(0))
            for event in end():
                yield event
            if finished():
                return
    raise BackendProtocolError(f"backend {backend!r} ended the stream before {terminator}")


async def get_json(client: httpx.AsyncClient, backend: str, path: str) -> dict:
    """GETs `path` and returns its JSON object; raises only BackendError."""
    return await _json_call(client, backend, "GET", path)


async def post_json(client: httpx.AsyncClient, backend: str, path: str, payload: dict) -> dict:
    """POSTs `payload` to `path` and returns the JSON object answered; raises
    only BackendError. Cancelling the caller closes the request at once."""
    return await _json_call(client, backend, "POST", path, payload)


async def _json_call(
    client: httpx.AsyncClient, backend: str, method: str, path: str, payload: dict | None = None
) -> dict:
    with translate_transport_errors(backend), decode_errors(backend):
        response = await client.request(method, path, json=payload)
        await raise_for_status(backend, response)
        try:
            body = response.json()
        except ValueError as exc:
            raise StreamDecodeError(f"{path} answered with invalid JSON") from exc
        return json_object(body)
