"""The flood soak's normal caller, in a process of its own so that its figures
measure the gateway and not the loop that runs the flood: short Generates one
after another on one channel, `--calls` of them or for `--seconds`; prints the
seconds each took as one JSON list."""

import argparse
import asyncio
import json
import time

import grpc

from tests.e2e.helpers import ask
from turnout.v1 import generate_pb2_grpc


async def calls(address: str, count: int | None, seconds: float | None) -> list[float]:
    latencies: list[float] = []
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        while len(latencies) < (count or float("inf")) and time.monotonic() - started < (seconds or float("inf")):
            start = time.perf_counter()
            async for _ in stub.Generate(ask(model="m"), timeout=30):
                pass
            latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--calls", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(calls(args.address, args.calls, args.seconds))))


if __name__ == "__main__":
    main()
