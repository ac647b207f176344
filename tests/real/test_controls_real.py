"""Structured output and embeddings on llama.cpp's own server (started with
--embeddings and mean pooling, which its OpenAI embeddings endpoint needs):
a JSON Schema request answers JSON that parses and follows the schema, and
Embed answers one vector per input, in input order.

One slot (-np 1): with two, this llama.cpp build (llama-cpp-python 0.3.36's
vendored copy) answers the first input of a batch with a vector that is not
that text's (cosine 0.71 to the same text embedded alone), while one slot
gives identical vectors either way."""

from __future__ import annotations

import json
import math
from typing import Iterator

import pytest

from tests.e2e.conftest import serve
from tests.real.llama import LlamaServer, LlamaServerError, llama_server
from tests.real.test_real_model import config, short
from turnout.v1 import embedding_pb2, generate_pb2

pytestmark = pytest.mark.real_model

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
          "required": ["city", "country"]}
TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten rested on the rug."]


@pytest.fixture(scope="module")
def llama_embeddings(tmp_path_factory) -> Iterator[LlamaServer]:
    try:
        with llama_server(parallel=1, log_dir=tmp_path_factory.mktemp("llama"),
                          extra=("--embeddings", "--pooling", "mean")) as server:
            yield server
    except LlamaServerError as exc:
        pytest.fail(str(exc), pytrace=False)


def _cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_a_json_schema_request_answers_json_following_the_schema(llama_embeddings):
    request = short("Name one city and its country.", max_tokens=64, response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=generate_pb2.JsonSchema(name="place", schema=json.dumps(SCHEMA), strict=True)))
    async with serve(config(llama_embeddings.url)) as c:
        response = await c.generate.Complete(generate_pb2.CompleteRequest(request=request))
    answer = json.loads(response.content)
    assert set(answer) == {"city", "country"}
    assert all(isinstance(value, str) for value in answer.values())
    assert response.completed.finish_reason == generate_pb2.FINISH_REASON_STOP


async def test_a_json_object_request_answers_a_json_object(llama_embeddings):
    request = short("Reply with a JSON object with keys name and age for a person.", max_tokens=64, response_format=generate_pb2.ResponseFormat(
        type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT))
    async with serve(config(llama_embeddings.url)) as c:
        response = await c.generate.Complete(generate_pb2.CompleteRequest(request=request))
    assert response.completed.finish_reason == generate_pb2.FINISH_REASON_STOP
    assert isinstance(json.loads(response.content), dict)


async def test_embed_answers_one_vector_per_input_in_input_order(llama_embeddings):
    async with serve(config(llama_embeddings.url)) as c:
        batch = await c.embeddings.Embed(embedding_pb2.EmbedRequest(model="chat", inputs=TEXTS))
        alone = [await c.embeddings.Embed(embedding_pb2.EmbedRequest(model="chat", inputs=[text])) for text in TEXTS]
    vectors = [list(e.values) for e in batch.embeddings]
    assert len(vectors) == 3 and {len(v) for v in vectors} == {576}  # SmolLM2-135M's hidden size
    assert (batch.route, batch.backend, batch.attempt) == ("chat", "llama", 1)
    assert batch.usage.prompt_tokens > 0
    for vector, single in zip(vectors, alone, strict=True):
        assert _cosine(vector, single.embeddings[0].values) > 0.99
    cats, markets, kittens = vectors
    assert _cosine(cats, kittens) > _cosine(cats, markets)
