"""Admission: which target an attempt runs on, and when (SPEC §4b).

`Scheduler.admit` takes the targets a route's plan may try now and returns an
Admission holding a slot (a Lease) on one of them:

1. The best priority tier is the pool. When the route has `spill` and the
   tier is saturated — utilisation at or above `spill.utilization`, or no free
   slot and an expected wait above `spill.max_queue_wait` — the request goes
   to the first later tier with a free slot ("spill").
2. It takes a free slot no waiting request has a claim on (first in, first
   out among requests that can use the same slot): `adaptive` picks by
   estimated time to first token (picker.py) and may choose to wait for a busy
   backend whose cached prefix or loaded model saves more than the wait
   costs; other strategies pick among free slots.
3. Otherwise it waits in the route's queue: at most `queue.max_size` waiters,
   at most `queue.max_wait`, never past the caller's deadline. An adaptive
   waiter waits for the backend it chose while that wait is expected to pay
   off (its "patience"), then weighs again; it takes a slot freed elsewhere
   only where that costs no more than what it waits for, and never where its
   model would have to load. Other waiters take any of their tier's
   backends. A released slot is handed to the oldest waiter that accepts
   it. Cancelling frees the place at once. Past `max_wait` the
   request spills to a later tier when there is one, else fails with
   RESOURCE_EXHAUSTED and a RetryInfo.

A backend is recorded as holding a request's model and prompt prefix as soon
as the request is admitted there (as llm-d's approximate prefix scorer does),
so the requests that follow a conversation's or a model's first one go where
it is being computed, not everywhere at once.

`release` ends an attempt; `first_token` and `completed` teach the per-backend
rates and the prefix index the answer extends. Targets with unlimited capacity always have a free
slot, so routes without capacity behave as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from gateway.errors import DeadlineExceeded, LimitExceeded
from gateway.metrics import Metrics
from gateway.routing.router import Route
from gateway.routing.state import Target
from gateway.scheduling.load import BackendLoad, Rates, pooled
from gateway.scheduling.picker import Choice, Endpoint, adaptive, free_only
from gateway.scheduling.prefix import BLOCK_TOKENS, Holding, PrefixIndex
from gateway.scheduling.shared import RedisPrefixIndex
from gateway.scheduling.slots import Lease, MemorySlots, RedisSlots

Slots = MemorySlots | RedisSlots
Index = PrefixIndex | RedisPrefixIndex
SHARED_RETRY = 0.05  # seconds between tries for a slot another process may free
MIN_PATIENCE = 0.01  # seconds before an adaptive waiter weighs its choice again


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the scheduler needs of a request's prompt."""

    hashes: tuple[bytes, ...] = ()
    tokens: int = 0


@dataclass(slots=True)
class Admission:
    target: Target
    lease: Lease
    reason: str
    queued: float
    start: float
    cached_blocks: int = 0
    resident: bool | None = None
    first_token_at: float | None = None


@dataclass(eq=False, slots=True)
class _Waiter:
    route: str
    targets: dict[str, Target]
    preferred: str | None = None
    patience_until: float = 0.0
    acceptable: frozenset[str] | None = None  # adaptive: where a handed-over slot is worth taking
    granted: asyncio.Future[tuple[Target, Lease]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def accepts(self, backend: str, now: float) -> bool:
        if backend not in self.targets:
            return False
        if self.acceptable is not None:
            return backend in self.acceptable
        return self.preferred in (None, backend) or now >= self.patience_until


def endpoint_key(target: Target) -> str:
    return f"{target.backend}/{target.model}"


class Scheduler:
    def __init__(
        self,
        loads: Mapping[str, BackendLoad],
        slots: Slots,
        index: Index,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loads = loads
        self.slots = slots
        self.index = index
        self._metrics = metrics
        self._clock = clock
        self._waiters: list[_Waiter] = []
        self._turn = 0
        self._recording: set[asyncio.Task[None]] = set()

    def waiting(self, route: str | None = None) -> int:
        return sum(1 for w in self._waiters if route is None or w.route == route)

    def waiting_for(self, backend: str) -> int:
        return sum(1 for w in self._waiters if backend in w.targets)

    def limit(self, backend: str) -> int | None:
        return self.slots.limit(self.loads[backend].capacity)

    async def admit(
        self, route: Route, pool: Sequence[Target], prompt: Prompt, deadline: float | None
    ) -> Admission:
        arrived = self._clock()
        tiers = sorted({t.priority for t in pool})
        first = [t for t in pool if t.priority == tiers[0]]
        later = [[t for t in pool if t.priority == p] for p in tiers[1:]]
        if not route.adaptive and all(self.limit(t.backend) is None for t in first):
            target = route.strategy.pick(first)  # unlimited capacity: the strategy alone decides
            if target is not None:
                lease = await self.slots.acquire(target.backend, None)
                assert lease is not None
                return self._admitted(route, Endpoint(target), lease, route.strategy_name, arrived, prompt)
        claimed = self._claimed(arrived)
        full = route.adaptive or route.spill is not None
        endpoints = await self._endpoints(first, prompt, arrived, full, claimed)
        if route.spill is not None and later and self._saturated(route, endpoints):
            admission = await self._spill(route, later, prompt, arrived)
            if admission is not None:
                return admission
        admission, preferred = await self._take_free(route, endpoints, prompt, arrived)
        if admission is not None:
            return admission
        if route.spill is not None and later and free_only(endpoints):
            # Slots that looked free were taken by other replicas: count again, and spill if saturated.
            await self.slots.refresh([t.backend for t in first])
            if self._saturated(route, await self._endpoints(first, prompt, arrived, True, claimed)):
                admission = await self._spill(route, later, prompt, arrived)
                if admission is not None:
                    return admission
        return await self._queue(route, first, later, prompt, deadline, arrived, preferred)

    async def release(self, admission: Admission, ok: bool) -> None:
        """Ends the attempt: hands its slot to the oldest waiter that can use
        it, or frees it."""
        now = self._clock()
        load = self.loads[admission.target.backend]
        if ok:
            answering = None if admission.first_token_at is None else now - admission.first_token_at
            load.learn_service(now - admission.start if admission.resident is not False else None, answering)
        lease = admission.lease
        load.end(lease.id)
        for waiter in self._waiters:
            if waiter.accepts(lease.backend, now) and not waiter.granted.done():
                self._waiters.remove(waiter)
                waiter.granted.set_result((waiter.targets[lease.backend], lease))
                return
        await self.slots.release(lease)

    def first_token(self, admission: Admission, prompt: Prompt, seconds: float) -> None:
        """Learns from the attempt's time to first token (from its start)."""
        target = admission.target
        uncached = max(0, prompt.tokens - admission.cached_blocks * BLOCK_TOKENS)
        admission.first_token_at = self._clock()
        self.loads[target.backend].learn_first_token(target.model, seconds, uncached, admission.resident,
                                                     self._clock())

    def completed(self, admission: Admission, hashes: tuple[bytes, ...]) -> None:
        """Remembers the prompt extended by the answer: the next turn starts with it."""
        self._remember(admission.target, hashes)

    def _remember(self, target: Target, hashes: tuple[bytes, ...]) -> None:
        """Records in the background: a shared index costs the stream no round trip."""
        if not hashes:
            return
        task = asyncio.create_task(self.index.remember(endpoint_key(target), hashes, self._cache_blocks(target.backend)))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _cache_blocks(self, backend: str) -> int | None:
        """The server's prompt cache in blocks, when it says (else the index's own size)."""
        cache_tokens = self.loads[backend].cache_tokens
        return (cache_tokens or 0) // BLOCK_TOKENS or None

    async def close(self) -> None:
        await asyncio.gather(*self._recording, return_exceptions=True)
        await self.index.close()
        await self.slots.close()

    async def pump(self) -> None:
        """Gives free slots to waiters, oldest first: after capacity grew or a
        backend returned."""
        now = self._clock()
        for waiter in list(self._waiters):
            for backend, target in waiter.targets.items():
                if waiter.granted.done() or not waiter.accepts(backend, now):
                    continue
                lease = await self.slots.acquire(backend, self.loads[backend].capacity)
                if lease is None:
                    continue
                if waiter in self._waiters and not waiter.granted.done():
                    self._waiters.remove(waiter)
                    waiter.granted.set_result((target, lease))
                else:  # it left, or was served, while we asked
                    await self.slots.release(lease)
                break

    async def _endpoints(
        self, targets: Sequence[Target], prompt: Prompt, now: float, full: bool = True,
        claimed: frozenset[str] = frozenset(), waiter: _Waiter | None = None, pool: Rates | None = None,
    ) -> list[Endpoint]:
        """The snapshot of each target; with `full` False only what the
        strategies other than adaptive use without spill (in-flight and
        capacity). Backends in `claimed` count as busy; rates a backend has
        not learned are guessed from `pool` (else from the targets')."""
        if not full:
            return [Endpoint(t, self.slots.held(t.backend), self.limit(t.backend), claimed=t.backend in claimed)
                    for t in targets]
        holdings = [Holding()] * len(targets)
        if prompt.hashes:
            holdings = await self.index.lookup([endpoint_key(t) for t in targets], prompt.hashes,
                                               [self._cache_blocks(t.backend) for t in targets])
        endpoints = []
        pool = pool or pooled(self.loads[t.backend] for t in targets)
        for target, holding in zip(targets, holdings, strict=True):
            load = self.loads[target.backend]
            rates = load.rates(pool)
            held = self.slots.held(target.backend)
            limit = self.limit(target.backend)
            wait = 0.0
            if limit is not None and (held >= limit or target.backend in claimed):
                wait = load.expected_wait(self._ahead(target.backend, waiter), limit, now, pool, held)
            endpoints.append(Endpoint(
                target=target,
                in_flight=held,
                capacity=limit,
                reported_busy=load.reported_busy(held, now),
                resident=load.resident(target.model, now),
                cached_blocks=holding.cached,
                evicts=holding.evicts,
                cache_fill=holding.fill,
                wait=wait,
                prefill_per_token=rates.prefill_per_token,
                load_time=rates.load_time,
                claimed=target.backend in claimed,
            ))
        return endpoints

    def _claimed(self, now: float, before: _Waiter | None = None) -> frozenset[str]:
        """Backends some waiting request (older than `before`, if given)
        would take a slot of now."""
        claimed: set[str] = set()
        for waiter in self._waiters:
            if waiter is before:
                break
            claimed.update(b for b in waiter.targets if waiter.accepts(b, now))
        return frozenset(claimed)

    def _ahead(self, backend: str, before: _Waiter | None = None) -> float:
        """Waiters competing for `backend`'s next slot (older than `before`,
        if given; those that could use several backends count as a share)."""
        ahead = 0.0
        for waiter in self._waiters:
            if waiter is before:
                break
            if waiter.preferred == backend:
                ahead += 1
            elif waiter.preferred is None and backend in waiter.targets:
                ahead += 1 / len(waiter.targets)
        return ahead

    def _saturated(self, route: Route, endpoints: Sequence[Endpoint]) -> bool:
        spill = route.spill
        assert spill is not None
        if any(e.capacity is None for e in endpoints):
            return False
        capacity = sum(e.capacity or 0 for e in endpoints)
        in_flight = sum(e.in_flight for e in endpoints)
        if spill.utilization is not None and in_flight >= spill.utilization * capacity:
            return True
        if free_only(endpoints):
            return False
        return min(e.wait for e in endpoints) > spill.max_queue_wait

    async def _spill(
        self, route: Route, tiers: Sequence[Sequence[Target]], prompt: Prompt, arrived: float
    ) -> Admission | None:
        for tier in tiers:
            endpoints = await self._endpoints(tier, prompt, arrived, route.adaptive)
            admission, _ = await self._take_free(route, endpoints, prompt, arrived, reason="spill")
            if admission is not None:
                self._metrics.spills.labels(route.name).inc()
                return admission
        return None

    async def _take_free(
        self, route: Route, endpoints: Sequence[Endpoint], prompt: Prompt, arrived: float, reason: str = ""
    ) -> tuple[Admission | None, Choice | None]:
        """A slot on the best endpoint with one free; with `adaptive`, also
        the busy endpoint worth waiting for when that is the best choice."""
        candidates = list(endpoints)
        while candidates:
            if route.adaptive:
                self._turn += 1
                choice = adaptive(candidates, prompt.tokens, BLOCK_TOKENS, self._turn)
                assert choice is not None
                if not choice.endpoint.free:
                    return None, choice
                endpoint, why = choice.endpoint, choice.reason
            else:
                free = free_only(candidates)
                target = route.strategy.pick([e.target for e in free])
                if target is None:
                    return None, None
                endpoint, why = next(e for e in free if e.target == target), route.strategy_name
            lease = await self.slots.acquire(endpoint.target.backend, self.loads[endpoint.target.backend].capacity)
            if lease is not None:
                return self._admitted(route, endpoint, lease, reason or why, arrived, prompt), None
            candidates.remove(endpoint)
        return None, None

    def _admitted(
        self, route: Route, endpoint: Endpoint, lease: Lease, reason: str, arrived: float, prompt: Prompt
    ) -> Admission:
        now = self._clock()
        load = self.loads[lease.backend]
        load.begin(lease.id, now, max(0, prompt.tokens - endpoint.cached_blocks * BLOCK_TOKENS),
                   endpoint.resident is False, Rates(endpoint.prefill_per_token, endpoint.load_time))
        load.sent(endpoint.target.model, now)
        self._remember(endpoint.target, prompt.hashes)
        self._metrics.queue_wait.labels(route.name).observe(now - arrived)
        if route.adaptive:
            self._metrics.prefix_affinity.labels(route.name, "hit" if endpoint.cached_blocks else "miss").inc()
        return Admission(endpoint.target, lease, reason, now - arrived, now, endpoint.cached_blocks, endpoint.resident)

    async def _queue(
        self, route: Route, first: Sequence[Target], later: Sequence[Sequence[Target]], prompt: Prompt,
        deadline: float | None, arrived: float, preferred: Choice | None,
    ) -> Admission:
        queue = route.queue
        if self.waiting(route.name) >= queue.max_size:
            raise LimitExceeded(
                f"route {route.name!r}: the queue is full ({queue.max_size} waiting for a free slot)",
                retry_after=self._retry_after(first),
            )
        waiter = _Waiter(route.name, {t.backend: t for t in first})
        if preferred is not None:
            waiter.preferred = preferred.target.backend
            waiter.patience_until = max(arrived + preferred.endpoint.wait, self._clock() + MIN_PATIENCE)
            waiter.acceptable = preferred.acceptable
        give_up = arrived + queue.max_wait
        if deadline is not None:
            give_up = min(give_up, deadline)
        self._waiters.append(waiter)
        depth = self._metrics.queue_depth.labels(route.name)
        depth.inc()
        try:
            admission = await self._wait(route, waiter, prompt, give_up, arrived)
        finally:
            depth.dec()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if admission is not None:
            return admission
        if deadline is not None and self._clock() >= deadline:
            raise DeadlineExceeded("the caller's deadline passed while the request waited for a free slot")
        if later:
            spilled = await self._spill(route, later, prompt, arrived)
            if spilled is not None:
                return spilled
        raise LimitExceeded(
            f"route {route.name!r}: no slot freed within {queue.max_wait:g}s "
            f"({self.waiting(route.name)} still waiting)",
            retry_after=self._retry_after(first),
        )

    async def _wait(
        self, route: Route, waiter: _Waiter, prompt: Prompt, give_up: float, arrived: float
    ) -> Admission | None:
        try:
            while True:
                now = self._clock()
                wake = give_up
                if (waiter.preferred is not None or waiter.acceptable is not None) and waiter.patience_until > now:
                    wake = min(wake, waiter.patience_until)  # then it weighs again
                if isinstance(self.slots, RedisSlots):
                    wake = min(wake, now + SHARED_RETRY)
                if wake > now:
                    await asyncio.wait({waiter.granted}, timeout=wake - now)
                if waiter.granted.done():
                    target, lease = waiter.granted.result()
                    return await self._granted(route, waiter, target, lease, prompt, arrived)
                now = self._clock()
                if now >= waiter.patience_until:
                    admission = await self._reconsider(route, waiter, prompt, arrived, now)
                    if waiter.granted.done():  # a slot was handed over while we looked for one
                        if admission is not None:
                            await self.release(admission, ok=False)
                        target, lease = waiter.granted.result()
                        return await self._granted(route, waiter, target, lease, prompt, arrived)
                    if admission is not None:
                        return admission
                if now >= give_up:
                    return None
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                _, lease = waiter.granted.result()
                waiter.granted = asyncio.get_running_loop().create_future()
                with contextlib.suppress(Exception):
                    await self.release(Admission(lease_target(waiter, lease), lease, "", 0.0, self._clock()), False)
            raise

    async def _reconsider(
        self, route: Route, waiter: _Waiter, prompt: Prompt, arrived: float, now: float
    ) -> Admission | None:
        """Takes a free slot the waiter can use and no older waiter claims
        (another process may have freed one, or its patience ran out); with
        `adaptive`, chooses again between the busy backends and the free
        ones, with the waits estimated anew."""
        claimed = self._claimed(now, before=waiter)
        endpoints = await self._endpoints(list(waiter.targets.values()), prompt, now, True, claimed, waiter)
        if route.adaptive:
            choice = adaptive(endpoints, prompt.tokens, BLOCK_TOKENS)
            if choice is not None:
                waiter.acceptable = choice.acceptable
            if choice is not None and not choice.endpoint.free:
                waiter.preferred = choice.target.backend
                waiter.patience_until = now + max(choice.endpoint.wait, MIN_PATIENCE)
                return None
        waiter.preferred = None
        admission, _ = await self._take_free(route, free_only(endpoints), prompt, arrived)
        if admission is None:  # the free slot went elsewhere first: weigh again shortly
            waiter.patience_until = now + MIN_PATIENCE
        return admission

    async def _granted(
        self, route: Route, waiter: _Waiter, target: Target, lease: Lease, prompt: Prompt, arrived: float
    ) -> Admission:
        pool = pooled(self.loads[t.backend] for t in waiter.targets.values())  # the rates the waiter chose by
        endpoint = (await self._endpoints([target], prompt, self._clock(), pool=pool))[0]
        return self._admitted(route, endpoint, lease, "queue", arrived, prompt)

    def _retry_after(self, targets: Sequence[Target]) -> float:
        now = self._clock()
        pool = pooled(self.loads[t.backend] for t in targets)
        waits = []
        for target in targets:
            limit = self.limit(target.backend)
            if limit:
                waits.append(self.loads[target.backend].expected_wait(self._ahead(target.backend), limit, now, pool,
                                                                      self.slots.held(target.backend)))
        return max(0.1, min(waits, default=1.0))


def lease_target(waiter: _Waiter, lease: Lease) -> Target:
    return waiter.targets[lease.backend]
