"""The flood soak's normal caller and its upstream (a FakeOllama serving model
"m"), in a process of their own so that their figures measure the gateway and
not the busy loop that runs the flood. Prints its upstream's URL and reads the
gateway's address; then for each line read (`calls N` or `seconds S`) makes
short Generates one after another on one channel and prints the seconds each
took as one JSON list."""

import asyncio
import json
import sys
import time

import grpc

from tests.e2e.helpers import ask
from tests.fakes import FakeOllama
from turnout.v1 import generate_pb2_grpc


async def calls(stub: generate_pb2_grpc.GenerateServiceStub, count: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    started = time.monotonic()
    while len(latencies) < count and time.monotonic() - started < seconds:
        start = time.perf_counter()
        async for _ in stub.Generate(ask(model="m"), timeout=30):
            pass
        latencies.append(time.perf_counter() - start)
    return latencies


async def main() -> None:
    loop = asyncio.get_running_loop()

    async def line() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    async with FakeOllama(models=["m"]) as upstream:
        print(upstream.url, flush=True)
        async with grpc.aio.insecure_channel(await line()) as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            while command := await line():
                kind, value = command.split()
                count, seconds = (float(value), float("inf")) if kind == "calls" else (float("inf"), float(value))
                print(json.dumps(await calls(stub, count, seconds)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
