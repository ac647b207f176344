"""Embedding request bodies and responses for both protocols: Ollama
`POST /api/embed` and OpenAI-compatible `POST /v1/embeddings`. Pure: the
adapters do the I/O. Wire facts: PROTOCOLS.md A.5 (/api/embed) and the
OpenAI embeddings reference (`data[].index` orders the vectors)."""

from __future__ import annotations

from adapters.controls import ollama_options
from adapters.payload import present
from adapters.streams import StreamDecodeError
from gateway.domain import EmbedRequest, Embeddings, Usage


def ollama_embed_payload(request: EmbedRequest) -> dict[str, object]:
    payload = {"model": request.model, "input": list(request.inputs)}
    payload |= present({"truncate": request.truncate, "dimensions": request.dimensions})
    return ollama_options(payload, request.backend_options)


def openai_embed_payload(request: EmbedRequest) -> dict[str, object]:
    """`truncate` has no OpenAI field and is not sent."""
    payload = {"model": request.model, "input": list(request.inputs), "encoding_format": "float"}
    payload |= present({"dimensions": request.dimensions})
    return {**request.backend_options, **payload}


def ollama_embeddings(body: dict, count: int) -> Embeddings:
    """`{"embeddings": [[...], ...], "prompt_eval_count": n}`, vectors in input order."""
    vectors = _vectors(body.get("embeddings"), count)
    prompt = body.get("prompt_eval_count")
    return Embeddings(vectors, Usage(prompt_tokens=prompt) if isinstance(prompt, int) else None)


def openai_embeddings(body: dict, count: int) -> Embeddings:
    """`{"data": [{"index": i, "embedding": [...]}, ...], "usage": {...}}`,
    put in input order by `index`."""
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise StreamDecodeError("`data` is not a list of objects")
    by_index = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item.get("index"), int) else -1)
    if [item.get("index") for item in by_index] != list(range(len(by_index))):
        raise StreamDecodeError("`data[].index` does not number the inputs 0, 1, 2, ...")
    vectors = _vectors([item.get("embedding") for item in by_index], count)
    usage = body.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(vectors, Usage(prompt_tokens=prompt) if isinstance(prompt, int) else None)


def _vectors(raw: object, count: int) -> tuple[tuple[float, ...], ...]:
    if not isinstance(raw, list):
        raise StreamDecodeError("no list of embeddings in the response")
    if len(raw) != count:
        raise StreamDecodeError(f"{len(raw)} embeddings for {count} inputs")
    vectors = []
    for vector in raw:
        if not isinstance(vector, list) or not vector or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
        ):
            raise StreamDecodeError("an embedding is not a non-empty list of numbers")
        vectors.append(tuple(float(x) for x in vector))
    return tuple(vectors)
