"""`workers: 2`: no worker outlives the process that supervises it, and one
that dies is started again while the others serve."""

import asyncio
import json
import os
import signal

import grpc

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask, collect, text
from turnout.v1 import generate_pb2_grpc


async def test_workers_exit_when_their_parent_is_killed(ollama, tmp_path):
    config = f"workers: 2\nsessions: {{store: memory}}\nbackends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
    async with spawn(config, tmp_path) as gateway:
        gateway.process.kill()  # SIGKILL: the parent gets no chance to stop its workers
        assert await asyncio.wait_for(gateway.process.wait(), 20) == -9
        # Every worker shares the parent's stderr: it reaches its end once the last worker has exited.
        await asyncio.wait_for(gateway.process.stderr.read(), 30)


async def _line(stderr: asyncio.StreamReader, words: str) -> dict:
    """The next JSON log line whose message contains `words`."""
    while True:
        raw = await asyncio.wait_for(stderr.readline(), 30)
        assert raw, "the gateway's processes all exited"
        if raw.startswith(b"{") and words in (line := json.loads(raw))["message"]:
            return line


async def test_a_killed_worker_is_restarted_while_the_others_serve(ollama, tmp_path):
    config = ("workers: 2\nlogging: {format: json}\nsessions: {store: memory}\n"
              f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n")
    async with spawn(config, tmp_path) as gateway:
        victim = (await _line(gateway.process.stderr, "listening on"))["pid"]
        os.kill(victim, signal.SIGKILL)
        exited = await _line(gateway.process.stderr, "exited with code")
        assert f"pid {victim}" in exited["message"] and "code -9" in exited["message"]
        async with grpc.aio.insecure_channel(gateway.address) as channel:  # the other worker serves meanwhile
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            assert text(await collect(stub.Generate(ask(model="llama3.2:1b"), timeout=30))) == "Hello world"
        restarted = await _line(gateway.process.stderr, "restarted as pid")
        successor = int(restarted["message"].rsplit(" ", 1)[1])
        assert successor != victim
        while (await _line(gateway.process.stderr, "listening on"))["pid"] != successor:
            pass
        gateway.process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(gateway.process.stderr.read(), 30)
        assert await asyncio.wait_for(gateway.process.wait(), 30) == 0, rest.decode()
