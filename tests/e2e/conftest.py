"""A real gateway on port 0 in front of loopback fake upstreams, called
through the generated stubs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from gateway import config as config_module
from gateway.server import Gateway
from tests.fakes import FakeOllama, FakeOpenAI, unused_port
from turnout.v1 import embedding_pb2_grpc, generate_pb2_grpc, model_pb2_grpc, session_pb2_grpc

SECRET = "sk-test-planted-secret-0123456789"
TURNOUT = [sys.executable, "-m", "gateway.cli"]


@dataclass
class Client:
    gateway: Gateway
    channel: grpc.aio.Channel
    generate: generate_pb2_grpc.GenerateServiceStub
    models: model_pb2_grpc.ModelServiceStub
    health: health_pb2_grpc.HealthStub
    sessions: session_pb2_grpc.SessionServiceStub
    embeddings: embedding_pb2_grpc.EmbeddingServiceStub


@contextlib.asynccontextmanager
async def serve(yaml_text: str, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """A gateway on that config (sessions in memory unless the config says otherwise)."""
    if "sessions:" not in yaml_text:
        yaml_text += "sessions: {store: memory}\n"
    config = config_module.parse(yaml_text, {"CLOUD_KEY": SECRET, **(env or {})})
    gateway = Gateway(dataclasses.replace(config, listen="127.0.0.1:0"))
    port = await gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Client(
                gateway,
                channel,
                generate_pb2_grpc.GenerateServiceStub(channel),
                model_pb2_grpc.ModelServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
                session_pb2_grpc.SessionServiceStub(channel),
                embedding_pb2_grpc.EmbeddingServiceStub(channel),
            )
    finally:
        await gateway.stop(grace=0)


def backends_yaml(ollama: FakeOllama | None = None, openai: FakeOpenAI | None = None) -> str:
    lines = ["backends:"]
    if ollama is not None:
        lines.append(f"  - {{name: local, kind: ollama, url: '{ollama.url}'}}")
    if openai is not None:
        lines.append(f"  - {{name: cloud, kind: openai, url: '{openai.url}', api_key: '${{CLOUD_KEY}}', priority: 1}}")
    return "\n".join(lines) + "\n"


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as fake:
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=SECRET) as fake:
        yield fake


@dataclass
class Spawned:
    process: asyncio.subprocess.Process
    address: str
    metrics_address: str
    config: Path


@contextlib.asynccontextmanager
async def spawn(
    config_text: str, directory: Path, name: str = "turnout", env: dict[str, str] | None = None
) -> AsyncIterator[Spawned]:
    """`turnout serve` in a child process on free ports, with `config_text`
    (which must not set `listen` or `metrics_listen`); yields once it listens.
    It runs in a process group of its own, killed whole at the end: its
    workers too, even if a test failed with them still serving."""
    address, metrics_address = f"127.0.0.1:{unused_port()}", f"127.0.0.1:{unused_port()}"
    config = directory / f"{name}.yaml"
    config.write_text(f"listen: {address}\nmetrics_listen: {metrics_address}\n{config_text}")
    process = await asyncio.create_subprocess_exec(
        *TURNOUT, "serve", "--config", str(config), stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        while b"listening on" not in (line := await asyncio.wait_for(process.stderr.readline(), 30)):
            assert line, f"{name} exited before listening"
        yield Spawned(process, address, metrics_address, config)
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of it is left
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 30)
