"""The OpenAI Chat Completions adapter: `chat/completions` streamed as SSE and
`models`, both relative to a base URL ending in `/v1`.

`build_chat_payload` and `OpenAIChatDecoder` are pure; `OpenAIAdapter` is the
only part that does I/O. Wire facts: PROTOCOLS.md section B. Error messages
are built from status codes and upstream error text only, never from the
client's URL or headers (the Authorization header holds a secret).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import AsyncIterator

import httpx

from adapters.controls import openai_controls
from adapters.embeddings import openai_embed_payload, openai_embeddings
from adapters.http import error_message, get_json, post_json, stream_events
from adapters.payload import function_tools, sampling
from adapters.streams import (
    SSEDecoder,
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
    Role,
    StreamEvent,
    Timings,
    ToolCall,
    Usage,
)
from gateway.errors import BackendProtocolError, BackendServerError, Unsupported

_ERROR_TEXT_LIMIT = 300
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def image_mime(image: bytes) -> str:
    """The MIME type named by an image's magic bytes."""
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _IMAGE_MAGIC:
        if image.startswith(magic):
            return mime
    return "application/octet-stream"


def _content(message: Message) -> object:
    if not message.images:
        return message.content
    parts: list[dict[str, object]] = []
    if message.content:
        parts.append({"type": "text", "text": message.content})
    for image in message.images:
        url = f"data:{image_mime(image)};base64,{base64.b64encode(image).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one OpenAI-compatible server reads (the backend's config keys of
    the same names): the field of the token limit, and whether assistant
    messages may carry `reasoning_content` (llama.cpp's common/chat.cpp and
    vLLM read it; OpenAI rejects unknown message fields, DeepSeek rejects it)."""

    max_tokens_field: str = "max_completion_tokens"
    send_reasoning: bool = False


def _message(message: Message, dialect: Dialect) -> dict[str, object]:
    out: dict[str, object] = {"role": message.role.value, "content": _content(message)}
    if message.reasoning and dialect.send_reasoning:
        out["reasoning_content"] = message.reasoning
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.role is Role.TOOL:
        out["tool_call_id"] = message.tool_call_id
    return out


def build_chat_payload(request: ChatRequest, dialect: Dialect = Dialect()) -> dict[str, object]:
    """The `chat/completions` request body for a streamed chat with usage,
    in the backend's `dialect`."""
    payload: dict[str, object] = {
        "model": request.model,
        "messages": [_message(message, dialect) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        payload["tools"] = function_tools(request.tools)
    payload.update(sampling(request.options, dialect.max_tokens_field))
    return openai_controls(payload, request)


class ToolCallAssembler:
    """Joins streamed tool-call fragments into whole calls, in the order they
    started. A fragment with an `id` not seen before starts a new call, even
    when it reuses an `index` (unless the call at that index has no id yet);
    one with a known `id` continues that call; one with only an `index`
    continues the call at that index; one with neither continues the last
    call (or starts one when it names a function and the last call already
    has a name). The legacy `delta.function_call` arrives as such fragments."""

    def __init__(self) -> None:
        self._calls: list[dict[str, str]] = []
        self._by_id: dict[str, dict[str, str]] = {}
        self._by_index: dict[object, dict[str, str]] = {}

    def add(self, fragment: object) -> None:
        if not isinstance(fragment, dict) or not isinstance(fragment.get("function") or {}, dict):
            raise StreamDecodeError("a tool call fragment is not a JSON object")
        function = fragment.get("function") or {}
        call = self._call_for(fragment.get("id") or "", fragment.get("index"), function.get("name") or "")
        call["name"] = function.get("name") or call["name"]
        call["args"] += function.get("arguments") or ""

    def _call_for(self, call_id: str, index: object, name: str) -> dict[str, str]:
        if call_id in self._by_id:
            return self._by_id[call_id]
        call = self._by_index.get(index) if index is not None else None
        if call is None and index is None and self._calls:
            last = self._calls[-1]
            call = last if not call_id and not (name and last["name"]) else None
        if call is None or (call_id and call["id"]):
            call = {"id": "", "name": "", "args": ""}
            self._calls.append(call)
        if call_id:
            call["id"] = call_id
            self._by_id[call_id] = call
        if index is not None:
            self._by_index[index] = call
        return call

    def flush(self) -> list[StreamEvent]:
        """One Delta of the whole calls gathered so far (none when there are none)."""
        calls = tuple(
            ToolCall(id=call["id"] or new_tool_call_id(), name=call["name"], arguments=call["args"])
            for call in self._calls
        )
        self._calls, self._by_id, self._by_index = [], {}, {}
        return [Delta(tool_calls=calls)] if calls else []


class OpenAIChatDecoder:
    """Maps SSE data payloads of a streamed chat completion to events.

    Tool-call fragments are gathered by ToolCallAssembler and emitted as one
    Delta of whole calls when a finish_reason arrives. Only the documented
    finish reasons mean success; any other (vLLM's `abort`, forks' `error`)
    is a broken stream. `[DONE]` without any finish_reason is a protocol
    error: servers send it that way when they cut a generation off (llama.cpp
    when a new request interrupts one), and an answer that may be incomplete
    must not be reported, or stored, as finished. A body that ends after a
    finish_reason and the usage we asked for, without `[DONE]`
    (ik_llama.cpp's default), is complete: see `end`. `delta.refusal` is
    delivered as content (README, "Protocol fidelity").
    """

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._calls = ToolCallAssembler()
        self._reason: FinishReason | None = None
        self._usage: Usage | None = None
        self._timings: Timings | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, event_data: str) -> list[StreamEvent]:
        if event_data.startswith("[DONE]"):
            if self._reason is None:
                raise BackendProtocolError(
                    f"backend {self._backend!r} ended the stream with [DONE] but no finish_reason: "
                    "the answer may be cut off"
                )
            return self._finish()
        try:
            chunk = json.loads(event_data)
        except ValueError as exc:
            raise StreamDecodeError(f"not a JSON event: {event_data[:80]!r}") from exc
        if not isinstance(chunk, dict):
            raise StreamDecodeError("an event is not a JSON object")
        if chunk.get("error") or chunk.get("object") == "error":
            raise BackendServerError(
                f"backend {self._backend!r} failed mid-stream: {error_message(chunk.get('error') or chunk)}"
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            self._timings = Timings(
                prompt_eval=seconds(timings.get("prompt_ms"), 1e-3), generation=seconds(timings.get("predicted_ms"), 1e-3)
            )
        choices = chunk.get("choices") or []
        return self._choice(choices[0]) if choices else []

    def end(self) -> list[StreamEvent]:
        """The body ended without `[DONE]`: complete when a finish_reason and
        the usage arrived (the last things a server sends), else nothing."""
        if self._finished or self._reason is None or self._usage is None:
            return []
        return self._finish()

    def _finish(self) -> list[StreamEvent]:
        self._finished = True
        return [*self._calls.flush(), Finish(self._reason, self._usage, self._timings)]

    def _choice(self, choice: object) -> list[StreamEvent]:
        if not isinstance(choice, dict):
            raise StreamDecodeError("a choice is not a JSON object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise StreamDecodeError("a delta is not a JSON object")
        for fragment in delta.get("tool_calls") or ():
            self._calls.add(fragment)
        if delta.get("function_call"):
            self._calls.add({"function": delta["function_call"]})
        events: list[StreamEvent] = []
        text = Delta(
            content=(delta.get("content") or "") + (delta.get("refusal") or ""),
            reasoning=delta.get("reasoning") or delta.get("reasoning_content") or "",
        )
        if text != Delta():
            events.append(text)
        reason = choice.get("finish_reason")
        if reason is not None:
            if reason not in _FINISH_REASONS:
                raise BackendProtocolError(
                    f"backend {self._backend!r} ended the generation with finish_reason {str(reason)[:40]!r}: "
                    "the answer is incomplete"
                )
            self._reason = _FINISH_REASONS[reason]
            events.extend(self._calls.flush())
        return events


def _usage(usage: dict) -> Usage:
    """OpenAI's usage object, with the cached-prompt and reasoning counts from
    its `*_tokens_details` (llama.cpp and vLLM send `prompt_tokens_details` too)."""
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return Usage(
        count(usage.get("prompt_tokens")),
        count(usage.get("completion_tokens")),
        cached_prompt_tokens=count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None,
        reasoning_tokens=(
            count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else None
        ),
    )


class OpenAIAdapter:
    """One OpenAI-compatible server, reached through `client` (base_url ends in /v1)."""

    kind = BackendKind.OPENAI

    def __init__(self, name: str, client: httpx.AsyncClient, dialect: Dialect = Dialect()) -> None:
        self.name = name
        self._client = client
        self._dialect = dialect

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        events, chat = SSEDecoder(), OpenAIChatDecoder(self.name)
        return stream_events(
            self._client, self.name, "chat/completions", build_chat_payload(request, self._dialect),
            decode=lambda data: [item for event in events.feed(data) for item in chat.feed(event.data)],
            finished=lambda: chat.finished, terminator="[DONE]", end=chat.end,
        )

    async def embed(self, request: EmbedRequest) -> Embeddings:
        body = await post_json(self._client, self.name, "embeddings", openai_embed_payload(request))
        with decode_errors(self.name):
            return openai_embeddings(body, len(request.inputs))

    async def list_models(self) -> list[ModelInfo]:
        body = await get_json(self._client, self.name, "models")
        with decode_errors(self.name):
            models = [json_object(model) for model in body.get("data") or ()]
        return [ModelInfo(name=str(model.get("id", ""))) for model in models]

    async def probe(self) -> None:
        await get_json(self._client, self.name, "models")

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        raise Unsupported(f"backend {self.name!r} speaks the OpenAI API, which cannot pull models")
        yield  # makes this an async generator, so the error surfaces on first iteration

    async def delete(self, model: str) -> None:
        raise Unsupported(
            f"backend {self.name!r} speaks the OpenAI API, which cannot delete models"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


