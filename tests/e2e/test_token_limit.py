"""The token limit goes in the field each OpenAI-compatible backend reads: OpenAI's API
reference deprecates `max_tokens` for `max_completion_tokens` (o-series models reject
`max_tokens`); vLLM and llama.cpp (tools/server/server-schema.cpp, an alias of n_predict)
read both; Ollama's /v1 ChatCompletionRequest (openai/openai.go) has only `max_tokens`."""

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask
from turnout.v1 import generate_pb2

LIMIT = generate_pb2.GenerationOptions(max_tokens=64)


async def sent_body(openai, extra: str = "") -> dict:
    async with serve(backends_yaml(openai=openai).replace("priority: 1", "priority: 1" + extra)) as c:
        [r async for r in c.generate.Generate(ask(model="gpt-4o-mini", options=LIMIT))]
    return openai.requests[-1].json


async def test_openai_backends_get_max_completion_tokens_by_default(openai):
    body = await sent_body(openai)
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


async def test_a_backend_set_to_max_tokens_gets_only_max_tokens(openai):
    body = await sent_body(openai, ", max_tokens_field: max_tokens")
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
