"""The routing runtime: what serves calls, built from the routing part of a
Config — each backend's adapter (its HTTP client), state and load figures,
the catalog of models, the router with its routes and rules, the scheduler
and its load poller, the health checks, the dispatcher, and the request limits.

`Runtime(config, ...)` is the one builder, used at start (gateway/server.py)
and by a reload (gateway/reload.py). `Runtimes.current` is the one reference
the servicers read per call; a call holds the runtime it started on
(`Runtimes.hold`) until it ends, so it uses one consistent snapshot from
admission to its last frame, whatever a reload swaps in meanwhile
(`Runtimes.swap`).

A runtime built with the running one as `previous` takes over, for each
backend whose definition is unchanged, its adapter (and open connections),
its BackendState (health, ejection, in-flight counts) and its BackendLoad
(capacity, rates learned); and, when the `scheduler` section is unchanged,
the scheduler itself (slot ledger, queue, prefix index), so calls admitted
before and after a reload count against one capacity and a freed slot goes
to the oldest waiter of either. A new or changed backend starts afresh, as
do session affinity pins and retry budgets (per runtime).

After a swap the old runtime's health checks and load poller stop at once.
What only it uses (the adapters of removed or changed backends, a replaced
scheduler) is closed when the last call holding it ends: a reference count,
with no grace period, so a reload never cuts a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Callable, Iterable, Iterator

import httpx

from adapters.base import Adapter
from adapters.http import build_client
from adapters.ollama import OllamaAdapter
from adapters.openai import Dialect, OpenAIAdapter
from gateway.catalog import Catalog
from gateway.config import BackendConfig, Config
from gateway.dispatch import Dispatcher
from gateway.domain import BackendKind
from gateway.errors import BackendError
from gateway.metrics import Metrics
from gateway.route_health import record_route_health
from gateway.routing.router import Router
from gateway.routing.state import BackendState
from gateway.routing.strategies import LeastUsed, PriorityOrder, SmoothWeightedRoundRobin, Strategy
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.poller import LoadPoller
from gateway.scheduling.prefix import PrefixIndex
from gateway.scheduling.scheduler import Scheduler
from gateway.scheduling.shared import RedisPrefixIndex
from gateway.scheduling.slots import MemorySlots, RedisSlots
from gateway.services.routes import describe_routes
from gateway.tracing import Tracing

log = logging.getLogger("turnout")
TransportFactory = Callable[[BackendConfig], httpx.AsyncBaseTransport | None]


def build_adapter(
    backend: BackendConfig, transport: httpx.AsyncBaseTransport | None = None, trace_context: bool = False
) -> Adapter:
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else None
    client = build_client(backend.url, backend.http, headers=headers, transport=transport, trace_context=trace_context)
    if backend.kind is BackendKind.OLLAMA:
        return OllamaAdapter(backend.name, client)
    return OpenAIAdapter(backend.name, client, Dialect(backend.max_tokens_field, backend.send_reasoning))


def build_scheduler(config: Config, loads: dict[str, BackendLoad], metrics: Metrics) -> Scheduler:
    scheduling = config.scheduler
    if scheduling.store == "redis":
        slots: MemorySlots | RedisSlots = RedisSlots(scheduling.redis_url, scheduling.lease_ttl)
        index: PrefixIndex | RedisPrefixIndex = RedisPrefixIndex(scheduling.redis_url, scheduling.prefix_blocks)
    else:
        slots, index = MemorySlots(config.workers), PrefixIndex(scheduling.prefix_blocks)
    return Scheduler(loads, slots, index, metrics)


def same_store(old: Config, new: Config) -> bool:
    """Whether a scheduler built for `old` serves `new` as well (the poll interval is the poller's)."""
    return dataclasses.replace(old.scheduler, poll_interval=0) == dataclasses.replace(new.scheduler, poll_interval=0)


class Runtime:
    """What serves calls under one config; `previous`, the running runtime
    when this one is built by a reload, lends what is unchanged."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        tracing: Tracing,
        transport_for: TransportFactory = lambda backend: None,
        previous: Runtime | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.metrics = metrics
        self.backends = {b.name: b for b in config.backends}
        kept = {name for name, b in self.backends.items() if previous and previous.backends.get(name) == b}
        stale_after = 3 * config.scheduler.poll_interval
        self.states: dict[str, BackendState] = {}
        self.adapters: dict[str, Adapter] = {}
        self.loads: dict[str, BackendLoad] = {}
        for name, b in self.backends.items():
            if previous is not None and name in kept:
                self.states[name], self.loads[name] = previous.states[name], previous.loads[name]
            else:
                self.states[name], self.loads[name] = BackendState(name), BackendLoad(name, b.max_concurrency)
            self.states[name].policy = config.outlier_detection
            self.loads[name].stale_after = stale_after
        if previous is not None and same_store(previous.config, config):
            self.scheduler = previous.scheduler
        else:
            self.scheduler = build_scheduler(config, self.loads, metrics)
        for name, b in self.backends.items():  # after the scheduler: one that cannot be built leaves no client open
            self.adapters[name] = (previous.adapters[name] if previous is not None and name in kept
                                   else build_adapter(b, transport_for(b), tracing.enabled))
        self.catalog = Catalog({b.name: b.models for b in config.backends})
        self.router = Router(
            config.routes, config.rules, config.default_route, config.backends, self.catalog, self._strategy
        )
        self.poller = LoadPoller(
            config.backends, self.loads, self.scheduler.slots, metrics, config.scheduler.poll_interval,
            self.scheduler.pump,
        )
        self.dispatcher = Dispatcher(self.router, self.states, self.adapters, metrics, self.scheduler, tracing=tracing)
        self.routes = describe_routes(config)
        tracing.know_backends(config.backends)
        metrics.declare_backends(list(self.backends))
        for b in config.backends:
            if b.max_concurrency is not None:
                metrics.backend_capacity.labels(b.name).set(b.max_concurrency)
        self.drained = asyncio.Event()
        self._calls = 0
        self._retired = False
        self._stopped = False
        self._health_checks: asyncio.Task[None] | None = None

    def _strategy(self, name: str) -> Strategy:
        if name == "weighted_round_robin":
            return SmoothWeightedRoundRobin()
        if name in ("least_used", "adaptive"):
            return LeastUsed(lambda target: self.states[target.backend].in_flight)
        return PriorityOrder()

    async def start(self) -> None:
        """Probes every backend (health and models) and polls its load once,
        then keeps doing both in the background."""
        await self.probe_all()
        await self.poller.start()
        self._health_checks = asyncio.create_task(self._check_forever())

    async def stop_background(self) -> None:
        """Stops the health checks and the load poller (once)."""
        if self._stopped:
            return
        self._stopped = True
        if self._health_checks is not None:
            self._health_checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_checks
        await self.poller.aclose()

    @contextlib.contextmanager
    def held(self) -> Iterator[Runtime]:
        self._calls += 1
        try:
            yield self
        finally:
            self._calls -= 1
            if self._retired and self._calls == 0:
                self.drained.set()

    def retire(self) -> None:
        """No new call will take this runtime; `drained` is set once the last one holding it ends."""
        self._retired = True
        if self._calls == 0:
            self.drained.set()

    async def refresh(self, backend: str) -> None:
        """The active health probe: re-reads the backend's model list (Ollama
        /api/tags, OpenAI /v1/models). Success marks it up and refreshes the
        models it serves; failure or no answer within the timeout marks it down."""
        state = self.states[backend]
        try:
            async with asyncio.timeout(self.config.health_check.timeout):
                models = await self.adapters[backend].list_models()
        except (BackendError, TimeoutError) as exc:
            if state.probed_up is not False:
                log.warning("backend %s is down: %s", backend, getattr(exc, "message", "probe timed out"))
            state.record_probe(up=False)
            self.catalog.unreachable(backend, getattr(exc, "message", "") or "probe timed out")
            self.metrics.backend_up.labels(backend).set(0)
            return
        if state.probed_up is False:
            log.info("backend %s is up again", backend)
        state.record_probe(up=True)
        self.metrics.backend_up.labels(backend).set(1)
        self.catalog.update(backend, models)

    async def _check_forever(self) -> None:
        """Probes every backend each `interval`, and the backends that are down
        each `unhealthy_interval` in between."""
        policy = self.config.health_check
        loop = asyncio.get_running_loop()
        next_all = loop.time() + policy.interval
        while True:
            down = [name for name in self.adapters if self.states[name].probed_up is False]
            wake = min(next_all, loop.time() + policy.unhealthy_interval) if down else next_all
            await asyncio.sleep(max(0.0, wake - loop.time()))
            if loop.time() >= next_all:
                next_all = loop.time() + policy.interval
                await self.probe_all()
            else:
                await self.probe_all(down)

    async def probe_all(self, names: Iterable[str] | None = None) -> None:
        await asyncio.gather(*(self.refresh(name) for name in (self.adapters if names is None else names)))
        record_route_health(self.metrics.route_healthy_targets, self.config.routes, self.states, time.monotonic())


class Runtimes:
    """The runtime new calls use (`current`), and the retired ones that calls
    in flight still hold."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self._retiring: set[Runtime] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Runtime]:
        """The current runtime, held by the caller until it leaves the block."""
        with self.current.held() as runtime:
            yield runtime

    async def swap(self, runtime: Runtime) -> None:
        """Every call from now on uses `runtime` (started already); the old
        one stops its background work and is closed once drained."""
        old, self.current = self.current, runtime
        self._retiring.add(old)
        self._link_loads()
        old.retire()
        routes = {route.name for route in runtime.config.routes}
        runtime.metrics.forget([name for name in old.backends if name not in runtime.backends],
                               [route.name for route in old.config.routes if route.name not in routes])
        await old.stop_background()
        task = asyncio.create_task(self._close_when_drained(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def discard(self, runtime: Runtime) -> None:
        """Closes a runtime that was built but never swapped in."""
        await runtime.stop_background()
        await self._close_unused(runtime)

    async def aclose(self) -> None:
        """At shutdown, after the server stopped: closes every runtime."""
        for task in self._closing:
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        runtimes = [self.current, *self._retiring]
        for runtime in runtimes:
            await runtime.stop_background()
        for scheduler in {id(r.scheduler): r.scheduler for r in runtimes}.values():
            await scheduler.close()
        adapters = {id(a): a for r in runtimes for a in r.adapters.values()}
        await asyncio.gather(*(adapter.aclose() for adapter in adapters.values()))

    async def _close_when_drained(self, runtime: Runtime) -> None:
        await runtime.drained.wait()
        self._retiring.discard(runtime)
        self._link_loads()
        await self._close_unused(runtime)

    async def _close_unused(self, runtime: Runtime) -> None:
        live = [self.current, *self._retiring]
        in_use = {id(a) for r in live for a in r.adapters.values()}
        await asyncio.gather(*(a.aclose() for a in runtime.adapters.values() if id(a) not in in_use))
        if all(r.scheduler is not runtime.scheduler for r in live):
            await runtime.scheduler.close()

    def _link_loads(self) -> None:
        """A scheduler shared by several runtimes knows the backends of all
        of them (the calls of a retiring one release their slots there), the
        current runtime's winning where a name is in both."""
        live = [*self._retiring, self.current]
        for scheduler in {id(r.scheduler): r.scheduler for r in live}.values():
            scheduler.loads = {name: load for r in live if r.scheduler is scheduler for name, load in r.loads.items()}
