"""Validation of the generation controls (response_format, tool_choice,
reasoning, backend_options) and of JSON object text fields. Pure functions:
every problem raises InvalidRequest naming the field as a caller writes it."""

from __future__ import annotations

import re

from gateway.domain import Controls, OutputKind, Reasoning, ResponseFormat, Tool, ToolChoice, ToolChoiceMode
from gateway.errors import InvalidRequest
from gateway.services.json_text import json_object
from turnout.v1 import generate_pb2

_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KINDS = {
    generate_pb2.RESPONSE_FORMAT_TYPE_TEXT: OutputKind.TEXT,
    generate_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: OutputKind.JSON_OBJECT,
    generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: OutputKind.JSON_SCHEMA,
}
_MODES = {
    generate_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    generate_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    generate_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
_REASONING = {
    generate_pb2.REASONING_OFF: Reasoning.OFF,
    generate_pb2.REASONING_ON: Reasoning.ON,
    generate_pb2.REASONING_LOW: Reasoning.LOW,
    generate_pb2.REASONING_MEDIUM: Reasoning.MEDIUM,
    generate_pb2.REASONING_HIGH: Reasoning.HIGH,
}


def backend_options(text: str, field: str = "backend_options") -> dict[str, object]:
    """The request's extra backend parameters; "" means none."""
    return json_object(text, field) if text else {}


def to_controls(request: generate_pb2.GenerateRequest, tools: tuple[Tool, ...]) -> Controls:
    return Controls(
        response_format=_response_format(request.response_format) if request.HasField("response_format") else None,
        tool_choice=_tool_choice(request.tool_choice, tools) if request.HasField("tool_choice") else None,
        reasoning=_reasoning(request.reasoning),
        backend_options=backend_options(request.backend_options),
    )


def _response_format(f: generate_pb2.ResponseFormat) -> ResponseFormat:
    kind = _KINDS.get(f.type, OutputKind.TEXT) if f.type else OutputKind.TEXT
    if f.type and f.type not in _KINDS:
        raise InvalidRequest("response_format.type", f"unknown value {f.type}")
    if kind is not OutputKind.JSON_SCHEMA:
        if f.HasField("json_schema"):
            raise InvalidRequest("response_format.json_schema", "is only for RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        return ResponseFormat(kind)
    if not f.json_schema.schema:
        raise InvalidRequest("response_format.json_schema.schema", "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    schema = json_object(f.json_schema.schema, "response_format.json_schema.schema")
    name = f.json_schema.name
    if name and not _SCHEMA_NAME.match(name):
        raise InvalidRequest("response_format.json_schema.name", "must be 1-64 letters, digits, '_' or '-'")
    return ResponseFormat(kind, name=name, schema=schema, strict=f.json_schema.strict)


def _tool_choice(c: generate_pb2.ToolChoice, tools: tuple[Tool, ...]) -> ToolChoice:
    names = [t.name for t in tools]
    if c.WhichOneof("choice") == "tool":
        if c.tool not in names:
            raise InvalidRequest("tool_choice.tool", f"names no tool of this request (tools: {', '.join(names) or 'none'})")
        return ToolChoice(ToolChoiceMode.REQUIRED, tool=c.tool)
    mode = _MODES.get(c.mode, ToolChoiceMode.AUTO) if c.mode else ToolChoiceMode.AUTO
    if c.mode and c.mode not in _MODES:
        raise InvalidRequest("tool_choice.mode", f"unknown value {c.mode}")
    if mode is ToolChoiceMode.REQUIRED and not tools:
        raise InvalidRequest("tool_choice.mode", "TOOL_CHOICE_MODE_REQUIRED needs at least one tool in `tools`")
    return ToolChoice(mode)


def _reasoning(value: int) -> Reasoning | None:
    if value and value not in _REASONING:
        raise InvalidRequest("reasoning", f"unknown value {value}")
    return _REASONING.get(value)
