"""Embedding responses of both protocols: vectors in input order, usage when
reported, anything else a protocol error."""

import pytest

from adapters.embeddings import ollama_embeddings, openai_embeddings
from adapters.streams import StreamDecodeError
from gateway.domain import Embeddings, Usage


def test_openai_vectors_are_put_in_input_order_by_index():
    body = {"data": [{"index": 1, "embedding": [0.5, 1]}, {"index": 0, "embedding": [0.25, 2]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    assert openai_embeddings(body, 2) == Embeddings(((0.25, 2.0), (0.5, 1.0)), Usage(prompt_tokens=7))


def test_ollama_vectors_and_usage_when_reported():
    assert ollama_embeddings({"embeddings": [[1, 2]], "prompt_eval_count": 3}, 1) == Embeddings(
        ((1.0, 2.0),), Usage(prompt_tokens=3))
    assert ollama_embeddings({"embeddings": [[1, 2]]}, 1).usage is None


@pytest.mark.parametrize("body, count, problem", [
    ({"embeddings": [[1.0]]}, 2, "1 embeddings for 2 inputs"),
    ({"embeddings": [[]]}, 1, "not a non-empty list of numbers"),
    ({"embeddings": [["x"]]}, 1, "not a non-empty list of numbers"),
    ({"embeddings": [[True]]}, 1, "not a non-empty list of numbers"),
    ({}, 1, "no list of embeddings"),
])
def test_ollama_malformed_answers_are_decode_errors(body, count, problem):
    with pytest.raises(StreamDecodeError, match=problem):
        ollama_embeddings(body, count)


@pytest.mark.parametrize("body, problem", [
    ({"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [2]}]}, "does not number the inputs"),
    ({"data": [{"embedding": [1]}, {"index": 1, "embedding": [2]}]}, "does not number the inputs"),
    ({"data": "nope"}, "not a list of objects"),
])
def test_openai_malformed_answers_are_decode_errors(body, problem):
    with pytest.raises(StreamDecodeError, match=problem):
        openai_embeddings(body, 2)
