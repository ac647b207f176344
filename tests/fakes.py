"""Loopback fakes of the Ollama native API and OpenAI Chat Completions, speaking
the wire formats of PROTOCOLS.md (A.0-A.6, B.1-B.4) byte for byte.

Each fake is a plain `asyncio.start_server` HTTP/1.1 server on 127.0.0.1:0 in
the test's event loop: keep-alive, Content-Length or chunked request bodies,
`Content-Length` for fixed replies, `Transfer-Encoding: chunked` for streams
with one write + drain per NDJSON line or SSE event. A reader task per
connection sees EOF at once, so a client that leaves mid-stream sets
`fake.disconnected` and `fake.disconnect_time` even while the fake is idle.

Each chat request (Ollama `POST /api/chat`, OpenAI `POST /v1/chat/completions`)
takes the next behaviour queued by `fake.script(...)`; with none queued it is
`Reply("Hello", " world")`, and Ollama answers 404 for a model that is not in
`fake.models`. What each behaviour sends (Ollama NDJSON / OpenAI SSE):

- Reply(*pieces, reasoning, tool_calls, finish, usage): a whole stream. Ollama:
  a `message.thinking` line per reasoning piece, a `message.content` line per
  piece, one line holding every `message.tool_calls`, then `done:true` with
  `done_reason` and metrics (no token counts when usage is None). OpenAI: a
  `delta.role` chunk, `delta.reasoning_content` chunks, `delta.content` chunks,
  each tool call as fragments (id/type/name, then the arguments JSON in two
  pieces), the finish chunk ("tool_calls" replaces "stop" after tool calls),
  the usage chunk if the request set `stream_options.include_usage`, `[DONE]`.
- Gate(...): as Reply, but sets `fake.hung` after the pieces and holds the end
  (Ollama done line; OpenAI finish chunk onwards) until `fake.release` is set.
- HttpError(status, message, headers): that status before any streaming;
  Ollama `{"error": message}`, OpenAI `{"error": {message, type, param, code}}`.
- MidStreamError(*pieces, message): the pieces, then Ollama `{"error": message}`
  (no `done`) / OpenAI `data: {"error": {...}}`, then the body ends (no [DONE]).
- Truncate(*pieces): the pieces, then a clean end of body without done / [DONE].
- Garbage(*pieces): the pieces, then a line that is not JSON, then the end.
- Hang(*pieces): the pieces, sets `fake.hung`, then waits until the client
  leaves or the fake stops.
- Flood(piece, batch): content chunks of `piece`, `batch` to a write, as fast
  as the client takes them, until it leaves (`fake.disconnected`) or the fake stops.
  With `line_end=False`: `piece` x `batch` bytes to a write, one line that never ends.

Embedding requests (Ollama `POST /api/embed`, OpenAI `POST /v1/embeddings`)
take a queued HttpError if that is next (or a Hang: set `fake.hung`, answer
nothing, and set `fake.disconnected` when the client leaves), else answer with one vector per
input (`embedding_vector(text, n)`: n = the request's `dimensions`, else 4)
and a prompt token count of one per word. Ollama: `{model, embeddings,
total_duration, load_duration, prompt_eval_count}`, 404 for a model not in
`fake.models`. OpenAI: `{object: "list", data: [{object: "embedding", index,
embedding}], model, usage: {prompt_tokens, total_tokens}}`.

Monitoring endpoints (what turnout's scheduler polls) are recorded in
`fake.polls`, not `fake.requests`. FakeOllama answers `/api/ps` with
`fake.loaded`. FakeOpenAI(slots=N) also speaks as llama.cpp's server does:
`/props` (total_slots), `/slots` and `/metrics` (llamacpp:requests_processing
= chat streams running now, llamacpp:requests_deferred = `fake.deferred`);
FakeOpenAI(vllm=True) serves vLLM's `/metrics` gauges instead.
`fake.active` counts chat streams in progress; `fake.peak` the most at once;
`fake.open` the connections open now (`await fake.all_closed()` waits for none).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

NDJSON, SSE, TEXT = "application/x-ndjson", "text/event-stream", "text/plain; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4"
MONITORING = frozenset({"/api/ps", "/metrics", "/slots", "/props", "/health"})


def unused_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fill(obj, **values) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)


@dataclass(frozen=True, init=False)
class Reply:
    pieces: tuple[str, ...]
    reasoning: tuple[str, ...] = ()
    tool_calls: tuple[tuple[str, dict], ...] = ()
    finish: str = "stop"
    usage: tuple[int, int] | None = (10, 5)

    def __init__(self, *pieces: str, reasoning=(), tool_calls=(), finish="stop", usage=(10, 5)):
        _fill(self, pieces=pieces, reasoning=tuple(reasoning), tool_calls=tuple(tool_calls),
              finish=finish, usage=usage)


class Gate(Reply):
    pass


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str = "upstream error"
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True, init=False)
class MidStreamError:
    pieces: tuple[str, ...]
    message: str
    hold: bool

    def __init__(self, *pieces: str, message: str = "an error was encountered while running the model",
                 hold: bool = False):
        _fill(self, pieces=pieces, message=message, hold=hold)


@dataclass(frozen=True, init=False)
class _Pieces:
    pieces: tuple[str, ...]
    hold: bool

    def __init__(self, *pieces: str, hold: bool = False):
        _fill(self, pieces=pieces, hold=hold)


class Truncate(_Pieces):
    pass


class Garbage(_Pieces):
    pass


class Hang(_Pieces):
    pass


@dataclass(frozen=True)
class Flood:
    piece: str = "x" * 1024
    batch: int = 64
    line_end: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names lowercased
    body: bytes
    json: object | None


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:8]


def embedding_vector(text: str, size: int = 4) -> list[float]:
    """The fakes' vector for `text`: deterministic, and exact in float32."""
    digest = hashlib.sha256(text.encode()).digest() * (size // 32 + 1)
    return [byte / 256 for byte in digest[:size]]


def _embed_inputs(body: dict) -> tuple[list[str], int]:
    inputs = body.get("input") or []
    return ([inputs] if isinstance(inputs, str) else list(inputs)), int(body.get("dimensions") or 4)


def _tagged(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else model + ":latest"


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    """One request off the connection; None at a clean EOF between requests."""
    if not (line := await reader.readline()):
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n"):
        if not raw:
            raise EOFError
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        while await reader.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
    else:
        body = await reader.readexactly(int(headers.get("content-length", 0)))
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(method, target.split("?", 1)[0], headers, body, parsed)


class _Conn:
    """One client connection: writes responses; the reader task sets `eof`."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer, self.eof, self.streaming = writer, asyncio.Event(), False

    async def _send(self, status: int, headers: dict, body: bytes = b""):
        lines = [f"HTTP/1.1 {status} {http.client.responses.get(status, 'Unknown')}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()

    async def respond(self, status: int, body: bytes = b"", ctype: str | None = None, headers=None):
        fields = {"Content-Type": ctype} if ctype else {}
        await self._send(status, fields | {"Content-Length": len(body)} | dict(headers or {}), body)

    async def stream(self, ctype: str, chunks: Iterable[bytes], end: bool = True):
        """Send chunks (starting the chunked 200 if need be), each write drained; `end` closes the body."""
        if not self.streaming:
            self.streaming = True
            await self._send(200, {"Content-Type": ctype, "Transfer-Encoding": "chunked"})
        for data in chunks:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()
        if end:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()
            self.streaming = False

    async def until(self, event: asyncio.Event | None) -> bool:
        """Wait for `event` (None: forever) or EOF; True unless the client left."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self.eof, event) if e]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return not self.eof.is_set()


class _Fake:
    json_type = "application/json"

    def __init__(self, models: Iterable[str]):
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self.polls: list[RecordedRequest] = []
        self.active = self.peak = 0
        self.connections = 0  # that carried an API request so far (not monitoring); keep-alive tests compare it
        self.open = 0  # connections open now, of any kind
        self._closed = asyncio.Condition()
        self.disconnected, self.disconnect_time = asyncio.Event(), None
        self.hung, self.release = asyncio.Event(), asyncio.Event()
        self.port = 0
        self._script: deque = deque()
        self._arrived = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()

    def script(self, *behaviours) -> None:
        self._script.extend(behaviours)

    async def wait_for_requests(self, n: int, path: str | None = None) -> list[RecordedRequest]:
        """The requests (to `path`, if given) once there are at least n; fails after 10 s."""
        def matching():
            return [r for r in self.requests if path in (None, r.path)]

        try:
            async with asyncio.timeout(10), self._arrived:
                await self._arrived.wait_for(lambda: len(matching()) >= n)
        except TimeoutError:
            raise AssertionError(f"wanted {n} requests to {path or 'any path'}, got {len(matching())}") from None
        return matching()

    async def all_closed(self) -> None:
        """Returns once no client holds a connection open; fails after 10 s."""
        try:
            async with asyncio.timeout(10), self._closed:
                await self._closed.wait_for(lambda: self.open == 0)
        except TimeoutError:
            raise AssertionError(f"{self.open} connection(s) still open") from None

    async def __aenter__(self):
        """Starts listening; a fake stopped and entered again keeps its port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info):
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._tasks.add(task := asyncio.current_task())
        conn, queue = _Conn(writer), asyncio.Queue()
        reading = asyncio.create_task(self._read_loop(reader, conn, queue))
        self.open += 1
        try:
            while (request := await queue.get()) is not None:
                await self._route(request, conn)
                if request.headers.get("connection", "").lower() == "close":
                    break
        except ConnectionError:
            if conn.streaming:
                self._disconnect()
        except asyncio.CancelledError:
            pass  # only __aexit__ cancels; 3.11's start_server would log a cancelled handler as an error
        finally:
            reading.cancel()
            writer.close()
            self._tasks.discard(task)
            self.open -= 1
            async with self._closed:
                self._closed.notify_all()

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Conn, queue: asyncio.Queue):
        counted = False
        try:
            while (request := await _read_request(reader)) is not None:
                monitoring = request.path in MONITORING
                if not (monitoring or counted):
                    self.connections, counted = self.connections + 1, True
                async with self._arrived:
                    (self.polls if monitoring else self.requests).append(request)
                    self._arrived.notify_all()
                queue.put_nowait(request)
        except (ConnectionError, EOFError, ValueError):
            pass
        conn.eof.set()
        if conn.streaming:
            self._disconnect()
        queue.put_nowait(None)

    def _disconnect(self):
        self.disconnect_time = time.monotonic()
        self.disconnected.set()

    async def _json(self, conn: _Conn, status: int, obj, headers=None):
        await conn.respond(status, _dumps(obj), self.json_type, headers)

    async def _embed(self, conn: _Conn, body: dict, answer) -> None:
        """A queued HttpError or Hang, else `answer(inputs, vectors, tokens)` as JSON."""
        if self._script and isinstance(self._script[0], HttpError):
            error = self._script.popleft()
            return await self._error(conn, error.status, error.message, error.headers)
        if self._script and isinstance(self._script[0], Hang):
            self._script.popleft()
            self.hung.set()
            if not await conn.until(None):
                self._disconnect()
            return None
        inputs, size = _embed_inputs(body)
        vectors = [embedding_vector(text, size) for text in inputs]
        await self._json(conn, 200, answer(inputs, vectors, sum(len(text.split()) for text in inputs)))

    async def _chat(self, conn: _Conn, stream: _OllamaStream | _OpenAIStream):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self._chat_body(conn, stream)
        finally:
            self.active -= 1

    async def _chat_body(self, conn: _Conn, stream: _OllamaStream | _OpenAIStream):
        behaviour = self._script.popleft() if self._script else Reply("Hello", " world")
        if isinstance(behaviour, HttpError):
            return await self._error(conn, behaviour.status, behaviour.message, behaviour.headers)
        if isinstance(behaviour, Flood):
            if behaviour.line_end:
                batch = stream.opening(Reply(*[behaviour.piece] * behaviour.batch))
            else:
                batch = [behaviour.piece.encode() * behaviour.batch]
            while True:
                await conn.stream(stream.ctype, batch, end=False)
                await asyncio.sleep(0)
        await conn.stream(stream.ctype, stream.opening(behaviour), end=False)
        if isinstance(behaviour, (Hang, Gate)) or getattr(behaviour, "hold", False):
            self.hung.set()
            if not await conn.until(None if isinstance(behaviour, Hang) else self.release):
                return
        match behaviour:
            case Reply():
                tail = stream.ending(behaviour)
            case MidStreamError():
                tail = [stream.error(behaviour.message)]
            case Garbage():
                tail = [stream.garbage]
            case _:
                tail = []
        await conn.stream(stream.ctype, tail)


class _OllamaStream:
    ctype, garbage = NDJSON, b"this is not json\n"

    def __init__(self, model: str):
        self.model = model

    def _line(self, content: str = "", message: dict | None = None, ending: dict | None = None) -> bytes:
        created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = {"role": "assistant", "content": content, **(message or {})}
        head = {"model": self.model, "created_at": created_at, "message": message}
        return _dumps(head | (ending or {"done": False})) + b"\n"

    def opening(self, behaviour) -> list[bytes]:
        lines = [self._line(message={"thinking": t}) for t in getattr(behaviour, "reasoning", ())]
        lines += [self._line(piece) for piece in behaviour.pieces]
        if calls := getattr(behaviour, "tool_calls", ()):
            lines.append(self._line(message={"tool_calls": [
                {"id": _call_id(), "function": {"index": i, "name": name, "arguments": args}}
                for i, (name, args) in enumerate(calls)]}))
        return lines

    def ending(self, reply: Reply) -> list[bytes]:
        prompt, completion = reply.usage or (None, None)
        metrics = {"total_duration": 182242375, "load_duration": 41295167, "prompt_eval_count": prompt,
                   "prompt_eval_duration": 24573166, "eval_count": completion, "eval_duration": 115959084}
        ending = {"done_reason": reply.finish, "done": True}
        return [self._line(ending=ending | {k: v for k, v in metrics.items() if v is not None})]

    def error(self, message: str) -> bytes:
        return _dumps({"error": message}) + b"\n"


class FakeOllama(_Fake):
    json_type = "application/json; charset=utf-8"

    def __init__(self, models: Iterable[str] = ("llama3.2:1b",)):
        super().__init__(models)
        self.loaded: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _has(self, model: str) -> bool:
        return _tagged(model) in map(_tagged, self.models)

    async def _error(self, conn: _Conn, status: int, message: str, headers=None):
        await self._json(conn, status, {"error": message}, headers)

    async def _route(self, req: RecordedRequest, conn: _Conn):
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model") or body.get("name") or ""
        match req.method, req.path:
            case "GET", "/":
                await conn.respond(200, b"Ollama is running", TEXT)
            case "GET", "/api/version":
                await self._json(conn, 200, {"version": "0.5.1"})
            case "GET", "/api/tags":
                await self._json(conn, 200, {"models": [_tag_entry(m) for m in self.models]})
            case "GET", "/api/ps":
                await self._json(conn, 200, {"models": [_ps_entry(m) for m in self.loaded]})
            case "POST", "/api/chat" if self._script or self._has(model):
                await self._chat(conn, _OllamaStream(model))
            case "POST", "/api/chat":
                await self._error(conn, 404, f'model "{model}" not found, try pulling it first')
            case "POST", "/api/embed" if self._has(model):
                await self._embed(conn, body, lambda inputs, vectors, tokens: {
                    "model": model, "embeddings": vectors, "total_duration": 14143917,
                    "load_duration": 1019500, "prompt_eval_count": tokens})
            case "POST", "/api/embed":
                await self._error(conn, 404, f'model "{model}" not found, try pulling it first')
            case "POST", "/api/pull":
                digest, total = "sha256:" + _digest(model), 1234567
                layer = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
                statuses = ["verifying sha256 digest", "writing manifest", "removing unused layers", "success"]
                lines = [{"status": "pulling manifest"}, layer, {**layer, "completed": total // 2},
                         {**layer, "completed": total}, *({"status": s} for s in statuses)]
                await conn.stream(NDJSON, [_dumps(line) + b"\n" for line in lines])
                self.models += [] if self._has(model) else [model]
            case "DELETE", "/api/delete" if self._has(model):
                self.models = [m for m in self.models if _tagged(m) != _tagged(model)]
                await conn.respond(200)
            case "DELETE", "/api/delete":
                await self._error(conn, 404, f"model '{model}' not found")
            case _:
                await conn.respond(404, b"404 page not found", TEXT)


def _ps_entry(name: str) -> dict:
    """An /api/ps entry (Ollama docs/api.md "List Running Models")."""
    entry = _tag_entry(name)
    del entry["modified_at"]
    return entry | {"expires_at": "2025-01-15T10:25:30.123456Z", "size_vram": entry["size"]}


def _tag_entry(name: str) -> dict:
    details = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
               "parameter_size": "1.2B", "quantization_level": "Q4_K_M"}
    return {"name": name, "model": name, "modified_at": "2025-01-15T10:20:30.123456Z", "size": 1234567,
            "digest": _digest(name), "details": details}


def _openai_error(status: int, message: str, kind: str | None = None, code: str | None = None) -> dict:
    kind = kind or {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _OpenAIStream:
    ctype, garbage = SSE, b"data: this is not json\n\n"

    def __init__(self, model: str, include_usage: bool):
        self.include_usage = include_usage
        self.base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}

    @staticmethod
    def _event(obj) -> bytes:
        return b"data: " + _dumps(obj) + b"\n\n"

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return self._event({**self.base, "choices": [choice], "usage": None})

    def opening(self, behaviour) -> list[bytes]:
        chunks = [self._chunk({"role": "assistant", "content": ""})]
        chunks += [self._chunk({"reasoning_content": t}) for t in getattr(behaviour, "reasoning", ())]
        chunks += [self._chunk({"content": piece}) for piece in behaviour.pieces]
        for i, (name, args) in enumerate(getattr(behaviour, "tool_calls", ())):
            head = {"index": i, "id": _call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
            text = _dumps(args).decode()
            chunks.append(self._chunk({"tool_calls": [head]}))
            chunks += [self._chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                       for part in (text[: len(text) // 2], text[len(text) // 2:])]
        return chunks

    def ending(self, reply: Reply) -> list[bytes]:
        chunks = [self._chunk({}, "tool_calls" if reply.tool_calls and reply.finish == "stop" else reply.finish)]
        if self.include_usage and reply.usage:
            prompt, completion = reply.usage
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            chunks.append(self._event({**self.base, "choices": [], "usage": usage}))
        return chunks + [b"data: [DONE]\n\n"]

    def error(self, message: str) -> bytes:
        return self._event(_openai_error(500, message))


class FakeOpenAI(_Fake):
    def __init__(self, models: Iterable[str] = ("gpt-4o-mini",), api_key: str | None = None,
                 slots: int | None = None, vllm: bool = False):
        super().__init__(models)
        self.api_key = api_key
        self.slots, self.vllm, self.deferred = slots, vllm, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _error(self, conn: _Conn, status: int, message: str, headers=None, kind=None, code=None):
        await self._json(conn, status, _openai_error(status, message, kind, code), headers)

    def _metrics(self) -> str:
        """llama.cpp server's /metrics (tools/server/server.cpp, handle_metrics) or vLLM's (vllm/v1/metrics)."""
        if self.vllm:
            label = '{engine="0",model_name="%s"}' % self.models[0]
            gauges = [("vllm:num_requests_running", "Number of requests in model execution batches.",
                       f"{float(self.active)}"),
                      ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                       f"{float(self.deferred)}"),
                      ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "0.25")]
            return "".join(f"# HELP {n} {h}\n# TYPE {n} gauge\n{n}{label} {v}\n" for n, h, v in gauges)
        metrics = [("prompt_tokens_total", "counter", "Number of prompt tokens processed.", 120),
                   ("tokens_predicted_total", "counter", "Number of generation tokens processed.", 48),
                   ("requests_processing", "gauge", "Number of requests processing.", self.active),
                   ("requests_deferred", "gauge", "Number of requests deferred.", self.deferred)]
        return "".join(f"# HELP llamacpp:{n} {h}\n# TYPE llamacpp:{n} {t}\nllamacpp:{n} {v}\n"
                       for n, t, h, v in metrics)

    async def _route(self, req: RecordedRequest, conn: _Conn):
        body = req.json if isinstance(req.json, dict) else {}
        match req.method, req.path:
            case _ if self.api_key and req.headers.get("authorization") != f"Bearer {self.api_key}":
                await self._error(conn, 401, "Incorrect API key provided.", kind="invalid_request_error",
                                  code="invalid_api_key")
            case "GET", "/v1/models":
                data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "library"}
                        for m in self.models]
                await self._json(conn, 200, {"object": "list", "data": data})
            case "POST", "/v1/embeddings":
                await self._embed(conn, body, lambda inputs, vectors, tokens: {
                    "object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "model": body.get("model", ""), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            case "POST", "/v1/chat/completions":
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                await self._chat(conn, _OpenAIStream(body.get("model", ""), include_usage))
            case "GET", "/props" if self.slots:
                await self._json(conn, 200, {"total_slots": self.slots, "model_path": "/models/m.gguf",
                                             "chat_template": "", "build_info": "b5000-0000000"})
            case "GET", "/slots" if self.slots:
                await self._json(conn, 200, [{"id": i, "n_ctx": 4096, "is_processing": i < self.active}
                                             for i in range(self.slots)])
            case "GET", "/metrics" if self.slots or self.vllm:
                await conn.respond(200, self._metrics().encode(), PROMETHEUS)
            case _:
                await self._error(conn, 404, f"Invalid URL ({req.method} {req.path})")
