"""The operator's commands against a real gateway in front of the fake Ollama:
routes (and the ListRoutes RPC), pull with progress, rm, what an unreachable
backend looks like, the default model, and an error after partial output."""

import asyncio
import os

from tests.e2e.conftest import TURNOUT, backends_yaml, serve
from tests.fakes import FakeOllama, MidStreamError, unused_port
from turnout.v1 import common_pb2, generate_pb2, model_pb2

ROUTES = (
    "routes:\n"
    "  - name: chat\n    strategy: priority\n    affinity: session\n"
    "    targets: [{backend: local, model: llama3.2:1b, weight: 2}, {backend: local, model: qwen2.5:0.5b, priority: 1}]\n"
    "  - {name: code, targets: [{backend: local, model: qwen2.5:0.5b}], retry: {attempts: 2}}\n"
    "rules:\n  - {when: {task: coding}, route: code}\n  - {when: {match: '(?i)python'}, route: code}\n"
    "default_route: chat\n"
)


async def turnout(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *TURNOUT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env={**os.environ, "TURNOUT_ADDR": "", "TURNOUT_API_KEY": ""},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, out.decode(), err.decode()


async def test_list_routes_returns_routes_targets_rules_and_the_default(ollama):
    async with serve(backends_yaml(ollama) + ROUTES) as c:
        response = await c.models.ListRoutes(model_pb2.ListRoutesRequest())
    chat, code = response.routes
    assert (chat.name, chat.strategy, chat.affinity, chat.attempts, chat.is_default) == (
        "chat", "priority", "session", 3, True)
    assert [(t.backend, t.model, t.weight, t.priority) for t in chat.targets] == [
        ("local", "llama3.2:1b", 2, 0), ("local", "qwen2.5:0.5b", 1, 1)]
    assert not chat.rules
    assert (code.name, code.attempts, code.is_default) == ("code", 2, False)
    assert [(r.task, r.match) for r in code.rules] == [("coding", ""), ("", "(?i)python")]


async def test_routes_command_prints_the_table(ollama):
    async with serve(backends_yaml(ollama) + ROUTES) as c:
        code, out, err = await turnout("routes", "--gateway", f"127.0.0.1:{c.gateway.port}")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("ROUTE") and len(lines) == 3
    assert lines[1].startswith("chat (default)") and "local/llama3.2:1b w2 p0, local/qwen2.5:0.5b w1 p1" in lines[1]
    assert lines[2].startswith("code ") and lines[2].endswith("task=coding, match=/(?i)python/")


async def test_routes_command_without_routes_says_models_are_routed_by_name(ollama):
    async with serve(backends_yaml(ollama)) as c:
        code, out, _ = await turnout("routes", "--gateway", f"127.0.0.1:{c.gateway.port}")
    assert code == 0 and out.startswith("no routes configured")


async def test_pull_shows_progress_and_rm_deletes(ollama):
    async with serve(backends_yaml(ollama)) as c:
        gateway = ("--gateway", f"127.0.0.1:{c.gateway.port}")
        code, out, err = await turnout("pull", "qwen2.5:0.5b", *gateway)
        assert (code, out) == (0, "pulled qwen2.5:0.5b onto local\n"), err
        # Not a terminal: the statuses line by line, no bar redrawn with \r.
        assert "pulling manifest" in err and "writing manifest" in err and "\r" not in err
        assert ollama.requests[-2].json == {"model": "qwen2.5:0.5b", "stream": True}
        assert "qwen2.5:0.5b" in ollama.models
        code, out, err = await turnout("rm", "qwen2.5:0.5b", "--backend", "local", *gateway)
        assert (code, out) == (0, "deleted qwen2.5:0.5b from local\n"), err
        assert "qwen2.5:0.5b" not in ollama.models
        code, out, err = await turnout("rm", "qwen2.5:0.5b", *gateway)
        assert code == 1 and err.startswith("error: NOT_FOUND: backend 'local' has no model 'qwen2.5:0.5b'"), err


async def test_an_unreachable_backend_is_named_in_errors_and_in_models():
    down = f"http://127.0.0.1:{unused_port()}"
    async with serve(f"backends:\n  - {{name: ollama, kind: ollama, url: '{down}'}}\n") as c:
        gateway = ("--gateway", f"127.0.0.1:{c.gateway.port}")
        code, out, err = await turnout("chat", "-m", "llama3.2", "hi", *gateway)
        assert code == 1 and out == ""
        assert err.startswith("error: UNAVAILABLE: no route or model named 'llama3.2'"), err
        assert f"could not list the models of ollama at {down}" in err
        code, out, err = await turnout("chat", "hi", *gateway)
        assert code == 1 and err.startswith("error: UNAVAILABLE: model is empty"), err
        code, out, err = await turnout("models", *gateway)
        assert code == 1 and out.startswith("MODEL") and len(out.splitlines()) == 1
        assert err == f"could not list the models of backend 'ollama' at {down}: it is down\n"


async def test_a_model_that_exists_nowhere_stays_not_found_when_every_backend_answers(ollama):
    async with serve(backends_yaml(ollama)) as c:
        code, _, err = await turnout("chat", "-m", "gpt-9", "hi", "--gateway", f"127.0.0.1:{c.gateway.port}")
    assert code == 1 and err.startswith("error: NOT_FOUND: no route or model named 'gpt-9'") and "could not" not in err


async def test_the_default_model_is_a_chat_model_never_an_embedding_model():
    async with FakeOllama(models=("all-minilm-embed:latest", "nomic-embed-text:latest", "qwen2.5:0.5b")) as ollama:
        async with serve(backends_yaml(ollama)) as c:
            request = generate_pb2.GenerateRequest(
                messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")])
            events = [e async for e in c.generate.Generate(request)]
    assert events[0].started.model == "qwen2.5:0.5b"


async def test_an_error_after_partial_output_starts_on_its_own_line(ollama):
    ollama.script(MidStreamError("Hel", message="CUDA error", hold=True))
    async with serve(backends_yaml(ollama)) as c:
        process = await asyncio.create_subprocess_exec(
            *TURNOUT, "chat", "-m", "llama3.2:1b", "hi", "--gateway", f"127.0.0.1:{c.gateway.port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        try:
            assert await asyncio.wait_for(process.stdout.readexactly(3), 30) == b"Hel"
        finally:
            ollama.release.set()
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, out) == (1, b"\n")
    assert err.decode().startswith("error: UNAVAILABLE:") and "CUDA error" in err.decode(), err


async def test_piped_stdin_is_still_one_prompt(ollama):
    async with serve(backends_yaml(ollama)) as c:
        process = await asyncio.create_subprocess_exec(
            *TURNOUT, "chat", "-m", "llama3.2:1b", "--gateway", f"127.0.0.1:{c.gateway.port}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(b"first line\nsecond line\n"), 30)
    assert (process.returncode, out, err) == (0, b"Hello world\n", b"")
    assert ollama.requests[-1].json["messages"] == [{"role": "user", "content": "first line\nsecond line\n"}]


async def test_ps_lists_what_each_ollama_host_has_loaded():
    async with FakeOllama(models=["m", "n"]) as a, FakeOllama(models=["m"]) as b:
        a.loaded, b.loaded = ["m:latest", "n:latest"], []
        yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}'}}\n  - {{name: b, kind: ollama, url: '{b.url}'}}\n"
                "scheduler: {poll_interval: 50ms}\n")
        async with serve(yaml) as c:
            code, out, err = await turnout("ps", "--gateway", f"127.0.0.1:{c.gateway.port}")
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [["MODEL", "BACKEND"], ["m:latest", "a"], ["n:latest", "a"]]


async def test_health_exits_0_when_serving_and_1_when_the_gateway_cannot_be_reached(ollama):
    async with serve(backends_yaml(ollama)) as c:
        assert await turnout("health", "--gateway", f"127.0.0.1:{c.gateway.port}") == (0, "SERVING\n", "")
    code, out, err = await turnout("health", "--gateway", f"127.0.0.1:{unused_port()}", "--timeout", "2")
    assert code == 1 and out == "" and err.startswith("error: "), err
