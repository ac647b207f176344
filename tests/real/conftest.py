"""A real llama.cpp server (llama-cpp-python's OpenAI-compatible server, from
the demo venv that `demo/setup.sh` builds) with SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.fakes import unused_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = Path(os.environ.get("DEMO_DIR") or ROOT / ".demo")  # as demo/setup.sh reads it
ALIAS = "smollm2"


@dataclass
class LlamaServer:
    url: str  # base URL ending in /v1
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _model_path() -> str:
    """Sets up .demo/venv if needed (instant once built) and returns the .gguf path."""
    done = subprocess.run(["bash", str(ROOT / "demo" / "setup.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"demo/setup.sh failed:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Iterator[LlamaServer]:
    model = _model_path()
    port = unused_port()
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    args = [
        str(DEMO_DIR / "venv" / "bin" / "python"), "-m", "llama_cpp.server",
        "--model", model, "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--n_ctx", "2048", "--interrupt_requests", "False",
    ]
    with open(log, "wb") as out:
        # Unbuffered, so its "Disconnected from client" lines reach the log at once.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    server_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server_url}/models", timeout=1) as response:
                    listed = json.load(response)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"llama.cpp server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"llama.cpp server did not answer within 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        assert [m["id"] for m in listed["data"]] == [ALIAS]
        yield LlamaServer(server_url, log)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
