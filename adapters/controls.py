"""The generation controls (response format, tool choice, reasoning, backend
options) as each protocol spells them. Pure: each function completes a chat
request body that the adapter already built from messages, tools and sampling
options, never overriding a field the gateway set itself."""

from __future__ import annotations

from typing import Mapping

from gateway.domain import ChatRequest, OutputKind, Reasoning, ResponseFormat, ToolChoiceMode
from gateway.errors import BackendRejected

OLLAMA_TOP_LEVEL = ("keep_alive",)
"""backend_options keys that go to the top of an Ollama request, not into `options`."""

_OLLAMA_THINK: dict[Reasoning, object] = {
    Reasoning.OFF: False, Reasoning.ON: True,
    Reasoning.LOW: "low", Reasoning.MEDIUM: "medium", Reasoning.HIGH: "high",
}
_OPENAI_EFFORT = {
    Reasoning.OFF: "none", Reasoning.ON: "medium",
    Reasoning.LOW: "low", Reasoning.MEDIUM: "medium", Reasoning.HIGH: "high",
}


def ollama_controls(payload: dict[str, object], request: ChatRequest) -> dict[str, object]:
    """Ollama has no tool_choice: none sends no tools, a named tool sends only
    that tool, and required cannot be honoured (BackendRejected as
    FAILED_PRECONDITION, before anything is sent)."""
    controls = request.controls
    choice = controls.tool_choice
    if choice is not None and "tools" in payload:
        if choice.tool:
            payload["tools"] = [t for t in payload["tools"] if t["function"]["name"] == choice.tool]
        elif choice.mode is ToolChoiceMode.NONE:
            del payload["tools"]
        elif choice.mode is ToolChoiceMode.REQUIRED:
            raise BackendRejected(
                "tool_choice: Ollama cannot force a tool call (mode required); name the tool in "
                "tool_choice.tool, or use a route to an OpenAI-compatible backend",
                http_status=412,
            )
    fmt = controls.response_format
    if fmt is not None and fmt.kind is OutputKind.JSON_OBJECT:
        payload["format"] = "json"
    elif fmt is not None and fmt.kind is OutputKind.JSON_SCHEMA:
        payload["format"] = dict(fmt.schema)
    if controls.reasoning is not None:
        payload["think"] = _OLLAMA_THINK[controls.reasoning]
    return ollama_options(payload, controls.backend_options)


def ollama_options(payload: dict[str, object], backend_options: Mapping[str, object]) -> dict[str, object]:
    """`keep_alive` to the top level, every other key under `options`; the
    sampling options the gateway already put there win."""
    extra = dict(backend_options)
    for key in OLLAMA_TOP_LEVEL:
        if key in extra:
            payload.setdefault(key, extra.pop(key))
    sampling = payload.get("options")
    if extra:
        payload["options"] = {**extra, **(sampling if isinstance(sampling, dict) else {})}
    return payload


def openai_controls(payload: dict[str, object], request: ChatRequest) -> dict[str, object]:
    controls = request.controls
    choice = controls.tool_choice
    if choice is not None and "tools" in payload:
        payload["tool_choice"] = (
            {"type": "function", "function": {"name": choice.tool}} if choice.tool else choice.mode.value
        )
    if controls.response_format is not None:
        payload["response_format"] = _openai_format(controls.response_format)
    if controls.reasoning is not None:
        payload["reasoning_effort"] = _OPENAI_EFFORT[controls.reasoning]
    return {**controls.backend_options, **payload}


def _openai_format(fmt: ResponseFormat) -> dict[str, object]:
    if fmt.kind is not OutputKind.JSON_SCHEMA:
        return {"type": fmt.kind.value}
    schema = {"name": fmt.name or "response", "schema": dict(fmt.schema), "strict": fmt.strict}
    return {"type": "json_schema", "json_schema": schema}
