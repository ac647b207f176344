"""The gRPC ceiling: a bare grpc.aio server that streams the same messages a
turnout Generate sends for one upstream stream (started, one delta per
chunk, completed), with no upstream at all. What Python gRPC itself costs.

    python -m bench.ceiling PORT [WORKERS [MESSAGES]]

With WORKERS > 1, that many processes share the port with SO_REUSEPORT, as
turnout's workers do. MESSAGES=coalesced sends what turnout sends for the same
upstream stream when its chunks arrive in one read (started, one delta with
all the text, completed): the floor of a gRPC round trip for turnout's output.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys

import grpc

from bench.upstream import CHUNKS, MODEL, PIECE
from turnout.v1 import generate_pb2, generate_pb2_grpc

STARTED = generate_pb2.GenerateResponse(started=generate_pb2.GenerateStarted(
    request_id="0" * 32, route=MODEL, backend="b", model=MODEL, attempt=1))
DELTA = generate_pb2.GenerateResponse(delta=generate_pb2.GenerateDelta(content=PIECE))
WHOLE = generate_pb2.GenerateResponse(delta=generate_pb2.GenerateDelta(content=PIECE * CHUNKS))
COMPLETED = generate_pb2.GenerateResponse(completed=generate_pb2.GenerateCompleted(
    finish_reason=generate_pb2.FINISH_REASON_STOP, usage=generate_pb2.Usage(prompt_tokens=10, completion_tokens=CHUNKS)))


class Ceiling(generate_pb2_grpc.GenerateServiceServicer):
    def __init__(self, coalesced: bool) -> None:
        self._deltas = [WHOLE] if coalesced else [DELTA] * CHUNKS

    async def Generate(self, request, context):
        yield STARTED
        for delta in self._deltas:
            yield delta
        yield COMPLETED


async def serve(port: int, reuse: bool, coalesced: bool) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse))])
    generate_pb2_grpc.add_GenerateServiceServicer_to_server(Ceiling(coalesced), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def worker(port: int, coalesced: bool) -> None:
    asyncio.run(serve(port, reuse=True, coalesced=coalesced))


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    coalesced = len(sys.argv) > 3 and sys.argv[3] == "coalesced"
    if workers == 1:
        asyncio.run(serve(port, reuse=False, coalesced=coalesced))
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=worker, args=(port, coalesced), daemon=True) for _ in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
