"""Opens N concurrent Generate streams, in batches of 100 (grpc.aio cancels
about 9% of 2,000 brand-new RPCs started in the same instant, even with a
bare server), waits until every one has received its first chunk (so each
holds an open upstream stream), reads the gateway's RSS, then cancels them
all. Prints one JSON object.

    python -m bench.hold ADDRESS N GATEWAY_PID
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from bench.load import CHANNELS
from bench.run import rss_mb
from bench.upstream import MODEL
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc

BATCH = 100


async def main(address: str, streams: int, pid: int) -> None:
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [generate_pb2_grpc.GenerateServiceStub(c) for c in channels]
    request = generate_pb2.GenerateRequest(
        model=MODEL, messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")])
    async def first_delta(call) -> None:
        while not (await call.read()).HasField("delta"):
            pass

    calls = []
    for start in range(0, streams, BATCH):
        batch = [stubs[i % CHANNELS].Generate(request, timeout=600) for i in range(start, min(start + BATCH, streams))]
        await asyncio.wait_for(asyncio.gather(*(first_delta(call) for call in batch)), 60)
        calls += batch
    held = rss_mb(pid)
    for call in calls:
        call.cancel()
    await asyncio.gather(*(c.close() for c in channels))
    print(json.dumps({"rss_mb": held}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
