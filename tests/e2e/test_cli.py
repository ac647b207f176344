"""The `turnout` command as a user runs it: serve in its own process, chat,
models, backends, check-config, and SIGTERM draining a stream in flight."""

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import SECRET, TURNOUT, spawn
from tests.fakes import Gate, Reply, embedding_vector


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *TURNOUT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def served(ollama, tmp_path):
    """`turnout serve` in a child process, in front of the fake Ollama; yields (process, address)."""
    config = (
        f"shutdown_grace: 10s\nsessions: {{path: '{tmp_path}/sessions.db'}}\n"
        f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
        "routes:\n  - {name: chat, targets: [{backend: local, model: llama3.2:1b}]}\ndefault_route: chat\n"
    )
    async with spawn(config, tmp_path) as served:
        yield served.process, served.address


async def test_chat_prints_the_streamed_answer(served, ollama):
    _, address = served
    ollama.script(Gate("Hel", "lo"))
    chat = asyncio.create_task(run("chat", "--gateway", address, "say hello"))
    await ollama.hung.wait()
    ollama.release.set()
    code, out, err = await chat
    assert (code, out, err) == (0, "Hello\n", "")
    assert ollama.requests[-1].json["messages"] == [{"role": "user", "content": "say hello"}]


async def test_models_and_backends_print_tables(served):
    _, address = served
    code, out, _ = await run("models", "--gateway", address)
    assert code == 0 and "llama3.2:1b" in out and "local" in out
    code, out, _ = await run("backends", "--gateway", address)
    assert code == 0 and "healthy" in out and "ollama" in out



async def test_models_into_a_closed_pipe_exits_without_a_traceback(served):
    _, address = served
    read, write = os.pipe()
    os.close(read)  # as `turnout models | head -0`: the reader is gone before the first line
    try:
        process = await asyncio.create_subprocess_exec(
            *TURNOUT, "models", "--gateway", address, stdout=write, stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1 and err.decode() == ""

async def test_chat_reports_an_unknown_model_plainly(served):
    _, address = served
    code, out, err = await run("chat", "--gateway", address, "--model", "gpt-9", "hi")
    assert code == 1 and out == ""
    assert err.startswith("error: NOT_FOUND: no route or model named 'gpt-9'")


async def test_sigterm_drains_the_stream_in_flight_and_exits_0(served, ollama):
    process, address = served
    ollama.script(Gate("Hel", "lo"))
    chat = asyncio.create_task(run("chat", "--gateway", address, "hi"))
    await ollama.hung.wait()
    process.send_signal(signal.SIGTERM)
    while b"draining" not in (await process.stderr.readline()):
        pass
    ollama.release.set()
    assert (await chat)[:2] == (0, "Hello\n")
    assert await asyncio.wait_for(process.wait(), 15) == 0


async def test_check_config_names_the_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  - name: a\n    kind: ollama\n    url: http://x\n    wieght: 2\n")
    code, out, err = await run("check-config", str(bad))
    assert code == 2 and out == ""
    assert err.startswith("config error: backends[0].wieght (line 5): unknown key (known keys: api_key, ")
    assert ", weight)" in err


async def test_check_config_summarises_without_the_secret(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("backends:\n  - {name: cloud, kind: openai, url: 'https://api.example.com/v1', api_key: '${CLOUD_KEY}'}\n")
    code, out, err = await run("check-config", str(good), env={"CLOUD_KEY": SECRET})
    assert code == 0 and "backend cloud: openai https://api.example.com/v1" in out and "api_key=set" in out
    assert SECRET not in out + err


async def test_check_config_on_a_missing_file_says_so(tmp_path):
    code, _, err = await run("check-config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read config file" in err and "No such file" in err


def test_example_config_is_valid():
    from gateway import config

    loaded = config.load(Path(__file__).parents[2] / "turnout.example.yaml", env={"CLOUD_KEY": "x"})
    assert loaded.routes and loaded.backends


async def test_chat_flags_ask_for_json_reasoning_and_backend_options(served, ollama, tmp_path):
    _, address = served
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"answer": {"type": "string"}}}')
    ollama.script(Reply('{"answer": "hi"}'), Reply("{}"))
    code, out, _ = await run("chat", "--gateway", address, "--schema", f"@{schema}", "--think", "off",
                             "--options", '{"num_ctx": 8192}', "hi")
    assert (code, out) == (0, '{"answer": "hi"}\n')
    body = ollama.requests[-1].json
    assert (body["format"], body["think"], body["options"]) == (
        {"type": "object", "properties": {"answer": {"type": "string"}}}, False, {"num_ctx": 8192})
    code, out, _ = await run("chat", "--gateway", address, "--json", "--think", "high", "hi")
    assert (code, ollama.requests[-1].json["format"], ollama.requests[-1].json["think"]) == (0, "json", "high")


async def test_embed_prints_dimensions_and_first_values(served, ollama):
    _, address = served
    code, out, err = await run("embed", "--gateway", address, "--model", "llama3.2:1b", "--dimensions", "8",
                               "hello", "world")
    first, second = embedding_vector("hello", 8), embedding_vector("world", 8)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "llama3.2:1b -> local/llama3.2:1b, attempt 1, 2 tokens",
        "[0] 8 dimensions: [" + ", ".join(f"{v:.4f}" for v in first[:5]) + ", ...]",
        "[1] 8 dimensions: [" + ", ".join(f"{v:.4f}" for v in second[:5]) + ", ...]",
    ]
    assert ollama.requests[-1].json == {"model": "llama3.2:1b", "input": ["hello", "world"], "dimensions": 8}


async def test_chat_reports_bad_backend_options_plainly(served):
    _, address = served
    code, out, err = await run("chat", "--gateway", address, "--options", "num_ctx=1", "hi")
    assert code == 1 and out == ""
    assert err.startswith("error: INVALID_ARGUMENT: backend_options: is not valid JSON")


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_second_serve_on_a_served_port_refuses_in_one_line(ollama, tmp_path, workers):
    config = f"workers: {workers}\nsessions: {{store: memory}}\nbackends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
    async with spawn(config, tmp_path) as first:
        second = tmp_path / "second.yaml"
        second.write_text((tmp_path / "turnout.yaml").read_text().replace(first.metrics_address, "127.0.0.1:0"))
        code, _, err = await run("serve", "--config", str(second))
        assert first.process.returncode is None
    assert code == 1
    assert err.strip().splitlines() == [f"error: cannot listen on {first.address}: Address already in use "
                                        "(is another turnout serving it?)"]
