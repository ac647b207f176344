"""A simulated engine (engine.py) behind a real loopback HTTP/1.1 server that
speaks one server's wire format (PROTOCOLS.md), reusing the byte-exact HTTP
plumbing and stream encoders of tests/fakes.py:

- `llamacpp`: OpenAI SSE chat, /v1/models, /health, /props (total_slots),
  /slots (is_processing per slot), /metrics (llamacpp:requests_processing,
  llamacpp:requests_deferred, llamacpp:prompt_tokens_total and
  llamacpp:prompt_tokens_cached_total: computed and reused prompt tokens).
- `vllm`: OpenAI SSE chat, /v1/models, /health, /metrics
  (vllm:num_requests_running / waiting, vllm:kv_cache_usage_perc, ...).
- `ollama`: /api/chat NDJSON, /api/tags (models on disk), /api/ps (models in memory).
- `cloud`: OpenAI SSE chat and /v1/models only (nothing about its load).

Every personality also answers GET /sim/counters (the benchmark's own read
of what the engine computed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict

from bench.sim.engine import BLOCK_TOKENS, Engine
from tests.fakes import (
    TEXT,
    Reply,
    _Conn,
    _dumps,
    _OllamaStream,
    _OpenAIStream,
    _read_request,
    _tag_entry,
)

PERSONALITIES = ("llamacpp", "vllm", "ollama", "cloud")
PROMETHEUS = "text/plain; version=0.0.4"


def _metric(name: str, kind: str, value: float, labels: str = "") -> str:
    return f"# HELP {name} {name}\n# TYPE {name} {kind}\n{name}{labels} {value}\n"


class SimServer:
    def __init__(self, personality: str, engine: Engine) -> None:
        if personality not in PERSONALITIES:
            raise ValueError(f"personality must be one of {PERSONALITIES}")
        self.personality, self.engine, self.port = personality, engine, 0
        if personality != "ollama":  # a llama.cpp or vLLM server starts with its model loaded
            engine.loaded.update(dict.fromkeys(engine.models[: engine.profile.max_loaded]))
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        root = f"http://127.0.0.1:{self.port}"
        return root if self.personality == "ollama" else root + "/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(task := asyncio.current_task())
        conn, requests = _Conn(writer), asyncio.Queue()
        reading = asyncio.create_task(self._read_loop(reader, conn, requests))
        try:
            while (request := await requests.get()) is not None:
                handling = asyncio.create_task(self._route(request, conn))
                gone = asyncio.create_task(conn.eof.wait())
                await asyncio.wait((handling, gone), return_when=asyncio.FIRST_COMPLETED)
                gone.cancel()
                if not handling.done():  # the client left first: stop its generation
                    handling.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await handling
                    break
                handling.result()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            reading.cancel()
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _read_loop(reader: asyncio.StreamReader, conn: _Conn, requests: asyncio.Queue) -> None:
        with contextlib.suppress(ConnectionError, EOFError, ValueError):
            while (request := await _read_request(reader)) is not None:
                requests.put_nowait(request)
        conn.eof.set()
        requests.put_nowait(None)

    async def _json(self, conn: _Conn, obj, status: int = 200) -> None:
        await conn.respond(status, _dumps(obj), "application/json; charset=utf-8")

    async def _route(self, req, conn: _Conn) -> None:
        body = req.json if isinstance(req.json, dict) else {}
        engine, ollama = self.engine, self.personality == "ollama"
        match req.method, req.path:
            case "GET", "/sim/counters":
                await self._json(conn, asdict(engine.counters))
            case "POST", "/api/chat" if ollama:
                await self._chat(conn, body, _OllamaStream(body.get("model", "")))
            case "GET", "/api/tags" if ollama:
                await self._json(conn, {"models": [_tag_entry(m) for m in engine.models]})
            case "GET", "/api/ps" if ollama:
                loaded = [_tag_entry(m) | {"expires_at": "2099-01-01T00:00:00Z", "size_vram": 1234567}
                          for m in engine.in_memory]
                await self._json(conn, {"models": loaded})
            case "GET", "/" if ollama:
                await conn.respond(200, b"Ollama is running", TEXT)
            case "POST", "/v1/chat/completions" if not ollama:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                await self._chat(conn, body, _OpenAIStream(body.get("model", ""), include_usage))
            case "GET", "/v1/models" if not ollama:
                data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "sim"} for m in engine.models]
                await self._json(conn, {"object": "list", "data": data})
            case "GET", "/health" if self.personality in ("llamacpp", "vllm"):
                await self._json(conn, {"status": "ok"})
            case "GET", "/metrics" if self.personality in ("llamacpp", "vllm"):
                await conn.respond(200, self._metrics().encode(), PROMETHEUS)
            case "GET", "/props" if self.personality == "llamacpp":
                # llama.cpp caches a prompt per slot: the sim's cache, shared out over the slots, is each one's n_ctx.
                n_ctx = engine.profile.cache_blocks * BLOCK_TOKENS // max(1, engine.total_slots)
                await self._json(conn, {"total_slots": engine.total_slots, "model_path": engine.models[0],
                                        "default_generation_settings": {"n_ctx": n_ctx}})
            case "GET", "/slots" if self.personality == "llamacpp":
                busy = engine.running
                await self._json(conn, [{"id": i, "n_ctx": 4096, "is_processing": i < busy}
                                        for i in range(engine.total_slots)])
            case _:
                await conn.respond(404, b"404 page not found", TEXT)

    def _metrics(self) -> str:
        e, c = self.engine, self.engine.counters
        if self.personality == "llamacpp":  # as the llama-server of llama-cpp-python 0.3.36's sources names them
            return "".join((
                _metric("llamacpp:prompt_tokens_total", "counter", c.prompt_tokens),
                _metric("llamacpp:prompt_tokens_cached_total", "counter", c.cached_tokens),
                _metric("llamacpp:tokens_predicted_total", "counter", c.requests * e.profile.output_tokens),
                _metric("llamacpp:requests_processing", "gauge", e.running),
                _metric("llamacpp:requests_deferred", "gauge", len(e.waiting)),
            ))
        label = '{model_name="%s"}' % e.models[0]
        usage = min(1.0, len(e.cache) / max(1, e.profile.cache_blocks))
        return "".join((
            _metric("vllm:num_requests_running", "gauge", e.running, label),
            _metric("vllm:num_requests_waiting", "gauge", len(e.waiting), label),
            _metric("vllm:kv_cache_usage_perc", "gauge", usage, label),
            _metric("vllm:cache_config_info", "gauge", 1,
                    '{block_size="%d",num_gpu_blocks="%d"}' % (BLOCK_TOKENS, e.profile.cache_blocks)),
            _metric("vllm:prompt_tokens_total", "counter", c.prompt_tokens + c.cached_tokens, label),
            _metric("vllm:prefix_cache_queries_total", "counter", c.prompt_tokens + c.cached_tokens, label),
            _metric("vllm:prefix_cache_hits_total", "counter", c.cached_tokens, label),
        ))

    async def _chat(self, conn: _Conn, body: dict, stream: _OllamaStream | _OpenAIStream) -> None:
        model, messages = body.get("model", ""), body.get("messages") or []
        if model not in self.engine.models:
            return await self._json(conn, {"error": f'model "{model}" not found'}, 404)
        pieces = []
        async with contextlib.aclosing(self.engine.generate(model, messages)) as answer:
            async for piece in answer:
                if not pieces:  # the first token: the prompt is computed
                    await conn.stream(stream.ctype, stream.opening(Reply(piece)), end=False)
                else:
                    await conn.stream(stream.ctype, stream.opening(Reply(piece))[-1:], end=False)
                pieces.append(piece)
        prompt_tokens = len(json.dumps(messages)) // 4
        await conn.stream(stream.ctype, stream.ending(Reply(usage=(prompt_tokens, len(pieces)))))

