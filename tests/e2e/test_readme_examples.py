"""The README's generation-control and embedding examples, run as written
(only the port changed) against a gateway in front of the fake Ollama."""

import asyncio
import re
import sys
from pathlib import Path

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.test_clients import buf, run  # noqa: F401  (buf is a fixture)
from tests.fakes import FakeOllama, Reply, embedding_vector

README = (Path(__file__).parents[2] / "README.md").read_text()


def example(pattern: str) -> str:
    found = re.search(pattern, README, re.S)
    assert found, f"the README has no example matching {pattern!r}"
    return found.group(1)


async def test_the_readme_buf_curl_control_example_reaches_ollama(buf, tmp_path):  # noqa: F811
    command = example(r"```sh\n(buf curl --protocol grpc \S+/Complete .*?)```")
    async with FakeOllama() as ollama:
        ollama.script(Reply('{"city": "Lyon"}'))
        async with serve(backends_yaml(ollama)) as c:
            shell = command.replace("buf curl", f"{buf} curl", 1).replace(":50051", f":{c.gateway.port}")
            code, out, err = await run("bash", "-c", shell, cwd=tmp_path)
    assert code == 0, err
    assert '"content": "{\\"city\\": \\"Lyon\\"}"' in out
    body = ollama.requests[-1].json
    assert (body["format"]["required"], body["think"], body["options"]) == (["city"], False, {"num_ctx": 8192})


async def test_the_readme_python_embed_example_prints_vectors(tmp_path):
    program = example(r"```python\n(import asyncio\n\nimport grpc\nfrom turnout.v1 import embedding_pb2.*?)```")
    async with FakeOllama(models=("nomic-embed-text",)) as ollama:
        async with serve(backends_yaml(ollama)) as c:
            script = tmp_path / "embed.py"
            script.write_text(program.replace(":50051", f":{c.gateway.port}"))
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    first, second = embedding_vector("first text"), embedding_vector("second text")
    assert out.decode().splitlines() == [f"4 {first[:3]}", f"4 {second[:3]}"]
