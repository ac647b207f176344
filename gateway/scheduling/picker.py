"""The choice among one tier's targets, as a pure function over a snapshot.

Each Endpoint is what the scheduler knows of one target right now: turnout's
own in-flight and the backend's capacity, the load the server reports, whether
the model is resident, how many leading blocks of this prompt it holds, and
two learned rates (prefill seconds per token, seconds to load a cold model).

`adaptive` estimates each endpoint's time to first token and takes the least:

    cost = expected wait for a slot            (0 when a slot is free)
         + cold-load time x LOCALITY           (when the model is known not loaded)
         + prefill per token x uncached tokens (prompt tokens less the cached blocks)
         + prefill per token x (LOCALITY - 1) x the cached tokens another target holds and this lacks
         + prefill per token x the recently used tokens this prompt would evict from its cache

so residency comes first (a load costs seconds), then the longest cached
prefix, and cache affinity yields to load when waiting for the cached backend
costs more than the prefill it saves. A prompt that fills a cache pushes out
what other requests will come back for (the index says how many recently
used blocks: prefix.py), and that work is counted too. Work redone elsewhere counts LOCALITY
times: a prompt computed again on a second backend also takes cache space
there and pushes out other conversations' prefixes, and loading a model there
evicts the model other requests were using, so leaving costs more than this
request's own prefill or load (measured with bench-routing's tenants and
models scenarios). Costs within TIE_FRACTION of the
least (at least COST_QUANTUM) are equal — learned rates are noisy, and noise
must not make a request wait — and ties go to an endpoint with a free slot,
then to one that has the model loaded, then to the longest cached prefix (a
tie must not load a model or copy a prompt for nothing), then to the
emptiest cache, in tenths, when every tied server says its cache size (a new
prompt settles where there is room for its conversation, so prompts spread
over the caches as a hand placement would),
then to the least load relative to weight (running requests over weight, the
server's own count when it reports a larger one), then round-robin. An
endpoint whose free slot older waiters have claimed counts as busy. The
reason says which term decided: residency, prefix or load.

The other strategies keep their meaning and pick among endpoints with a free
slot (`free_only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from gateway.routing.state import Target
from gateway.scheduling.load import DEFAULT_LOAD_TIME, DEFAULT_PREFILL_PER_TOKEN

COST_QUANTUM = 0.005
TIE_FRACTION = 0.1
LOCALITY = 3.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    target: Target
    in_flight: int = 0
    capacity: int | None = None
    reported_busy: int | None = None
    resident: bool | None = None
    cached_blocks: int = 0
    evicts: int = 0
    cache_fill: float | None = None  # None: the server does not say how large its cache is
    wait: float = 0.0
    prefill_per_token: float = DEFAULT_PREFILL_PER_TOKEN
    load_time: float = DEFAULT_LOAD_TIME
    claimed: bool = False

    @property
    def free(self) -> bool:
        return not self.claimed and (self.capacity is None or self.in_flight < self.capacity)

    @property
    def load(self) -> float:
        busy = max(self.in_flight, self.reported_busy or 0)
        return busy / self.target.weight

    def cost(self, prompt_tokens: int, block_tokens: int, best_cached: int = 0) -> float:
        """Estimated seconds to first token; `best_cached` is the most blocks
        any candidate holds: each block this one lacks of those counts
        LOCALITY times (see adaptive)."""
        uncached = max(0, prompt_tokens - self.cached_blocks * block_tokens)
        lost = max(0, best_cached - self.cached_blocks) * block_tokens
        cold = LOCALITY * self.load_time if self.resident is False else 0.0
        evicted = self.evicts * block_tokens
        return self.wait + cold + self.prefill_per_token * (uncached + (LOCALITY - 1) * lost + evicted)


@dataclass(frozen=True, slots=True)
class Choice:
    """The endpoint chosen and why; `acceptable` are the backends that, were
    a slot to free there, would cost no more than this choice (itself
    included): a request waiting for a busy choice takes a slot only there.
    A backend the model would have to be loaded on is never among them: a
    load evicts the model other requests wait for, and is chosen, not
    taken because a slot happened to free."""

    endpoint: Endpoint
    reason: str
    acceptable: frozenset[str] = frozenset()

    @property
    def target(self) -> Target:
        return self.endpoint.target


def free_only(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    return [e for e in endpoints if e.free]


def adaptive(endpoints: Sequence[Endpoint], prompt_tokens: int, block_tokens: int, turn: int = 0) -> Choice | None:
    """The endpoint with the least estimated time to first token; `turn`
    rotates the order in which exact ties are broken."""
    if not endpoints:
        return None
    n = len(endpoints)
    rotated = [endpoints[(turn + i) % n] for i in range(n)]
    best_cached = max(e.cached_blocks for e in rotated)
    costs = {id(e): e.cost(prompt_tokens, block_tokens, best_cached) for e in rotated}
    least = min(costs.values())
    margin = max(COST_QUANTUM, TIE_FRACTION * least)
    ties = [e for e in rotated if costs[id(e)] <= least + margin]
    by_fill = all(e.cache_fill is not None for e in ties)  # a cache of unknown size is neither empty nor full
    best = min(ties, key=lambda e: (not e.free, e.resident is False, -e.cached_blocks,
                                    round(e.cache_fill or 0.0, 1) if by_fill else 0.0, e.load))
    acceptable = frozenset(e.target.backend for e in rotated if e is best or (
        e.resident is not False and costs[id(e)] - e.wait <= least + margin))
    return Choice(best, _reason(best, endpoints, costs, least + margin), acceptable)


def _reason(best: Endpoint, endpoints: Sequence[Endpoint], costs: dict[int, float], tied: float) -> str:
    if best.resident is not False and any(e.resident is False for e in endpoints):
        return "residency"
    if best.cached_blocks and best.cached_blocks >= max(e.cached_blocks for e in endpoints):
        if any(costs[id(e)] > tied for e in endpoints):
            return "prefix"
    return "load"
