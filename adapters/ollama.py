"""The native Ollama adapter: `/api/chat` streamed as NDJSON, plus the model
management endpoints (`/api/tags`, `/api/pull`, `/api/delete`, `/api/version`).

`build_chat_payload` and `OllamaChatDecoder` are pure; `OllamaAdapter` is the
only part that does I/O. Wire facts: PROTOCOLS.md section A.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import AsyncIterator

import httpx

from adapters.controls import ollama_controls
from adapters.embeddings import ollama_embed_payload, ollama_embeddings
from adapters.http import get_json, post_json, raise_for_status, stream_events, translate_transport_errors
from adapters.payload import function_tools, sampling
from adapters.streams import (
    NDJSONDecoder,
    StreamDecodeError,
    count,
    decode_errors,
    json_object,
    new_tool_call_id,
    seconds,
)
from gateway.domain import (
    BackendKind,
    ChatRequest,
    Delta,
    EmbedRequest,
    Embeddings,
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    PullProgress,
    StreamEvent,
    Timings,
    ToolCall,
    Usage,
)
from gateway.errors import BackendProtocolError, BackendRejected, BackendServerError


def _tool_arguments(call: ToolCall) -> object:
    """Ollama wants arguments as a JSON object, not the text we keep."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise BackendRejected(
            f"tool call {call.id!r}: arguments must be a JSON object", http_status=400
        )
    return arguments


def _message(message: Message, tool_names: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {"role": message.role.value, "content": message.content}
    if message.images:
        out["images"] = [base64.b64encode(image).decode("ascii") for image in message.images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "function": {"name": call.name, "arguments": _tool_arguments(call)}}
            for call in message.tool_calls
        ]
    tool_name = message.tool_name or tool_names.get(message.tool_call_id, "")
    if tool_name:
        out["tool_name"] = tool_name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning:
        out["thinking"] = message.reasoning
    return out


def build_chat_payload(request: ChatRequest) -> dict[str, object]:
    """The `/api/chat` request body for a streamed chat. Ollama's templates
    name a tool result by `tool_name`; a TOOL message without one takes it
    from the assistant tool call its `tool_call_id` answers."""
    tool_names = {call.id: call.name for message in request.messages for call in message.tool_calls}
    payload: dict[str, object] = {
        "model": request.model,
        "messages": [_message(message, tool_names) for message in request.messages],
        "stream": True,
    }
    if request.tools:
        payload["tools"] = function_tools(request.tools)
    options = sampling(request.options, "num_predict")
    if options:
        payload["options"] = options
    return ollama_controls(payload, request)


def _tool_call(raw: object) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise StreamDecodeError("tool call without a function object")
    function = raw["function"]
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    return ToolCall(
        id=str(raw.get("id") or new_tool_call_id()),
        name=str(function.get("name", "")),
        arguments=arguments,
    )


class OllamaChatDecoder:
    """Maps parsed `/api/chat` chunks to Delta events and one final Finish."""

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._saw_tool_calls = False
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, obj: object) -> list[StreamEvent]:
        if not isinstance(obj, dict):
            raise StreamDecodeError("a chat line is not a JSON object")
        if "error" in obj:
            raise BackendServerError(
                f"backend {self._backend!r} failed mid-stream: {obj['error']}"
            )
        message = obj.get("message") or {}
        if not isinstance(message, dict):
            raise StreamDecodeError("`message` is not a JSON object")
        tool_calls = tuple(_tool_call(raw) for raw in message.get("tool_calls") or ())
        self._saw_tool_calls = self._saw_tool_calls or bool(tool_calls)
        delta = Delta(
            content=message.get("content") or "",
            reasoning=message.get("thinking") or "",
            tool_calls=tool_calls,
        )
        events: list[StreamEvent] = [] if delta == Delta() else [delta]
        if obj.get("done"):
            self._finished = True
            events.append(Finish(self._reason(obj.get("done_reason")), _usage(obj), _timings(obj)))
        return events

    def _reason(self, done_reason: object) -> FinishReason:
        if done_reason in ("load", "unload"):
            raise BackendProtocolError(
                f"backend {self._backend!r} answered with a model {done_reason} instead of a generation"
            )
        if done_reason == "length":
            return FinishReason.LENGTH
        return FinishReason.TOOL_CALLS if self._saw_tool_calls else FinishReason.STOP


def _usage(final: dict) -> Usage | None:
    prompt, completion = count(final.get("prompt_eval_count")), count(final.get("eval_count"))
    if prompt is None and completion is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _timings(final: dict) -> Timings | None:
    """The final line's durations (nanoseconds, api.Metrics), when present."""
    timings = Timings(
        load=seconds(final.get("load_duration"), 1e-9),
        prompt_eval=seconds(final.get("prompt_eval_duration"), 1e-9),
        generation=seconds(final.get("eval_duration"), 1e-9),
        total=seconds(final.get("total_duration"), 1e-9),
    )
    return None if timings == Timings() else timings


class OllamaAdapter:
    """One Ollama server, reached through `client` (its base_url is the server root)."""

    kind = BackendKind.OLLAMA

    def __init__(self, name: str, client: httpx.AsyncClient) -> None:
        self.name = name
        self._client = client

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        lines, chat = NDJSONDecoder(), OllamaChatDecoder(self.name)
        return stream_events(
            self._client, self.name, "/api/chat", build_chat_payload(request),
            decode=lambda data: [event for obj in lines.feed(data) for event in chat.feed(json_object(obj))],
            finished=lambda: chat.finished, terminator="done",
        )

    async def embed(self, request: EmbedRequest) -> Embeddings:
        body = await post_json(self._client, self.name, "/api/embed", ollama_embed_payload(request))
        with decode_errors(self.name):
            return ollama_embeddings(body, len(request.inputs))

    async def list_models(self) -> list[ModelInfo]:
        body = await get_json(self._client, self.name, "/api/tags")
        with decode_errors(self.name):
            return [_model_info(json_object(model)) for model in body.get("models") or ()]

    async def probe(self) -> None:
        await get_json(self._client, self.name, "/api/version")

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Ends with Ollama's `success` status; a stream that stops before it
        (the server died, or a proxy cut it) did not pull the model."""
        lines = self._stream_lines("/api/pull", {"model": model, "stream": True})
        status = ""
        async with contextlib.aclosing(lines):
            async for obj in lines:
                if "error" in obj:
                    raise BackendServerError(
                        f"backend {self.name!r} failed to pull {model!r}: {obj['error']}"
                    )
                status = obj.get("status") or ""
                yield PullProgress(
                    status=obj.get("status") or "",
                    digest=obj.get("digest") or "",
                    total=obj.get("total") or 0,
                    completed=obj.get("completed") or 0,
                )
        if status != "success":
            raise BackendProtocolError(f"backend {self.name!r} ended the pull of {model!r} before \"success\"")

    async def delete(self, model: str) -> None:
        with translate_transport_errors(self.name):
            response = await self._client.request("DELETE", "/api/delete", json={"model": model})
            await raise_for_status(self.name, response)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _stream_lines(self, path: str, payload: dict) -> AsyncIterator[dict]:
        """POSTs `payload` and yields each NDJSON line as a dict. Closing this
        generator closes the upstream response at once."""
        lines = NDJSONDecoder()
        with translate_transport_errors(self.name), decode_errors(self.name):
            async with self._client.stream("POST", path, json=payload) as response:
                await raise_for_status(self.name, response)
                async for data in response.aiter_bytes():
                    for obj in lines.feed(data):
                        yield json_object(obj)
                for obj in lines.flush():
                    yield json_object(obj)


def _model_info(model: dict) -> ModelInfo:
    details = model.get("details") or {}
    return ModelInfo(
        name=str(model.get("name", "")),
        size_bytes=model.get("size"),
        family=str(details.get("family") or "") if isinstance(details, dict) else "",
    )
