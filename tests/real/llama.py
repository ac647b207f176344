"""llama.cpp's own server (`llama-server`, C++) with SmolLM2-135M-Instruct, on a
free loopback port: the one place that starts it, for the real-model tests,
`make demo` and benchmarks.

    from tests.real.llama import llama_server, metrics

    with llama_server(parallel=2) as server:     # waits for GET /health to answer 200
        server.url                               # "http://127.0.0.1:PORT/v1" (OpenAI API)
        server.root                              # "http://127.0.0.1:PORT" (/health, /metrics, /slots, /props)
        metrics(server)["llamacpp:prompt_tokens_total"]

The binary and model come from `shared/scripts/llama-server.sh`, which builds
them once into ~/.cache/turnout-llama (outside the checkout) and prints
"BIN MODEL". The script is found at $LLAMA_SERVER_SH, else at
../shared/scripts/llama-server.sh beside the checkout (the CI layout).
Also a command: `python -m tests.real.llama` builds if needed and prints
"BIN MODEL"; `python -m tests.real.llama serve [SLOTS]` starts a server,
prints its OpenAI base URL, and stops it on SIGTERM or Ctrl-C (`make demo`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
ALIAS = "smollm2"
START_TIMEOUT = 120.0


class LlamaServerError(RuntimeError):
    """The server could not be built or did not come up; the message has its log tail."""


@dataclass(frozen=True)
class LlamaServer:
    root: str  # http://127.0.0.1:PORT
    log: Path
    parallel: int

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL, as a turnout `kind: openai` backend takes it."""
        return self.root + "/v1"

    @property
    def port(self) -> int:
        return int(self.root.rsplit(":", 1)[1])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def build_script() -> Path:
    return Path(os.environ.get("LLAMA_SERVER_SH") or ROOT.parent / "shared" / "scripts" / "llama-server.sh")


def locate() -> tuple[str, str]:
    """(binary, model) paths, building them on first use (minutes; cached after)."""
    script = build_script()
    if not script.is_file():
        raise LlamaServerError(f"{script} is missing: check out shared/ beside this checkout, or set LLAMA_SERVER_SH")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise LlamaServerError(f"{script} failed:\n{done.stderr[-3000:]}")
    binary, model = done.stdout.split()[-2:]
    return binary, model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(server: LlamaServer, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(server.root + path, timeout=timeout) as response:
        return response.read()


def metrics(server: LlamaServer) -> dict[str, float]:
    """GET /metrics (needs --metrics, which llama_server passes) as {name: value}."""
    values = {}
    for line in get(server, "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def slots(server: LlamaServer) -> list[dict]:
    """GET /slots: one object per slot, with `is_processing`."""
    return json.loads(get(server, "/slots"))


def _healthy(server: LlamaServer) -> bool:
    try:
        return json.loads(get(server, "/health", timeout=1.0)).get("status") == "ok"
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def llama_server(
    parallel: int = 2, ctx_size: int = 8192, threads: int = 1, log_dir: Path | None = None, extra: tuple[str, ...] = ()
) -> Iterator[LlamaServer]:
    """Starts llama-server with `parallel` slots sharing `ctx_size` tokens of
    context, serving the model as `smollm2`, with /metrics and /slots on.
    Yields once /health says ok; stops it (SIGTERM, then SIGKILL) on exit."""
    binary, model = locate()
    port = _free_port()
    log = Path(log_dir or ROOT / ".demo" / "logs") / f"llama-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [
        binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-a", ALIAS,
        "-np", str(parallel), "-c", str(ctx_size), "-t", str(threads), "--metrics", "--slots", *extra,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(f"http://127.0.0.1:{port}", log, parallel)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(server):
            if process.poll() is not None:
                raise LlamaServerError(f"llama-server exited ({process.returncode}):\n{server.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise LlamaServerError(f"llama-server not healthy after {START_TIMEOUT:g} s:\n{server.log_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serve(parallel: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with llama_server(parallel=parallel) as server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["serve"]:
            _serve(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
        else:
            print(*locate())
    except LlamaServerError as exc:
        sys.exit(str(exc))
