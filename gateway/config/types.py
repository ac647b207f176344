"""The typed, frozen values the config module hands to constructors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from adapters.http import HttpSettings
from gateway.auth import ApiKey
from gateway.domain import BackendKind
from gateway.routing.state import OutlierPolicy

STRATEGIES = ("weighted_round_robin", "least_used", "priority", "adaptive")
LOAD_SIGNALS = ("auto", "none", "llamacpp", "vllm", "ollama")
SCHEDULER_STORES = ("memory", "redis")
AFFINITIES = ("none", "session")
SESSION_STORES = ("memory", "sqlite", "redis")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    kind: BackendKind
    url: str
    api_key: str | None = field(default=None, repr=False)
    weight: int = 1
    priority: int = 0
    models: tuple[str, ...] = ()
    http: HttpSettings = HttpSettings()
    max_tokens_field: str = "max_completion_tokens"
    send_reasoning: bool = False
    max_concurrency: int | None = None
    load_signal: str = "auto"


@dataclass(frozen=True, slots=True)
class TargetConfig:
    backend: str
    model: str
    weight: int
    priority: int
    first_token_timeout: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """`attempts` includes the first; backoff before attempt n is
    min(backoff * 2^(n-2), max_backoff) with +-20% jitter. The retry budget
    (Envoy's): retries in flight at most `budget_percent` of the route's
    attempts in flight, but at least `min_retry_concurrency`."""

    attempts: int = 3
    backoff: float = 0.025
    max_backoff: float = 0.25
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How requests wait in turnout when every target of the best tier is at
    capacity: first in, first out, at most `max_size` of them, each at most
    `max_wait` seconds (and never past the caller's deadline)."""

    max_wait: float = 10.0
    max_size: int = 512


@dataclass(frozen=True, slots=True)
class SpillConfig:
    """When a new request goes to the next tier at once instead of queueing:
    the tier's in-flight is at or above `utilization` of its capacity (unset:
    not used), or no slot is free and the expected wait exceeds
    `max_queue_wait` seconds."""

    utilization: float | None = None
    max_queue_wait: float = 0.0


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Where capacity leases and the prefix index live (`memory`: per
    process; `redis`: shared by every worker and replica on `redis_url`), how
    often backends' load signals are polled, and how long a lease outlives a
    process that stopped renewing it."""

    store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    poll_interval: float = 0.5
    lease_ttl: float = 15.0
    prefix_blocks: int = 16_384


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    strategy: str
    targets: tuple[TargetConfig, ...]
    retry: RetryConfig = RetryConfig()
    first_token_timeout: float | None = None
    affinity: str = "none"
    options: Mapping[str, object] = field(default_factory=dict)
    queue: QueueConfig = QueueConfig()
    spill: SpillConfig | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active probes: each backend's model list is read every `interval`;
    success marks it up (and refreshes its models), failure marks it down.
    A backend that is down is probed every `unhealthy_interval` instead, so it
    returns soon after it recovers (Envoy's `unhealthy_interval`)."""

    interval: float = 10.0
    timeout: float = 5.0
    unhealthy_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class RuleConfig:
    route: str
    task: str | None = None
    match: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    store: str = "sqlite"
    path: str = "./.turnout/sessions.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    ttl: float = 86400.0
    max_turns: int = 50
    max_tokens: int = 16384
    max_frames: int = 10_000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_messages: int = 1024
    max_message_bytes: int = 1 << 20
    max_request_bytes: int = 16 << 20
    max_tools: int = 128
    max_metadata_entries: int = 64
    max_metadata_bytes: int = 16 << 10
    max_embed_inputs: int = 2048
    max_embed_input_bytes: int = 256 << 10
    max_response_bytes: int = 64 << 20


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server certificate and key (PEM files); with `client_ca`, clients must
    present a certificate signed by it (mutual TLS)."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry export (SPEC §8), on when an endpoint is configured here
    or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT. `endpoint` is the collector's
    base URL (http/protobuf appends /v1/traces); empty means the exporter
    reads the OTEL_* variables itself. `sampler_ratio` None leaves sampling
    to OTEL_TRACES_SAMPLER (default: parent-based, always on). `headers` are
    sent with every export (values only from the environment); `metadata`
    names the request metadata keys whose values become span attributes."""

    enabled: bool = False
    endpoint: str = ""
    protocol: str = "http/protobuf"
    sampler_ratio: float | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    service_name: str = "turnout"
    metadata: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    workers: int = 1
    default_route: str = ""
    shutdown_grace: float = 10.0
    health_check: HealthCheckConfig = HealthCheckConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    outlier_detection: OutlierPolicy = OutlierPolicy()
    sessions: SessionsConfig = SessionsConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    tls: TlsConfig = TlsConfig()
    tracing: TracingConfig = TracingConfig()
    api_keys: tuple[ApiKey, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
