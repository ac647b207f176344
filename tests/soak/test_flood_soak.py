"""`make soak`: 200 streams whose callers read slowly (one message a second,
each on a connection of its own), each fed by an upstream that sends as fast as
it can, against a gateway in a process of its own, while a normal caller (a
third process, so that the flood's own loop does not slow it) makes one short
Generate after another. Prints the normal caller's p50/p99 unloaded and under
the flood, the ratio of the p99s, and the gateway's RSS.

Asserted: the normal caller is not starved (the defect was a loop pinned for
> 20 s with nothing completed): p99 under STARVED seconds; its p99 under the
flood is within SLOWER times the unloaded one; and the gateway's RSS grows by
less than RSS_GROWTH while the flood runs (it held every stream's whole answer:
71 -> 1,135 MiB). Issue 14's target is 2x, printed beside the ratio: measured
0.5-1.4x, but this machine's 2 cores are shared, and another job running during
the flood and not during the unloaded calls moves the ratio by that much, so
the assertion takes SLOWER = 4x (without adapters/turns.py's pauses: 6.9x; with
no turns at all: 44x)."""

import asyncio
import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import AsyncIterator

import grpc
import pytest

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask
from tests.fakes import FakeOllama, Flood
from turnout.v1 import generate_pb2_grpc

STREAMS = 200
READ_EVERY = 1.0
FLOOD_SECONDS = 30.0
UNLOADED_CALLS = 1000
STARVED = 5.0  # seconds: a p99 past this means the flood starves other callers
SLOWER = 4.0  # the most a p99 under the flood may be, in unloaded p99s (the target is 2)
RSS_GROWTH = 400  # MiB for the 200 streams: what aiohttp buffers per stream (~0.5 MiB) with room to spare


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class NormalCaller:
    """tests/soak/normal_caller.py in a process of its own: `url` is its
    upstream's; `connect` gives it the gateway's address; `run("calls N")` or
    `run("seconds S")` returns the seconds each of its calls took."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process, self.url = process, url

    def connect(self, address: str) -> None:
        self.process.stdin.write(address.encode() + b"\n")

    async def run(self, command: str) -> list[float]:
        self.process.stdin.write(command.encode() + b"\n")
        return json.loads(await asyncio.wait_for(self.process.stdout.readline(), FLOOD_SECONDS + 60))


@contextlib.asynccontextmanager
async def normal_caller() -> AsyncIterator[NormalCaller]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.soak.normal_caller", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    try:
        yield NormalCaller(process, (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip())
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 30)


async def slow_reader(address: str, flowing: asyncio.Event, received: list[int]) -> None:
    """One caller: a connection of its own (grpc shares one between channels to
    the same address otherwise), one message read a second."""
    async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        call = generate_pb2_grpc.GenerateServiceStub(channel).Generate(ask(model="f"), timeout=600)
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for response in call:
                received[0] += len(response.delta.content)
                flowing.set()
                await asyncio.sleep(READ_EVERY)


def p(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000


@pytest.mark.soak
async def test_slow_callers_of_flooding_upstreams_do_not_starve_a_normal_caller(tmp_path):
    async with FakeOllama(models=["f"]) as flood, normal_caller() as normal:
        flood.script(*[Flood()] * STREAMS)
        config = (f"backends:\n  - {{name: flood, kind: ollama, url: '{flood.url}'}}\n"
                  f"  - {{name: ok, kind: ollama, url: '{normal.url}'}}\n"
                  "routes:\n  - {name: f, strategy: weighted_round_robin, targets: [{backend: flood, model: f}]}\n"
                  "  - {name: m, strategy: weighted_round_robin, targets: [{backend: ok, model: m}]}\n"
                  "sessions: {store: memory}\n")
        async with spawn(config, tmp_path) as served:
            logs = asyncio.create_task(served.process.stderr.read())
            normal.connect(served.address)
            unloaded = await normal.run(f"calls {UNLOADED_CALLS}")
            rss_before = rss_mib(served.process.pid)
            received, flowing = [0], [asyncio.Event() for _ in range(STREAMS)]
            readers = [asyncio.create_task(slow_reader(served.address, f, received)) for f in flowing]
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flowing)), 120)
            loaded = await normal.run(f"seconds {FLOOD_SECONDS}")
            rss_during = rss_mib(served.process.pid)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers)
            logs.cancel()
    print(f"\nflood: {STREAMS} slow callers (a message every {READ_EVERY:g} s) of flooding upstreams, "
          f"{received[0] / 2**20:.1f} MiB delivered to them in {FLOOD_SECONDS:g} s; normal caller "
          f"unloaded p50 {p(unloaded, 50):.1f} ms p99 {p(unloaded, 99):.1f} ms ({len(unloaded)} calls), "
          f"under the flood p50 {p(loaded, 50):.1f} ms p99 {p(loaded, 99):.1f} ms ({len(loaded)} calls, "
          f"{p(loaded, 99) / p(unloaded, 99):.2f}x, target 2x); gateway RSS {rss_before:.0f} -> {rss_during:.0f} MiB")
    assert len(loaded) > 100
    assert p(loaded, 99) < STARVED * 1000
    assert p(loaded, 99) < SLOWER * p(unloaded, 99)
    assert rss_during - rss_before < RSS_GROWTH
