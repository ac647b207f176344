"""The load generator, run in its own process so it never shares an event
loop with what it measures. Prints one JSON object.

    python -m bench.load grpc 127.0.0.1:50051 latency --requests 300
    python -m bench.load ollama http://127.0.0.1:18080 throughput --concurrency 64 --seconds 10
    python -m bench.load openai http://127.0.0.1:4000/v1 latency --key sk-...

latency: one stream at a time; per stream, the time to the first chunk and
to the end. throughput: `concurrency` streams in flight for `seconds`;
streams and chunks per second. A chunk is one upstream content piece
("tok "), counted in what arrives, so coalesced gRPC messages count the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
import grpc

from bench.upstream import MODEL, PIECE
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc

MARK = PIECE.encode()
CHANNELS = 8


class Grpc:
    def __init__(self, target: str) -> None:
        self.channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(CHANNELS)]
        self.stubs = [generate_pb2_grpc.GenerateServiceStub(c) for c in self.channels]
        self.request = generate_pb2.GenerateRequest(
            model=MODEL, messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content="hi")])
        self.next = 0

    async def stream(self) -> tuple[float, int]:
        """Seconds to the first chunk, and the chunks received."""
        self.next += 1
        start, first, chunks = time.perf_counter(), 0.0, 0
        async for response in self.stubs[self.next % CHANNELS].Generate(self.request, timeout=60):
            if response.HasField("delta"):
                if not chunks:
                    first = time.perf_counter() - start
                chunks += response.delta.content.count(PIECE)
        return first, chunks

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


class Http:
    def __init__(self, kind: str, base: str, key: str) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.url = f"{base}/api/chat" if kind == "ollama" else f"{base}/chat/completions"
        self.body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def stream(self) -> tuple[float, int]:
        start, first, chunks = time.perf_counter(), 0.0, 0
        async with self.session.post(self.url, json=self.body, headers=self.headers) as response:
            response.raise_for_status()
            async for data in response.content.iter_any():
                if not chunks and MARK in data:
                    first = time.perf_counter() - start
                chunks += data.count(MARK)
        return first, chunks

    async def close(self) -> None:
        await self.session.close()


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def latency(client, requests: int, warmup: int = 30) -> dict:
    for _ in range(warmup):
        await client.stream()
    firsts, totals = [], []
    for _ in range(requests):
        start = time.perf_counter()
        first, _ = await client.stream()
        totals.append(time.perf_counter() - start)
        firsts.append(first)
    return {"requests": requests, "p50_ms": _ms(totals, 0.5), "p99_ms": _ms(totals, 0.99),
            "mean_ms": round(statistics.fmean(totals) * 1000, 3), "first_chunk_p50_ms": _ms(firsts, 0.5)}


async def throughput(client, concurrency: int, seconds: float) -> dict:
    streams = chunks = errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal streams, chunks, errors
        while time.perf_counter() < stop:
            try:
                _, got = await client.stream()
                streams += 1
                chunks += got
            except Exception:
                errors += 1

    for _ in range(concurrency):
        await client.stream()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "streams_per_s": round(streams / elapsed, 1),
            "chunks_per_s": round(chunks / elapsed, 1), "errors": errors}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["grpc", "ollama", "openai"])
    parser.add_argument("target")
    parser.add_argument("mode", choices=["latency", "throughput"])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    client = Grpc(args.target) if args.kind == "grpc" else Http(args.kind, args.target, args.key)
    try:
        if args.mode == "latency":
            result = await latency(client, args.requests)
        else:
            result = await throughput(client, args.concurrency, args.seconds)
    finally:
        await client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
