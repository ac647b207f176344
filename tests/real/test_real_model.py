"""turnout in front of a real model: llama.cpp's own server (llama-server)
with SmolLM2-135M-Instruct, called through the generated stubs. Skipped by
`make test`; `make test-real` runs it (tests/real/llama.py starts the server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import AsyncIterator

import grpc
import pytest

from tests.e2e.conftest import serve
from tests.e2e.helpers import ask, collect, failure, kinds, text
from tests.real.llama import ALIAS, LlamaServer
from turnout.v1 import common_pb2, generate_pb2, model_pb2, session_pb2

pytestmark = pytest.mark.real_model

USER, ASSISTANT = common_pb2.ROLE_USER, common_pb2.ROLE_ASSISTANT
STOP, LENGTH = generate_pb2.FINISH_REASON_STOP, generate_pb2.FINISH_REASON_LENGTH


def config(url: str, backend_keys: str = "") -> str:
    return (
        f"backends:\n  - {{name: llama, kind: openai, url: '{url}'{backend_keys}}}\n"
        f"routes:\n  - name: chat\n    targets: [{{backend: llama, model: {ALIAS}}}]\n"
    )


def short(prompt: str, max_tokens: int = 32, **fields) -> generate_pb2.GenerateRequest:
    return ask(prompt, model="chat", options=generate_pb2.GenerationOptions(max_tokens=max_tokens, seed=1), **fields)


class RecordingProxy:
    """A TCP pass-through to the llama.cpp server that keeps every byte sent
    upstream, so the test can read the chat requests turnout really made."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sent: list[bytearray] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        finally:
            server.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._port)
        sent = bytearray()
        self._sent.append(sent)

        async def pipe(reader, writer, record=None):
            try:
                while data := await reader.read(65536):
                    if record is not None:
                        record += data
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_r, upstream_w, sent), pipe(upstream_r, client_w))

    def chat_requests(self) -> list[dict]:
        bodies = []
        for sent in self._sent:
            data = bytes(sent)
            while (start := data.find(b"POST /v1/chat/completions ")) >= 0:
                head_end = data.index(b"\r\n\r\n", start)
                headers = dict(
                    line.split(b":", 1) for line in data[start:head_end].split(b"\r\n")[1:]
                )
                length = int({k.strip().lower(): v for k, v in headers.items()}[b"content-length"])
                bodies.append(json.loads(data[head_end + 4 : head_end + 4 + length]))
                data = data[head_end + 4 + length :]
        return bodies


async def backend_in_flight(c) -> int:
    response = await c.models.ListBackends(model_pb2.ListBackendsRequest())
    return next(b.in_flight for b in response.backends if b.name == "llama")


async def test_second_turn_of_a_session_sends_the_first_upstream(llama: LlamaServer):
    proxy = RecordingProxy(int(llama.url.rsplit(":", 1)[1].split("/")[0]))
    async with proxy.running() as url, serve(config(url)) as c:
        first = await collect(c.generate.Generate(short("Name one colour.", session_id="s"), timeout=60))
        await collect(c.generate.Generate(short("Name another one.", session_id="s"), timeout=60))
        stored = (await c.sessions.ListFrames(session_pb2.ListFramesRequest(session_id="s"))).frames
    answer = text(first)
    assert answer
    assert [(f.seq, f.role) for f in stored] == [(1, USER), (2, ASSISTANT), (3, USER), (4, ASSISTANT)]
    assert [stored[0].content, stored[1].content, stored[2].content] == ["Name one colour.", answer, "Name another one."]
    assert stored[3].content and (stored[3].backend, stored[3].model) == ("llama", ALIAS)
    requests = proxy.chat_requests()
    assert len(requests) == 2
    assert requests[1]["messages"] == [
        {"role": "user", "content": "Name one colour."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Name another one."},
    ]
    assert requests[1]["model"] == ALIAS and requests[1]["max_completion_tokens"] == 32


async def test_unknown_model_is_not_found_and_the_served_model_is_listed(llama: LlamaServer):
    async with serve(config(llama.url)) as c:
        error = await failure(c.generate.Generate(ask("hi", model="no-such-model"), timeout=30))
        models = (await c.models.ListModels(model_pb2.ListModelsRequest())).models
        # The model name llama.cpp lists is an implicit route of its own.
        implicit = await collect(c.generate.Generate(
            ask("hi", model=ALIAS, options=generate_pb2.GenerationOptions(max_tokens=4)), timeout=30))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert [(m.name, list(m.backends)) for m in models] == [(ALIAS, ["llama"])]
    assert implicit[0].started.route == ALIAS and kinds(implicit)[-1] == "completed"
