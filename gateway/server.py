"""The composition root: the one place that names concrete adapters,
strategies and servicers, builds them from a Config, and runs the grpc.aio
server with health, reflection, active health checks (which also discover models) and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Callable

import grpc
import httpx
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from gateway import __version__, reflection
from adapters.base import Adapter
from adapters.http import build_client
from adapters.ollama import OllamaAdapter
from adapters.openai import Dialect, OpenAIAdapter
from gateway.auth import KeyRing
from gateway.catalog import Catalog
from gateway.config import BackendConfig, Config, SessionsConfig, TlsConfig
from gateway.dispatch import Dispatcher
from gateway.domain import BackendKind
from gateway.errors import BackendError
from gateway.guard import Guard
from gateway.metrics import Metrics
from gateway.tracing import Tracing
from gateway.reload import Reloader
from gateway.workers import serve_workers
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
from gateway.services.embed import EmbeddingServicer
from gateway.services.generate import GenerateServicer
from gateway.services.model import ModelServicer
from gateway.services.routes import describe_routes
from gateway.services.session import SessionServicer
from gateway.sessions.conversation import Conversations
from gateway.sessions.memory import MemoryStore
from gateway.sessions.redis import RedisStore
from gateway.sessions.sqlite import SqliteStore
from gateway.sessions.store import SessionStore, StoreLimits
from turnout.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    generate_pb2,
    generate_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

log = logging.getLogger("turnout")
TransportFactory = Callable[[BackendConfig], httpx.AsyncBaseTransport | None]
SERVICES = (
    generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name,
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
)


def build_adapter(
    backend: BackendConfig, transport: httpx.AsyncBaseTransport | None = None, trace_context: bool = False
) -> Adapter:
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else None
    client = build_client(backend.url, backend.http, headers=headers, transport=transport, trace_context=trace_context)
    if backend.kind is BackendKind.OLLAMA:
        return OllamaAdapter(backend.name, client)
    return OpenAIAdapter(backend.name, client, Dialect(backend.max_tokens_field, backend.send_reasoning))


class TlsCredentials:
    """Server TLS from PEM files, re-read on `reload()` (SIGHUP): the new
    certificate serves every handshake after it; open connections keep theirs."""

    def __init__(self, tls: TlsConfig) -> None:
        self._tls = tls
        self._reload = threading.Event()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=bool(tls.client_ca)
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        read = lambda path: Path(path).read_bytes()  # noqa: E731
        return grpc.ssl_server_certificate_configuration(
            [(read(self._tls.key), read(self._tls.cert))],
            root_certificates=read(self._tls.client_ca) if self._tls.client_ca else None,
        )

    def reload(self) -> None:
        self._reload.set()

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        if not self._reload.is_set():
            return None
        self._reload.clear()
        try:
            configuration = self._configuration()
        except (OSError, ValueError) as exc:
            log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return None
        log.info("TLS certificate reloaded")
        return configuration


async def open_store(config: SessionsConfig) -> SessionStore:
    limits = StoreLimits(max_frames=config.max_frames)
    if config.store == "memory":
        return MemoryStore(limits)
    if config.store == "redis":
        return RedisStore(config.redis_url, limits)
    store = SqliteStore(config.path, limits)
    await store.open()
    return store


class Gateway:
    """One gateway process: `await start()`, then `await stop()`."""

    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry | None = None,
        transport_for: TransportFactory = lambda backend: None,
    ) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry, __version__)
        self.metrics.declare_backends([b.name for b in config.backends])
        self.states = {b.name: BackendState(b.name, config.outlier_detection) for b in config.backends}
        self.tracing = Tracing(config.tracing, config.backends)
        self.adapters = {b.name: build_adapter(b, transport_for(b), self.tracing.enabled) for b in config.backends}
        self.catalog = Catalog({b.name: b.models for b in config.backends})
        router = Router(
            config.routes, config.rules, config.default_route, config.backends, self.catalog, self._strategy
        )
        scheduling = config.scheduler
        self.loads = {
            b.name: BackendLoad(b.name, b.max_concurrency, stale_after=3 * scheduling.poll_interval)
            for b in config.backends
        }
        for b in config.backends:
            if b.max_concurrency is not None:
                self.metrics.backend_capacity.labels(b.name).set(b.max_concurrency)
        slots = (
            RedisSlots(scheduling.redis_url, scheduling.lease_ttl) if scheduling.store == "redis"
            else MemorySlots(config.workers)
        )
        index = (
            RedisPrefixIndex(scheduling.redis_url, scheduling.prefix_blocks) if scheduling.store == "redis"
            else PrefixIndex(scheduling.prefix_blocks)
        )
        self.scheduler = Scheduler(self.loads, slots, index, self.metrics)
        self.poller = LoadPoller(
            config.backends, self.loads, slots, self.metrics, scheduling.poll_interval, self.scheduler.pump
        )
        self.dispatcher = Dispatcher(
            router, self.states, self.adapters, self.metrics, self.scheduler, tracing=self.tracing
        )
        self.port = 0
        self.tls = TlsCredentials(config.tls) if config.tls.enabled else None
        self.guard = Guard(KeyRing(config.api_keys), self.metrics)
        self.store: SessionStore | None = None
        self._health_checks: asyncio.Task[None] | None = None

    def _strategy(self, name: str) -> Strategy:
        if name == "weighted_round_robin":
            return SmoothWeightedRoundRobin()
        if name in ("least_used", "adaptive"):
            return LeastUsed(lambda target: self.states[target.backend].in_flight)
        return PriorityOrder()

    async def start(self) -> int:
        """Builds the grpc.aio server (in the running loop, which it binds to)
        and starts serving."""
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[i for i in (self.tracing.interceptor(), self.guard) if i],
            options=[
                ("grpc.max_receive_message_length", self.config.limits.max_request_bytes),
                ("grpc.so_reuseport", 1 if self.config.workers > 1 else 0),
            ]
        )
        self.store = await open_store(self.config.sessions)
        conversations = Conversations(self.store, self.config.sessions)
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(
            GenerateServicer(self.dispatcher, conversations, self.metrics, self.config.limits), self.server
        )
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingServicer(self.dispatcher, self.metrics, self.config.limits), self.server
        )
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(self.store, self.config.sessions, self.config.limits), self.server
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(
                self.config.backends, self.states, self.adapters, self.catalog, self.refresh, self.scheduler,
                routes=describe_routes(self.config),
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME), self.server)
        if self.tls is not None:
            self.port = self.server.add_secure_port(self.config.listen, self.tls.credentials)
        else:
            self.port = self.server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await self._probe_all()
        await self.poller.start()
        await self.server.start()
        for service in ("", *SERVICES):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._health_checks = asyncio.create_task(self._check_forever())
        return self.port

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
                await self._probe_all()
            else:
                await self._probe_all(down)

    async def _probe_all(self, names: Iterable[str] | None = None) -> None:
        await asyncio.gather(*(self.refresh(name) for name in (self.adapters if names is None else names)))
        record_route_health(self.metrics.route_healthy_targets, self.config.routes, self.states, time.monotonic())

    async def stop(self, grace: float | None = None) -> None:
        """Health turns NOT_SERVING, new calls are refused, in-flight calls get
        `grace` seconds to finish, then everything is closed."""
        await self.health.enter_graceful_shutdown()
        if self._health_checks is not None:
            self._health_checks.cancel()
        await self.server.stop(self.config.shutdown_grace if grace is None else grace)
        await self.poller.aclose()
        await self.scheduler.close()
        await asyncio.gather(*(adapter.aclose() for adapter in self.adapters.values()))
        if self.store is not None:
            await self.store.close()
        await asyncio.to_thread(self.tracing.shutdown)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_until_signalled(gateway: Gateway, reload: Callable[[], None] | None = None) -> None:
    """Starts the gateway, waits for SIGTERM or SIGINT, then drains it."""
    port = await gateway.start()
    config = gateway.config
    host = config.listen.rsplit(":", 1)[0]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload or Reloader(gateway, None))
    log.info("turnout listening on %s:%d with backends %s", host, port, ", ".join(gateway.adapters) or "none")
    await stopping.wait()
    log.info("draining: refusing new calls, %.0fs grace for in-flight streams", config.shutdown_grace)
    await gateway.stop()
    log.info("stopped")


class ListenError(OSError):
    """The listen address is taken: one readable line, not a traceback."""


def claim_port(listen: str) -> None:
    """Fails when anything listens on `listen` already. Checked with a plain
    bind (no SO_REUSEPORT) before gRPC binds with it, so a second `turnout
    serve` on a served port refuses to start instead of silently taking a
    share of its connections."""
    host, port = split_address(listen)
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ListenError(f"cannot listen on {listen}: {exc.strerror} (is another turnout serving it?)") from None


def serve(config: Config, path: str | None = None, overrides: dict[str, object] | None = None) -> int:
    """`turnout serve`: one process, or `workers` processes sharing the port.
    `path` is the config file SIGHUP re-reads (with `overrides` applied)."""
    claim_port(config.listen)
    if config.workers > 1:
        return serve_workers(config, path, overrides)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's reload handler replaces it
    gateway = Gateway(config)
    metrics_server, _ = start_http_server(*reversed(split_address(config.metrics_listen)), registry=gateway.registry)
    try:
        asyncio.run(run_until_signalled(gateway, Reloader(gateway, path, overrides)))
    finally:
        metrics_server.shutdown()
    return 0
