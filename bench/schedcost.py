"""What the adaptive scheduler costs per request (`python -m bench.schedcost`).

A Scheduler with in-process slots decides for a prompt of PROMPT_TOKENS
(a long system prompt plus history) among N targets whose prefix index is
filled to the brim; each request is admitted, told its first token, completed
and released, as the dispatcher does. Timed: hashing the prompt (render +
chained block hashes, once per request) and the scheduler calls, against the
same calls on a weighted_round_robin route (no prompt work). Prints
microseconds per request; one process, no network.
"""

from __future__ import annotations

import asyncio
import random
import time

from prometheus_client import CollectorRegistry

from gateway.config import QueueConfig
from gateway.domain import Message, Role
from gateway.metrics import Metrics
from gateway.routing.router import Route
from gateway.routing.state import Target
from gateway.routing.strategies import SmoothWeightedRoundRobin
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.prefix import BLOCK_BYTES, PrefixIndex, block_hashes, estimate_tokens, render
from gateway.scheduling.scheduler import Prompt, Scheduler, endpoint_key
from gateway.scheduling.slots import MemorySlots

PROMPT_TOKENS = 8_000
INDEX_BLOCKS = 524_288  # spread over the endpoints
REQUESTS = 2_000


def conversation(rng: random.Random, tenant: int) -> tuple[Message, ...]:
    system = f"Tenant {tenant} policy. " * (PROMPT_TOKENS * 3 // 4 // 20)
    user = " ".join(str(rng.random()) for _ in range(PROMPT_TOKENS // 40))
    return Message(Role.SYSTEM, system), Message(Role.USER, user)


async def run(targets: int, adaptive: bool) -> float:
    rng = random.Random(7)
    names = [f"b{i}" for i in range(targets)]
    pool = [Target(name, "m") for name in names]
    index = PrefixIndex(blocks_per_endpoint=max(1, INDEX_BLOCKS // targets))
    for target in pool:  # fill each endpoint's LRU with unrelated prompts
        filler = block_hashes(f"{target.backend} unrelated history " * (INDEX_BLOCKS // targets * BLOCK_BYTES // 28))
        index.record(endpoint_key(target), filler)
    loads = {name: BackendLoad(name, 64) for name in names}
    scheduler = Scheduler(loads, MemorySlots(), index, Metrics(CollectorRegistry(), "bench"))
    route = Route("chat", tuple(pool), SmoothWeightedRoundRobin(), queue=QueueConfig(),
                  strategy_name="adaptive" if adaptive else "weighted_round_robin")
    requests = [conversation(rng, tenant=i % 50) for i in range(REQUESTS)]
    start = time.perf_counter()
    for messages in requests:
        prompt = Prompt()
        if adaptive:
            text = render(messages)
            prompt = Prompt(block_hashes(text), estimate_tokens(text))
        admission = await scheduler.admit(route, pool, prompt, None)
        scheduler.first_token(admission, prompt, 0.1)
        if adaptive:
            answer = text + render((Message(Role.ASSISTANT, "ok"),))
            scheduler.completed(admission, block_hashes(answer, prompt.hashes))
        await scheduler.release(admission, ok=True)
    elapsed = time.perf_counter() - start
    await scheduler.close()
    return elapsed / REQUESTS * 1e6


async def main() -> None:
    print(f"scheduler cost per request: {PROMPT_TOKENS:,}-token prompts, {INDEX_BLOCKS:,} blocks in the "
          f"prefix index, {REQUESTS:,} requests")
    print(f"{'targets':>8} {'weighted_round_robin us':>24} {'adaptive us':>12} {'extra us':>9}")
    for targets in (2, 8, 64):
        wrr = await run(targets, adaptive=False)
        adaptive = await run(targets, adaptive=True)
        print(f"{targets:>8} {wrr:>24.1f} {adaptive:>12.1f} {adaptive - wrr:>9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
