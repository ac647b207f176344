"""Plain value types shared by the gateway and the adapters.

Nothing here does I/O or imports other turnout modules. Protobuf messages are
translated to and from these types at the edges (gateway/services/), so the
routing, dispatch and adapter code never touches generated classes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


class OutputKind(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


class Reasoning(enum.Enum):
    OFF = "off"
    ON = "on"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class BackendKind(enum.Enum):
    OLLAMA = "ollama"
    OPENAI = "openai"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One whole tool call; `arguments` is a JSON object serialized to text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call; `parameters` is a parsed JSON Schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str = ""
    images: tuple[bytes, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    tool_name: str = ""
    reasoning: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    """Sampling options; None means "let the backend choose"."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Text, any JSON object, or JSON following `schema` (a parsed JSON Schema object)."""

    kind: OutputKind = OutputKind.TEXT
    name: str = ""
    schema: Mapping[str, object] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """A mode, or (with `tool`) the one tool the model must call."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    tool: str = ""


@dataclass(frozen=True, slots=True)
class Controls:
    """Generation controls beyond sampling; None means "not asked for", so
    nothing is sent. `backend_options` is the parsed JSON object of extra
    backend parameters, already merged over the config's defaults."""

    response_format: ResponseFormat | None = None
    tool_choice: ToolChoice | None = None
    reasoning: Reasoning | None = None
    backend_options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What an adapter sends upstream: `model` is the upstream model name."""

    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    options: Options = Options()
    controls: Controls = Controls()


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """What an adapter sends upstream for embeddings; None: the backend's default."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    truncate: bool | None = None
    backend_options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts exactly as the backend reported them; None when it did not."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Timings:
    """Durations in seconds the backend measured itself; None when it did not report one."""

    load: float | None = None
    prompt_eval: float | None = None
    generation: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer. Tool calls in a delta are whole."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Finish:
    """The last event of a successful upstream stream."""

    reason: FinishReason
    usage: Usage | None = None
    timings: Timings | None = None


StreamEvent = Delta | Finish


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in input order."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a backend serves, with what the backend says about it."""

    name: str
    size_bytes: int | None = None
    family: str = ""


@dataclass(frozen=True, slots=True)
class PullProgress:
    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0
