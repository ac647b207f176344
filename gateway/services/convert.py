"""Proto <-> domain translation, with request validation. Pure functions:
every problem raises InvalidRequest naming the offending field the way a
caller would write it (`messages[2].role`, `tools[0].parameters`)."""

from __future__ import annotations

import re
from typing import Mapping

from google.protobuf.duration_pb2 import Duration

from gateway.config import LimitsConfig
from gateway.dispatch import Completed, Generation, Started
from gateway.domain import Delta, FinishReason, Message, Options, Role, Timings, Tool, ToolCall, Usage
from gateway.errors import InvalidRequest
from gateway.services.controls import to_controls
from gateway.services.json_text import json_object
from turnout.v1 import common_pb2, generate_pb2

ROLES = {
    common_pb2.ROLE_SYSTEM: Role.SYSTEM,
    common_pb2.ROLE_USER: Role.USER,
    common_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    common_pb2.ROLE_TOOL: Role.TOOL,
}
TO_PB_ROLE = {role: pb for pb, role in ROLES.items()}
_FINISH = {
    FinishReason.STOP: generate_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: generate_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: generate_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: generate_pb2.FINISH_REASON_CONTENT_FILTER,
}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4


def to_generation(request: generate_pb2.GenerateRequest, limits: LimitsConfig, request_id: str) -> Generation:
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidRequest("request", f"is {size} bytes; the limit is {limits.max_request_bytes}")
    if not request.messages:
        raise InvalidRequest("messages", "at least one message is required")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequest("messages", f"has {len(request.messages)} messages; the limit is {limits.max_messages}")
    if len(request.tools) > limits.max_tools:
        raise InvalidRequest("tools", f"has {len(request.tools)} tools; the limit is {limits.max_tools}")
    metadata(request.metadata, "metadata", limits)
    tools = _tools(request.tools)
    return Generation(
        request_id=request_id,
        model=request.model.strip(),
        messages=tuple(_message(m, f"messages[{i}]", limits) for i, m in enumerate(request.messages)),
        tools=tools,
        options=_options(request.options) if request.HasField("options") else Options(),
        task=request.task,
        session_id=request.session_id,
        controls=to_controls(request, tools),
    )


def metadata(values: Mapping[str, str], field: str, limits: LimitsConfig) -> dict[str, str]:
    if len(values) > limits.max_metadata_entries:
        raise InvalidRequest(field, f"has {len(values)} entries; the limit is {limits.max_metadata_entries}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > limits.max_metadata_bytes:
        raise InvalidRequest(field, f"is {size} bytes; the limit is {limits.max_metadata_bytes}")
    return dict(values)


def _message(m: generate_pb2.Message, field: str, limits: LimitsConfig) -> Message:
    role = ROLES.get(m.role)
    if role is None:
        raise InvalidRequest(f"{field}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
    size = len(m.content.encode()) + len(m.reasoning.encode()) + sum(len(image) for image in m.images)
    if size > limits.max_message_bytes:
        raise InvalidRequest(field, f"is {size} bytes with its images; the limit is {limits.max_message_bytes}")
    if m.images and role is not Role.USER:
        raise InvalidRequest(f"{field}.images", "only user messages may carry images")
    if m.tool_calls and role is not Role.ASSISTANT:
        raise InvalidRequest(f"{field}.tool_calls", "only assistant messages may carry tool calls")
    if m.reasoning and role is not Role.ASSISTANT:
        raise InvalidRequest(f"{field}.reasoning", "only assistant messages may carry reasoning")
    calls = []
    for j, call in enumerate(m.tool_calls):
        if not call.name:
            raise InvalidRequest(f"{field}.tool_calls[{j}].name", "is required")
        arguments = json_object_text(call.arguments, f"{field}.tool_calls[{j}].arguments")
        calls.append(ToolCall(id=call.id, name=call.name, arguments=arguments))
    return Message(
        role=role,
        content=m.content,
        images=tuple(m.images),
        tool_calls=tuple(calls),
        tool_call_id=m.tool_call_id,
        tool_name=m.tool_name,
        reasoning=m.reasoning,
    )


def json_object_text(text: str, field: str) -> str:
    """Tool-call arguments: JSON object text, "" meaning {}."""
    json_object(text or "{}", field)
    return text or "{}"


def _tools(tools: list[generate_pb2.Tool]) -> tuple[Tool, ...]:
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        if not _TOOL_NAME.match(tool.name):
            raise InvalidRequest(f"tools[{i}].name", "must be 1-64 letters, digits, '_' or '-'")
        if tool.name in seen:
            raise InvalidRequest(f"tools[{i}].name", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        parameters = json_object(tool.parameters, f"tools[{i}].parameters") if tool.parameters else {}
        out.append(Tool(name=tool.name, description=tool.description, parameters=parameters))
    return tuple(out)


def _options(o: generate_pb2.GenerationOptions) -> Options:
    if o.HasField("temperature") and not 0.0 <= o.temperature <= 2.0:
        raise InvalidRequest("options.temperature", f"must be between 0 and 2, got {o.temperature:g}")
    if o.HasField("top_p") and not 0.0 < o.top_p <= 1.0:
        raise InvalidRequest("options.top_p", f"must be greater than 0 and at most 1, got {o.top_p:g}")
    if o.HasField("max_tokens") and o.max_tokens < 1:
        raise InvalidRequest("options.max_tokens", "must be at least 1")
    if len(o.stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest("options.stop", f"has {len(o.stop)} sequences; the limit is {MAX_STOP_SEQUENCES}")
    for i, stop in enumerate(o.stop):
        if not stop:
            raise InvalidRequest(f"options.stop[{i}]", "must not be empty")
    return Options(
        temperature=o.temperature if o.HasField("temperature") else None,
        top_p=o.top_p if o.HasField("top_p") else None,
        max_tokens=o.max_tokens if o.HasField("max_tokens") else None,
        stop=tuple(o.stop),
        seed=o.seed if o.HasField("seed") else None,
    )


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def started_pb(e: Started) -> generate_pb2.GenerateStarted:
    return generate_pb2.GenerateStarted(
        request_id=e.request_id, session_id=e.session_id, route=e.route,
        backend=e.backend, model=e.model, attempt=e.attempt,
    )


def tool_calls_pb(calls: tuple[ToolCall, ...]) -> list[common_pb2.ToolCall]:
    return [common_pb2.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def delta_pb(e: Delta) -> generate_pb2.GenerateDelta:
    return generate_pb2.GenerateDelta(content=e.content, reasoning=e.reasoning, tool_calls=tool_calls_pb(e.tool_calls))


def completed_pb(e: Completed) -> generate_pb2.GenerateCompleted:
    done = generate_pb2.GenerateCompleted(
        finish_reason=_FINISH[e.reason],
        time_to_first_token=duration(e.time_to_first_token),
        total_time=duration(e.total_time),
    )
    if e.usage is not None:
        done.usage.CopyFrom(_usage_pb(e.usage))
    if e.timings is not None:
        done.backend_timings.CopyFrom(_timings_pb(e.timings))
    return done


def _usage_pb(u: Usage) -> generate_pb2.Usage:
    usage = generate_pb2.Usage()
    for name in ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens"):
        if getattr(u, name) is not None:
            setattr(usage, name, getattr(u, name))
    return usage


def _timings_pb(t: Timings) -> generate_pb2.BackendTimings:
    timings = generate_pb2.BackendTimings()
    for name in ("load", "prompt_eval", "generation", "total"):
        if getattr(t, name) is not None:
            getattr(timings, name).CopyFrom(duration(getattr(t, name)))
    return timings


def response_pb(event: Started | Delta | Completed) -> generate_pb2.GenerateResponse:
    if isinstance(event, Started):
        return generate_pb2.GenerateResponse(started=started_pb(event))
    if isinstance(event, Delta):
        return generate_pb2.GenerateResponse(delta=delta_pb(event))
    return generate_pb2.GenerateResponse(completed=completed_pb(event))
