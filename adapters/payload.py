"""Request-body pieces that Ollama's /api/chat and OpenAI's chat/completions
spell the same way."""

from __future__ import annotations

from gateway.domain import Tool


def function_tools(tools: tuple[Tool, ...]) -> list[dict[str, object]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
        }
        for t in tools
    ]


def present(values: dict[str, object]) -> dict[str, object]:
    """`values` without the keys whose value is None."""
    return {key: value for key, value in values.items() if value is not None}
