"""Approximate prefix-cache tracking (SPEC §4b; the way vLLM's automatic prefix
caching and llm-d's approximate prefix scorer see a prompt).

A prompt is rendered to one canonical string (role and content of each
message, in order) and its UTF-8 bytes cut into fixed blocks of BLOCK_BYTES (about 64 tokens);
block i's hash chains on block i-1's, so equal hashes mean an equal prompt up
to the end of that block. The index is kept per (backend, model): a cache
holds prompts for the model that computed them. Only whole
blocks count. Rendering message by message keeps the string of a conversation
a prefix of the string of its next turn, so a session and a caller that sends
its whole history hash alike.

PrefixIndex remembers, per backend and model, the block hashes of the prompts it served
recently (and of the prompt extended by the answer, which the next turn
starts with) in an LRU as large as the server's cache when it says (llama.cpp
/props, vLLM cache_config_info), else `blocks_per_endpoint`: an index larger
than the real cache believes in prefixes the server has already evicted. The match for a
backend is the number of leading blocks of a prompt it holds: the part a
server with a prompt cache will not compute again.

The index also says what a prompt would push out of a backend's cache:
blocks it does not hold, added to a full LRU, evict its least recently used
ones, and those used in the last REUSE_HORIZON seconds are prefixes somebody
is still coming back for (a tenant's system prompt, a live conversation), to
be computed again later. Blocks idle longer count as free room.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from gateway.domain import Message

BLOCK_BYTES = 256
BYTES_PER_TOKEN = 4
BLOCK_TOKENS = BLOCK_BYTES // BYTES_PER_TOKEN
REUSE_HORIZON = 60.0


@dataclass(frozen=True, slots=True)
class Holding:
    """What one endpoint's cache means for a prompt: `cached` leading blocks
    it holds, `evicts` recently used blocks that adding the rest would push
    out, and `fill`, the share of the server's cache the index holds (None
    when the server does not say how large its cache is)."""

    cached: int = 0
    evicts: int = 0
    fill: float | None = None


def assess(cached: int, held: int, added: int, idle: int, capacity: int | None, default_capacity: int) -> Holding:
    """The Holding of an endpoint whose LRU holds `held` blocks, `idle` of
    them (the oldest) unused for REUSE_HORIZON, `cached` of this prompt's,
    when `added` new blocks come in; `capacity` is the server's cache in
    blocks when it says, else the index's own bound applies and fill is unknown."""
    bound = capacity or default_capacity
    evicts = max(0, min(held - idle, held + added - bound - idle))
    return Holding(cached, evicts, held / capacity if capacity else None)


def render(messages: Iterable[Message]) -> str:
    parts = []
    for message in messages:
        parts.append(f"\x1e{message.role.value}\x1f{message.content}")
        for call in message.tool_calls:
            parts.append(f"\x1d{call.name}\x1f{call.arguments}")
    return "".join(parts)


def block_hashes(text: str, known: tuple[bytes, ...] = (), block_bytes: int = BLOCK_BYTES) -> tuple[bytes, ...]:
    """The chained hashes of each whole block of `text`; `known` are the
    hashes of a prefix of it already computed (the prompt, when hashing the
    prompt extended by its answer), which are not computed again."""
    hashes = list(known)
    previous = known[-1] if known else b""
    data = text.encode("utf-8", "surrogatepass")
    for start in range(len(known) * block_bytes, len(data) - block_bytes + 1, block_bytes):
        previous = hashlib.blake2b(data[start:start + block_bytes], digest_size=8, key=previous).digest()
        hashes.append(previous)
    return tuple(hashes)


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


class PrefixIndex:
    """Per endpoint key ("backend/model"), an LRU of recently served block
    hashes and when each was last served."""

    def __init__(self, blocks_per_endpoint: int = 65_536, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = blocks_per_endpoint
        self._clock = clock
        self._blocks: dict[str, OrderedDict[bytes, float]] = {}

    def match(self, key: str, hashes: Sequence[bytes]) -> int:
        """How many leading blocks of `hashes` the endpoint `key` holds. A
        chained hash stands for its whole prefix, and `record` keeps a
        prompt's first blocks the most recently used (its tail is forgotten
        first, as vLLM evicts), so presence is monotone along a prompt and a
        binary search finds the match in O(log n) look-ups."""
        held = self._blocks.get(key)
        if not held:
            return 0
        low, high = 0, len(hashes)
        while low < high:
            middle = (low + high + 1) // 2
            if hashes[middle - 1] in held:
                low = middle
            else:
                high = middle - 1
        return low

    def record(self, key: str, hashes: Sequence[bytes], capacity: int | None = None) -> None:
        """Remembers a served prompt; `capacity` (blocks) is the server's own
        cache size when it said, else `blocks_per_endpoint`."""
        held = self._blocks.setdefault(key, OrderedDict())
        now = self._clock()
        for block in reversed(hashes):
            held[block] = now
            held.move_to_end(block)
        while len(held) > (capacity or self._capacity):
            held.popitem(last=False)

    def holding(self, key: str, hashes: Sequence[bytes], capacity: int | None = None) -> Holding:
        cached = self.match(key, hashes)
        held = self._blocks.get(key, {})
        overflow = len(held) + len(hashes) - cached - (capacity or self._capacity)
        idle = 0
        if overflow > 0:  # only the oldest `overflow` blocks can be pushed out: count the idle among them
            cutoff = self._clock() - REUSE_HORIZON
            for served in held.values():
                if idle >= overflow or served >= cutoff:
                    break
                idle += 1
        return assess(cached, len(held), len(hashes) - cached, idle, capacity, self._capacity)

    async def lookup(
        self, keys: Sequence[str], hashes: Sequence[bytes], capacities: Sequence[int | None] | None = None
    ) -> list[Holding]:
        """`holding` for several endpoints at once (the interface RedisPrefixIndex
        shares); `capacities` are the servers' cache sizes in blocks where known."""
        capacities = capacities or [None] * len(keys)
        return [self.holding(key, hashes, capacity) for key, capacity in zip(keys, capacities, strict=True)]

    async def remember(self, key: str, hashes: Sequence[bytes], capacity: int | None = None) -> None:
        self.record(key, hashes, capacity)

    async def close(self) -> None:
        pass

    def size(self, key: str) -> int:
        return len(self._blocks.get(key, ()))
