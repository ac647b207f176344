"""A key's concurrency slots come back on every path: cancelled at any point
of a stream, refused, failed or completed, the key is never locked out."""

import asyncio
import random

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import collect, failure
from tests.e2e.test_security import ALICE, BOB, bearer, keys_yaml
from tests.fakes import Reply
from turnout.v1 import generate_pb2

STREAMS = 60


def in_flight(c, key: str) -> float:
    return c.gateway.registry.get_sample_value("turnout_key_streams_in_flight", {"key": key}) or 0.0


async def settled(c, key: str) -> float:
    """The key's in-flight count once it stops falling (at most 10 s)."""
    for _ in range(200):
        if in_flight(c, key) == 0:
            return 0.0
        await asyncio.sleep(0.05)
    return in_flight(c, key)


async def cancel_after(c, responses: int, metadata) -> None:
    call = c.generate.Generate(
        generate_pb2.GenerateRequest(model="chat", messages=[generate_pb2.Message(role=1, content="hi")]),
        metadata=metadata,
    )
    seen = 0
    try:
        async for _ in call:
            seen += 1
            if seen >= responses:
                break
    except grpc.aio.AioRpcError:
        pass
    call.cancel()


async def test_streams_cancelled_at_random_points_give_every_slot_back(ollama):
    rng = random.Random(14)
    ollama.script(*(Reply(*(f"piece {i} " for i in range(40))) for _ in range(STREAMS)))
    yaml = backends_yaml(ollama) + keys_yaml(f", max_concurrent_streams: {STREAMS}")
    async with serve(yaml, env={"BOB_KEY": BOB}) as c:
        await asyncio.gather(*(cancel_after(c, rng.randint(0, 12), bearer(ALICE)) for _ in range(STREAMS)))
        assert await settled(c, "alice") == 0
        for _ in range(3):
            assert (await collect(c.generate.Generate(
                generate_pb2.GenerateRequest(model="chat", messages=[generate_pb2.Message(role=1, content="hi")]),
                metadata=bearer(ALICE))))[-1].WhichOneof("event") == "completed"


async def test_one_slot_key_is_usable_after_each_cancelled_stream(ollama):
    ollama.script(*(Reply(*(f"piece {i} " for i in range(40))) for _ in range(20)))
    async with serve(backends_yaml(ollama) + keys_yaml(", max_concurrent_streams: 1"), env={"BOB_KEY": BOB}) as c:
        for responses in range(1, 21):
            await cancel_after(c, responses % 5 + 1, bearer(ALICE))
            assert await settled(c, "alice") == 0
        refused = await failure(c.generate.Generate(
            generate_pb2.GenerateRequest(model="nope", messages=[]), metadata=bearer(ALICE)))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await settled(c, "alice") == 0
