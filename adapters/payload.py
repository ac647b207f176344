"""Request-body pieces that Ollama's /api/chat and OpenAI's chat/completions
spell the same way."""

from __future__ import annotations

from gateway.domain import Options, Tool


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


def sampling(options: Options, max_tokens_key: str) -> dict[str, object]:
    """The sampling options that are set, under the protocol's names; only
    the token limit is named differently (Ollama `num_predict`; OpenAI
    `max_completion_tokens`, or `max_tokens` on servers that read only that)."""
    return present({
        "temperature": options.temperature,
        "top_p": options.top_p,
        max_tokens_key: options.max_tokens,
        "stop": list(options.stop) or None,
        "seed": options.seed,
    })
