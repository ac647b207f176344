"""The composition root: builds the servicers, the session store and the
routing runtime (gateway/runtime.py: adapters, strategies, scheduler, health
checks) from a Config, and runs the grpc.aio server with health, reflection,
SIGHUP reloads (gateway/reload.py) and graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from gateway import __version__, reflection
from gateway.auth import KeyRing
from gateway.config import Config, SessionsConfig, TlsConfig
from gateway.guard import Guard
from gateway.metrics import Metrics
from gateway.tracing import Tracing
from gateway.reload import Reloader
from gateway.runtime import Runtime, Runtimes, TransportFactory
from gateway.workers import serve_workers
from gateway.services.embed import EmbeddingServicer
from gateway.services.generate import GenerateServicer
from gateway.services.model import ModelServicer
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
SERVICES = (
    generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name,
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
)


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
        self.tracing = Tracing(config.tracing)
        self._transport_for = transport_for
        self.runtimes = Runtimes(Runtime(config, self.metrics, self.tracing, transport_for))
        self.port = 0
        self.tls = TlsCredentials(config.tls) if config.tls.enabled else None
        self.guard = Guard(KeyRing(config.api_keys), self.metrics)
        self.store: SessionStore | None = None

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
        runtimes = self.runtimes
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(
            GenerateServicer(runtimes, conversations, self.metrics), self.server
        )
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(runtimes, self.metrics), self.server)
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(self.store, self.config.sessions, lambda: runtimes.current.limits), self.server
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(runtimes), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME), self.server)
        if self.tls is not None:
            self.port = self.server.add_secure_port(self.config.listen, self.tls.credentials)
        else:
            self.port = self.server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await self.runtimes.current.start()
        await self.server.start()
        for service in ("", *SERVICES):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def apply(self, config: Config) -> None:
        """Serves `config`'s backends, routes, rules and limits from now on (a
        reload): the new runtime is built beside the running one and started
        (its backends probed), then swapped in; if that fails, nothing changed."""
        runtime = Runtime(config, self.metrics, self.tracing, self._transport_for, previous=self.runtimes.current)
        try:
            await runtime.start()
        except BaseException:
            await self.runtimes.discard(runtime)
            raise
        self.config = config
        await self.runtimes.swap(runtime)

    async def stop(self, grace: float | None = None) -> None:
        """Health turns NOT_SERVING, new calls are refused, in-flight calls get
        `grace` seconds to finish, then everything is closed."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.shutdown_grace if grace is None else grace)
        await self.runtimes.aclose()
        if self.store is not None:
            await self.store.close()
        await asyncio.to_thread(self.tracing.shutdown)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_until_signalled(gateway: Gateway, reload: Callable[[], None] | None = None) -> None:
    """Starts the gateway, waits for SIGTERM or SIGINT, then drains it."""
    port = await gateway.start()
    gc.freeze()  # what start-up built lives as long as the process: full collections need not walk it
    host = gateway.config.listen.rsplit(":", 1)[0]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload or Reloader(gateway, None))
    backends = ", ".join(gateway.runtimes.current.backends) or "none"
    log.info("turnout listening on %s:%d with backends %s", host, port, backends)
    await stopping.wait()
    log.info("draining: refusing new calls, %.0fs grace for in-flight streams", gateway.config.shutdown_grace)
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
