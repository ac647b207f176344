"""LiteLLM proxy as a benchmark peer, run in its own virtualenv on loopback.

    from bench import litellm
    bin_dir = litellm.ensure_venv()
    proc = litellm.start("http://127.0.0.1:8000/v1", port=4000, workdir=Path(".bench/litellm"))
    ...
    litellm.stop(proc)

The proxy serves one model, ``bench``, forwarded to ``openai/bench`` at the
given OpenAI-compatible upstream (whose base URL ends in ``/v1``). The request
to stream through it:

    POST http://127.0.0.1:<port>/v1/chat/completions
    Authorization: Bearer sk-bench-master
    Content-Type: application/json

    {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": true}

It answers with OpenAI SSE chunks (``data: {...}``) ending in ``data: [DONE]``.

Offline operation: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it from fetching
the model cost map at import (without it, every start spends seconds retrying
raw.githubusercontent.com); no callbacks are configured; there is no database,
so only the master key authenticates (a wrong key gets HTTP 400 "No connected
db"). ``prisma`` is installed beside it, without which auth failures come back
as HTTP 500. litellm 1.106 has no telemetry switch any more (``telemetry`` is a
dropped legacy key); traced with strace, start-up, streaming and idle made no
connection off loopback. Liveness: ``GET /health/liveliness`` -> "I'm alive!".

Timing notes: it is live ~5 s after start; the first request through it takes
~0.7 s (lazy imports), so send a few warm-up requests before timing. At start
and every 5 minutes it also sends ``GET <upstream>/models`` (``/v1/models``) to
the upstream; a 404 there is harmless.

Run as a script to start it against an upstream and wait for Ctrl-C:

    python -m bench.litellm http://127.0.0.1:8000/v1 4000
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MASTER_KEY = "sk-bench-master"
UPSTREAM_KEY = "sk-bench"
MODEL = "bench"
PACKAGES = ["litellm[proxy]", "prisma"]
LIVENESS_PATH = "/health/liveliness"

_MARKER = ".bench-installed"
_ROOT = Path(__file__).resolve().parent.parent


def _anchored(path: Path) -> Path:
    """Relative paths are taken from the repository root, not the caller's cwd."""
    path = Path(path)
    return path if path.is_absolute() else _ROOT / path


CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: "{api_base}"
      api_key: "{upstream_key}"

litellm_settings:
  success_callback: []
  failure_callback: []
  callbacks: []

general_settings:
  master_key: "{master_key}"
"""


def ensure_venv(path: Path = Path(".bench/litellm-venv")) -> Path:
    """Create the venv at ``path`` with litellm[proxy] and prisma; return its bin dir.

    Idempotent: a marker file in the venv records a finished install. A
    relative ``path`` is taken from the repository root.
    """
    path = _anchored(path)
    bin_dir = path / "bin"
    marker = path / _MARKER
    if marker.exists():
        return bin_dir
    print(f"installing {' '.join(PACKAGES)} into {path} (takes a minute or two)", flush=True)
    if not (bin_dir / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-qq", "--disable-pip-version-check", *PACKAGES],
        check=True,
    )
    marker.write_text(" ".join(PACKAGES) + "\n")
    return bin_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            # Bundled cost map / Anthropic beta-header table instead of fetching them.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            "LITELLM_LOG": "ERROR",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # No proxy settings from the caller's shell: everything is on loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    upstream_base_url: str,
    port: int,
    workdir: Path,
    workers: int = 1,
    *,
    venv: Path = Path(".bench/litellm-venv"),
    timeout: float = 120.0,
) -> subprocess.Popen:
    """Start the proxy on 127.0.0.1:``port`` in front of ``upstream_base_url``; wait until live."""
    bin_dir = ensure_venv(venv)
    workdir = _anchored(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(
        CONFIG.format(model=MODEL, api_base=upstream_base_url, upstream_key=UPSTREAM_KEY, master_key=MASTER_KEY)
    )
    log_path = workdir / "litellm.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            str(bin_dir / "litellm"),
            "--config",
            str(config.resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_env(),
        cwd=str(workdir),
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}{LIVENESS_PATH}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode}; last log lines:\n{_tail(log_path)}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise TimeoutError(f"litellm not live at {url} after {timeout:.0f}s; last log lines:\n{_tail(log_path)}")
        time.sleep(0.25)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the proxy (and its workers), wait, kill if needed."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
        process.wait()


if __name__ == "__main__":
    upstream, port = sys.argv[1], int(sys.argv[2])
    proc = start(upstream, port, Path(".bench/litellm"))
    print(f"litellm live on 127.0.0.1:{port} (pid {proc.pid}); Ctrl-C to stop", flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(proc)
