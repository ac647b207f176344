"""Failover figures: sequential traffic on a two-tier route (local Ollama
first, cloud after); the local backend dies, then comes back. Prints how many
calls the caller saw fail, how many were retried, how long until the dead
backend was ejected, and how long until traffic returned after it recovered.

    .venv/bin/python -m bench.failover
"""

from __future__ import annotations

import asyncio
import time

import grpc

from gateway import config as config_module
from gateway.server import Gateway
from tests.fakes import FakeOllama
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc

CONFIG = """\
listen: 127.0.0.1:0
health_check: {{interval: 1s, timeout: 500ms}}
outlier_detection: {{consecutive_failures: 3, base_ejection: 2s, max_ejection: 30s}}
backends:
  - {{name: local, kind: ollama, url: '{local}'}}
  - {{name: cloud, kind: ollama, url: '{cloud}', priority: 1}}
routes:
  - {{name: chat, strategy: priority, targets: [{{backend: local, model: m}}, {{backend: cloud, model: m}}]}}
"""


async def main() -> None:
    async with FakeOllama(models=["m"]) as local, FakeOllama(models=["m"]) as cloud:
        config = config_module.parse(CONFIG.format(local=local.url, cloud=cloud.url), {})
        gateway = Gateway(config)
        port = await gateway.start()
        request = generate_pb2.GenerateRequest(
            model="chat", messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")]
        )
        log: list[tuple[float, str, int, str]] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)

            async def call() -> None:
                try:
                    first = await stub.Generate(request, timeout=5).read()
                    log.append((time.monotonic(), first.started.backend, first.started.attempt, "OK"))
                except grpc.aio.AioRpcError as exc:
                    log.append((time.monotonic(), "-", 0, exc.code().name))

            async def traffic(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    await call()
                    await asyncio.sleep(0.01)

            await traffic(0.5)
            killed = time.monotonic()
            await local.__aexit__(None, None, None)
            await traffic(1.0)
            await local.__aenter__()
            revived = time.monotonic()
            await traffic(4.0)
        await gateway.stop(grace=0)

    after_kill = [entry for entry in log if entry[0] >= killed]
    retried = [e for e in after_kill if e[2] > 1]
    first_skip = next(e for e in after_kill if e[0] > retried[-1][0]) if retried else None
    back = next((e for e in log if e[0] >= revived and e[1] == "local"), None)
    errors = [e for e in log if e[3] != "OK"]
    print(f"calls: {len(log)}  caller-visible errors: {len(errors)}")
    print(f"calls retried after the kill: {len(retried)} (each paid one refused connection, then cloud)")
    if first_skip:
        print(f"time from kill to ejection (first call sent straight to cloud): {(first_skip[0] - killed) * 1000:.0f} ms")
    if back:
        print(f"time from restart to traffic back on local: {(back[0] - revived) * 1000:.0f} ms "
              "(bounded by the 2 s ejection and the 1 s health probe)")


if __name__ == "__main__":
    asyncio.run(main())
