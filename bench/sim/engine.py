"""The simulated inference engine behind `make bench-routing`: the costs that
make scheduling matter, in scaled-down time, with no model at all.

- Finite slots; requests beyond them wait in the engine's own FIFO queue (the
  hidden queue a gateway should keep empty).
- Prefill time proportional to the prompt tokens not already cached. The cache
  is a block prefix cache with LRU eviction: the rendered prompt is cut into
  fixed blocks of BLOCK_TOKENS tokens (a token is ~4 UTF-8 bytes), each block's
  key chains the previous one's, so a block hits only when everything before it
  matches too (vLLM's automatic prefix caching; llama.cpp's slot cache behaves
  alike for a shared prefix). A prompt's tail blocks are evicted before its
  head, as vLLM frees a finished request's blocks in reverse order.
- Decode time per token grows with the number of requests decoding at once.
- Models: at most `max_loaded` in memory; a request for another one unloads
  the least recently used to make room, then pays `load_delay` (Ollama-like;
  requests already running on the unloaded model finish undisturbed).
- Replies are a pure function of the prompt (`reply_for`), so a workload can
  write whole conversations, assistant turns included, before it starts.

Counters (prompt tokens computed and cached, requests, model loads) are what
the benchmark compares across strategies.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

BLOCK_TOKENS = 16
BYTES_PER_TOKEN = 4
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")


def render(messages: list[dict]) -> bytes:
    """The prompt an engine computes: every message, in order, in one text."""
    return "".join(f"<|{m.get('role', 'user')}|>\n{m.get('content', '')}\n" for m in messages).encode()


def tokens(text: bytes) -> int:
    return max(1, -(-len(text) // BYTES_PER_TOKEN))


def block_keys(model: str, prompt: bytes) -> list[bytes]:
    """Chained keys of the prompt's full blocks: key i covers blocks 0..i."""
    size, keys, previous = BLOCK_TOKENS * BYTES_PER_TOKEN, [], model.encode()
    for start in range(0, len(prompt) - size + 1, size):
        previous = hashlib.blake2b(previous + prompt[start:start + size], digest_size=12).digest()
        keys.append(previous)
    return keys


def reply_for(prompt: bytes, n_tokens: int) -> list[str]:
    """The pieces of the answer to `prompt` (one piece per token)."""
    seed = hashlib.blake2b(prompt, digest_size=8).digest()
    return [WORDS[(seed[i % 8] + i) % len(WORDS)] + " " for i in range(n_tokens)]


@dataclass(frozen=True)
class Profile:
    """One engine's costs, in seconds."""

    slots: int | None = 2  # None: unlimited (a cloud API)
    prefill_per_token: float = 0.0002
    decode_per_token: float = 0.004
    batch_slowdown: float = 0.1  # each extra request decoding adds this share to a token's time
    cache_blocks: int = 512
    max_loaded: int = 8
    load_delay: float = 0.0
    fixed_latency: float = 0.0  # added before the first token (network and queueing of a cloud API)
    output_tokens: int = 16


@dataclass
class Counters:
    requests: int = 0
    prompt_tokens: int = 0  # computed (uncached)
    cached_tokens: int = 0
    model_loads: int = 0
    max_waiting: int = 0


@dataclass
class Engine:
    profile: Profile
    models: tuple[str, ...]
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.running = 0
        self.decoding = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.cache: OrderedDict[bytes, None] = OrderedDict()
        self.loaded: OrderedDict[str, None] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}

    @property
    def in_memory(self) -> list[str]:
        """Models loaded or loading (Ollama's /api/ps lists a runner from the start of its load)."""
        return [*self.loaded, *(m for m in self._loading if m not in self.loaded)]

    @property
    def total_slots(self) -> int:
        return self.profile.slots or 0

    async def _acquire(self) -> None:
        slots = self.profile.slots
        if slots is None or (self.running < slots and not self.waiting):
            self.running += 1
            return
        ticket = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        self.counters.max_waiting = max(self.counters.max_waiting, len(self.waiting))
        try:
            await ticket  # _release hands its slot over: running stays counted
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()
            else:
                self.waiting.remove(ticket)
            raise

    def _release(self) -> None:
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.running -= 1

    async def _ensure_loaded(self, model: str) -> None:
        if model in self.loaded:
            self.loaded.move_to_end(model)
            return
        if model in self._loading:
            return await asyncio.shield(self._loading[model])
        done = self._loading[model] = asyncio.get_running_loop().create_future()
        try:
            self.counters.model_loads += 1
            while self.loaded and len(self.loaded) + len(self._loading) > self.profile.max_loaded:
                self.loaded.popitem(last=False)  # unloaded first to make room, as Ollama does
            await asyncio.sleep(self.profile.load_delay)
            while len(self.loaded) >= self.profile.max_loaded:  # another load finished meanwhile
                self.loaded.popitem(last=False)
            self.loaded[model] = None
        finally:
            del self._loading[model]
            done.set_result(None)

    def _lookup(self, model: str, prompt: bytes) -> tuple[list[bytes], int]:
        """The prompt's block keys and the tokens to compute (those not cached)."""
        keys = block_keys(model, prompt)
        hit = 0
        while hit < len(keys) and keys[hit] in self.cache:
            hit += 1
        total = tokens(prompt)
        cached = min(hit * BLOCK_TOKENS, total - 1)
        self.counters.cached_tokens += cached
        self.counters.prompt_tokens += total - cached
        return keys, total - cached

    def _store(self, keys: list[bytes]) -> None:
        for key in reversed(keys):  # the tail is evicted first, as vLLM frees a request's blocks
            self.cache[key] = None
            self.cache.move_to_end(key)
        while len(self.cache) > self.profile.cache_blocks:
            self.cache.popitem(last=False)

    async def generate(self, model: str, messages: list[dict]):
        """Yields the answer's pieces, the first once the prompt is computed."""
        self.counters.requests += 1
        await self._acquire()
        try:
            await self._ensure_loaded(model)
            prompt = render(messages)
            keys, computed = self._lookup(model, prompt)
            await asyncio.sleep(self.profile.fixed_latency + computed * self.profile.prefill_per_token)
            self._store(keys)
            self.decoding += 1
            try:
                for piece in reply_for(prompt, self.profile.output_tokens):
                    yield piece
                    slowdown = 1 + self.profile.batch_slowdown * (self.decoding - 1)
                    await asyncio.sleep(self.profile.decode_per_token * slowdown)
            finally:
                self.decoding -= 1
        finally:
            self._release()
