"""A planted upstream secret (an API key and a password in a backend URL)
appears in no output: debug logs, errors, listings, metrics, check-config."""

import asyncio
import signal

import grpc
import httpx

from tests.e2e.conftest import TURNOUT, spawn
from tests.e2e.helpers import ask, collect
from tests.fakes import FakeOpenAI, HttpError, unused_port
from turnout.v1 import generate_pb2_grpc, model_pb2, model_pb2_grpc

PLANTED = "sk-planted-9f8e7d6c5b4a"
PASSWORD = "pw-planted-1a2b3c4d"


async def test_no_output_contains_a_planted_secret(tmp_path):
    outputs: list[str] = []
    async with FakeOpenAI(api_key="the-real-key") as refusing, FakeOpenAI() as failing:
        failing.script(*[HttpError(500, "boom")] * 3)
        url_with_password = failing.url.replace("http://", f"http://user:{PASSWORD}@")
        config = (
            "logging: {level: debug, format: json}\nsessions: {store: memory}\n"
            "backends:\n"
            f"  - {{name: refusing, kind: openai, url: '{refusing.url}', api_key: '${{PLANTED}}', models: [m1]}}\n"
            f"  - {{name: failing, kind: openai, url: '{url_with_password}', api_key: '${{PLANTED}}', models: [m2]}}\n"
            f"  - {{name: gone, kind: openai, url: 'http://127.0.0.1:{unused_port()}/v1', api_key: '${{PLANTED}}', "
            "models: [m3]}\n"
        )
        (tmp_path / "secret.yaml").write_text(config)
        check = await asyncio.create_subprocess_exec(
            *TURNOUT, "check-config", str(tmp_path / "secret.yaml"), env={"PLANTED": PLANTED, "PATH": ""},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        outputs += [part.decode() for part in await check.communicate()]
        async with spawn(config, tmp_path, env={"PLANTED": PLANTED}) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                for model in ("m1", "m2", "m3"):
                    try:
                        await collect(stub.Generate(ask(model=model)))
                    except grpc.aio.AioRpcError as exc:
                        outputs.append(f"{exc.code()} {exc.details()} {exc.trailing_metadata()}")
                models = model_pb2_grpc.ModelServiceStub(channel)
                outputs.append(str(await models.ListBackends(model_pb2.ListBackendsRequest())))
                outputs.append(str(await models.ListModels(model_pb2.ListModelsRequest())))
            async with httpx.AsyncClient() as client:
                outputs.append((await client.get(f"http://{gateway.metrics_address}/metrics")).text)
            gateway.process.send_signal(signal.SIGTERM)
            outputs.append((await gateway.process.stderr.read()).decode())
            await gateway.process.wait()
    everything = "\n".join(outputs)
    assert "HTTP 401" in everything and "HTTP 500" in everything and "unreachable" in everything
    assert "***@127.0.0.1" in everything, "ListBackends shows the redacted endpoint"
    assert PLANTED not in everything and PASSWORD not in everything
