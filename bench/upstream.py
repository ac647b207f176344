"""A trivially fast upstream that is not Python: Debian's nginx answering
every chat request with a fixed body via `return 200` — Ollama NDJSON on
/api/chat, OpenAI SSE on /v1/chat/completions — plus the model lists the
gateway probes. /slow/... sends the first chunks at once, then trickles, so
streams stay open (for the memory measurement)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

CHUNKS = 20
PIECE = "tok "
MODEL = "bench"


def ollama_body(chunks: int = CHUNKS) -> str:
    line = {"model": MODEL, "created_at": "2025-07-07T20:22:19.184789Z",
            "message": {"role": "assistant", "content": PIECE}, "done": False}
    done = {"model": MODEL, "created_at": "2025-07-07T20:22:19.19314Z", "message": {"role": "assistant", "content": ""},
            "done_reason": "stop", "done": True, "total_duration": 182242375, "load_duration": 41295167,
            "prompt_eval_count": 10, "prompt_eval_duration": 24573166, "eval_count": chunks, "eval_duration": 115959084}
    return "".join(json.dumps(line) + "\n" for _ in range(chunks)) + json.dumps(done) + "\n"


def openai_body(chunks: int = CHUNKS) -> str:
    def event(choices: list, usage: object = None) -> str:
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": choices, "usage": usage}
        return f"data: {json.dumps(chunk)}\n\n"

    body = event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    body += "".join(event([{"index": 0, "delta": {"content": PIECE}, "finish_reason": None}]) for _ in range(chunks))
    body += event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    body += event([], {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks})
    return body + "data: [DONE]\n\n"


def _return(body: str, part: int = 3000) -> str:
    """`return 200` of `body`, split over variables: nginx caps one config
    token at 4 KB."""
    parts = [body[i:i + part] for i in range(0, len(body), part)]
    sets = " ".join(f"set $p{i} '{p}';" for i, p in enumerate(parts))
    return f"{sets} return 200 \"{''.join(f'$p{i}' for i in range(len(parts)))}\";"


def _config(directory: Path, port: int) -> str:
    tags = json.dumps({"models": [{"name": MODEL, "model": MODEL, "size": 1, "details": {"family": "bench"}}]})
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1, "owned_by": "b"}]})
    temp = " ".join(f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
daemon off;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  {temp}
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /api/chat {{ default_type application/x-ndjson; {_return(ollama_body())} }}
    location = /api/tags {{ default_type application/json; return 200 '{tags}'; }}
    location = /api/version {{ default_type application/json; return 200 '{{"version":"0.5.1"}}'; }}
    location = /v1/chat/completions {{ default_type text/event-stream; {_return(openai_body())} }}
    location = /v1/models {{ default_type application/json; return 200 '{models}'; }}
    location = /slow/api/chat {{
      default_type application/x-ndjson; limit_rate_after 400; limit_rate 1;
      {_return(ollama_body())}
    }}
    location = /slow/api/tags {{ default_type application/json; return 200 '{tags}'; }}
  }}
}}
"""


def start(directory: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("nginx")
    if binary is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx-light")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nginx.conf").write_text(_config(directory, port))
    return subprocess.Popen([binary, "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log")])
