"""Clients that are not Python: the Node example in examples/node (protos loaded
at run time), the Go example in examples/go (the generated stubs in gen/go) and
`buf curl` through server reflection (no .proto files at all), each against a
real gateway in front of the fake Ollama. Each installs its npm packages on
first use, so a fresh clone needs no extra step; Go and its gRPC packages come
from Debian (scripts/system-deps.sh)."""

import asyncio
import filecmp
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import backends_yaml, serve
from tests.fakes import Gate

ROOT = Path(__file__).parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
TOOLS = ROOT / ".tools"
BUF = TOOLS / "node_modules" / ".bin" / "buf"
DEBIAN_GOPATH = "/usr/share/gocode"
GO_PACKAGES = "golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc"
REQUEST = {"model": "llama3.2:1b", "messages": [{"role": "ROLE_USER", "content": "say hello"}]}


async def run(*args: str, cwd: Path = ROOT, timeout: float = 60, env: dict[str, str] | None = None
              ) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(args)} did not finish in {timeout} s") from None
    return process.returncode, out.decode(), err.decode()


async def npm_install(directory: Path, marker: Path, command: str) -> None:
    """`npm <command>` in `directory` unless `marker` exists already, as the
    Makefile does; fails the test with npm's own words if it cannot."""
    if marker.exists():
        return
    if shutil.which("npm") is None:
        pytest.fail(f"npm is not on PATH; {directory.relative_to(ROOT)} needs Node 20 and npm")
    code, out, err = await run("npm", command, "--no-audit", "--no-fund", "--loglevel=error", cwd=directory, timeout=300)
    if code != 0 or not marker.exists():
        pytest.fail(f"`npm {command}` in {directory.relative_to(ROOT)} failed (exit {code}):\n{out}{err}")


@pytest.fixture
async def chat_js() -> Path:
    """examples/node/chat.js, its packages installed as `make examples` does."""
    await npm_install(NODE_EXAMPLE, NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js", "ci")
    return NODE_EXAMPLE / "chat.js"


@pytest.fixture
async def buf() -> Path:
    """.tools' buf (and protoc-gen-es), installed as `make lint` does (`npm
    install`: .tools' package-lock.json may lack other platforms' optional
    packages, so `npm ci` refuses it)."""
    await npm_install(TOOLS, TOOLS / "node_modules" / ".bin" / "protoc-gen-es", "install")
    return BUF


@pytest.fixture
async def gateway(ollama):
    """`host:port` of an in-process gateway in front of the fake Ollama (which
    serves llama3.2:1b and answers "Hello", " world")."""
    async with serve(backends_yaml(ollama)) as c:
        yield f"127.0.0.1:{c.gateway.port}"


async def test_node_client_streams_the_answer(chat_js, gateway, ollama):
    code, out, err = await run("node", str(chat_js), "--gateway", gateway, "--model", "llama3.2:1b", "say", "hello")
    assert (code, out) == (0, "Hello world\n"), err
    assert "local/llama3.2:1b" in err and "finish STOP" in err and "ttft " in err
    assert ollama.requests[-1].json["messages"] == [{"role": "user", "content": "say hello"}]


async def test_node_client_reports_an_unknown_model(chat_js, gateway):
    code, out, err = await run("node", str(chat_js), "--gateway", gateway, "--model", "gpt-9", "hi")
    assert (code, out) == (1, "")
    assert err.startswith("error: NOT_FOUND: no route or model named 'gpt-9'"), err


def buf_generate(buf: Path, gateway: str, request: dict, *flags: str) -> list[str]:
    """The command line the README gives: the gRPC protocol (which also implies
    HTTP/2 without TLS) and the schema from server reflection, the default."""
    return [str(buf), "curl", "--protocol", "grpc", *flags, "-d", json.dumps(request),
            f"http://{gateway}/turnout.v1.GenerateService/Generate"]


def events(out: str) -> list[dict]:
    """buf curl prints each response message as its own indented JSON document."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (i := len(out) - len(out[i:].lstrip())) < len(out):
        event, i = decoder.raw_decode(out, i)
        found.append(event)
    return found


async def test_buf_curl_calls_generate_through_reflection(buf, gateway, tmp_path):
    # From an empty directory: no buf.yaml and no .proto files anywhere near, so
    # the schema can only come from the server's reflection service.
    code, out, err = await run(*buf_generate(buf, gateway, REQUEST), cwd=tmp_path)
    assert code == 0, err
    stream = events(out)
    kinds = [next(iter(event)) for event in stream]
    assert kinds[0] == "started" and kinds[-1] == "completed" and set(kinds[1:-1]) == {"delta"}, out
    assert stream[0]["started"]["backend"] == "local" and stream[0]["started"]["model"] == "llama3.2:1b"
    assert "".join(event["delta"].get("content", "") for event in stream[1:-1]) == "Hello world"
    assert stream[-1]["completed"]["finishReason"] == "FINISH_REASON_STOP"


async def test_buf_curl_lists_services_and_methods_through_reflection(buf, gateway, tmp_path):
    # Without --protocol grpc, buf curl speaks Connect to the reflection service
    # too, and the gRPC server resets the stream (INTERNAL_ERROR).
    code, out, err = await run(str(buf), "curl", "--protocol", "grpc", "--list-services", f"http://{gateway}", cwd=tmp_path)
    assert code == 0, err
    assert {"turnout.v1.GenerateService", "turnout.v1.ModelService", "turnout.v1.SessionService"} <= set(out.split())
    code, out, err = await run(str(buf), "curl", "--protocol", "grpc", "--list-methods", f"http://{gateway}", cwd=tmp_path)
    assert code == 0, err
    assert {"turnout.v1.GenerateService/Generate", "turnout.v1.ModelService/ListModels"} <= set(out.split())


async def test_buf_curl_reports_an_unknown_model_as_not_found(buf, gateway, tmp_path):
    code, _, err = await run(*buf_generate(buf, gateway, {**REQUEST, "model": "gpt-9"}), cwd=tmp_path)
    assert code == 5 << 3, err  # buf curl exits with the gRPC status code shifted left by 3
    assert "not_found" in err.lower() and "gpt-9" in err


async def test_both_clients_send_an_api_key(chat_js, buf, ollama, tmp_path):
    """With auth on: the Node example's --api-key, and buf curl's header sent to
    reflection too (`--reflect-header '*'`; reflection needs an admin key)."""
    auth = "auth:\n  keys:\n    - {name: ops, key_env: OPS_KEY, admin: true}\n"
    async with serve(backends_yaml(ollama) + auth, env={"OPS_KEY": "ops-key-1"}) as c:
        gateway = f"127.0.0.1:{c.gateway.port}"
        chat = ("node", str(chat_js), "--gateway", gateway, "--model", "llama3.2:1b", "hi")
        assert (await run(*chat, "--api-key", "ops-key-1"))[:2] == (0, "Hello world\n")
        code, _, err = await run(*chat)
        assert code == 1 and err.startswith("error: UNAUTHENTICATED:"), err

        key = ("-H", "Authorization: Bearer ops-key-1", "--reflect-header", "*")
        code, out, err = await run(*buf_generate(buf, gateway, REQUEST, *key), cwd=tmp_path)
        assert code == 0 and "Hello world" in out, err
        code, _, err = await run(*buf_generate(buf, gateway, REQUEST, "-H", "Authorization: Bearer ops-key-1"), cwd=tmp_path)
        # Reflection went without the key and was refused (UNAUTHENTICATED); buf
        # curl words that as a schema problem, a usage error (exit 1).
        assert code == 1 and 'failed to find service named "turnout.v1.GenerateService"' in err, err


async def test_node_client_prints_each_delta_as_it_arrives(chat_js, gateway, ollama):
    ollama.script(Gate("Hel", "lo"))  # sends "Hel", "lo", then holds the end until released
    process = await asyncio.create_subprocess_exec(
        "node", str(chat_js), "--gateway", gateway, "--model", "llama3.2:1b", "hi", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.wait_for(ollama.hung.wait(), 30)
        # The answer is on stdout while the stream is still open: no buffering.
        assert await asyncio.wait_for(process.stdout.readexactly(5), 10) == b"Hello"
    finally:
        ollama.release.set()
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, out) == (0, b"\n"), err


@pytest.fixture
async def go_chat(tmp_path) -> Path:
    """examples/go built offline as Debian builds Go: GOPATH mode over Debian's
    packaged sources in /usr/share/gocode, this checkout linked in as
    github.com/turnout/turnout (so gen/go is the protos' go_package)."""
    if shutil.which("go") is None or not Path(DEBIAN_GOPATH, "src/google.golang.org/grpc").is_dir():
        pytest.fail(f"Go or Debian's Go gRPC packages are missing: scripts/system-deps.sh installs {GO_PACKAGES}")
    link = tmp_path / "gopath" / "src" / "github.com" / "turnout" / "turnout"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    binary = tmp_path / "chat"
    env = {"GO111MODULE": "off", "GOPATH": f"{tmp_path / 'gopath'}:{DEBIAN_GOPATH}", "GOPROXY": "off", "GOFLAGS": ""}
    code, out, err = await run("go", "build", "-o", str(binary), "github.com/turnout/turnout/examples/go",
                               env=env, timeout=600)
    assert code == 0, f"go build failed:\n{out}{err}"
    return binary


async def test_go_client_streams_the_answer_and_reports_an_unknown_model(go_chat, gateway, ollama):
    code, out, err = await run(str(go_chat), "-gateway", gateway, "-model", "llama3.2:1b", "say", "hello")
    assert (code, out) == (0, "Hello world\n"), err
    assert "local/llama3.2:1b" in err and "finish STOP" in err and "ttft " in err
    assert ollama.requests[-1].json["messages"] == [{"role": "user", "content": "say hello"}]
    code, out, err = await run(str(go_chat), "-gateway", gateway, "-model", "gpt-9", "hi")
    assert (code, out) == (1, "")
    assert err.startswith("error: NOT_FOUND: no route or model named 'gpt-9'"), err


async def test_the_go_and_typescript_stubs_are_what_buf_generate_makes(buf, tmp_path):
    code, out, err = await run(str(buf), "generate", "--template", "buf.gen.yaml", "-o", str(tmp_path), timeout=300)
    assert code == 0, out + err
    for language, suffix in (("go", ".go"), ("ts", ".ts")):
        generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "gen" / language).rglob(f"*{suffix}"))
        committed = sorted(p.relative_to(ROOT) for p in (ROOT / "gen" / language).rglob(f"*{suffix}"))
        assert generated and generated == committed, f"gen/{language} differs from the protos: run `make proto`"
        stale = [str(name) for name in generated if not filecmp.cmp(tmp_path / name, ROOT / name, shallow=False)]
        assert not stale, f"stale: {stale}: run `make proto`"
