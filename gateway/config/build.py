"""From the read YAML document to a Config: one builder per section, each
rejecting unknown keys and naming the key and line of every problem."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import redis.connection

from adapters.http import HttpSettings
from gateway.auth import ApiKey, digest
from gateway.config.reader import Section, is_env_reference
from gateway.config.types import (
    AFFINITIES,
    MAX_TOKENS_FIELDS,
    OTLP_PROTOCOLS,
    LOAD_SIGNALS,
    SCHEDULER_STORES,
    SESSION_STORES,
    STRATEGIES,
    BackendConfig,
    Config,
    HealthCheckConfig,
    LimitsConfig,
    LoggingConfig,
    QueueConfig,
    RetryConfig,
    RouteConfig,
    RuleConfig,
    SchedulerConfig,
    SessionsConfig,
    SpillConfig,
    TargetConfig,
    TlsConfig,
    TracingConfig,
)
from gateway.domain import BackendKind
from gateway.logs import FORMATS, LEVELS
from gateway.routing.state import OutlierPolicy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _percent(value: float) -> str | None:
    return None if 0 <= value <= 100 else "must be between 0 and 100"


def _fraction(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _name(value: str) -> str | None:
    return None if _NAME.match(value) else "must be a name of letters, digits and . _ : / -"


def build(root: Section) -> Config:
    backends = tuple(_backend(s) for s in root.sections("backends"))
    _unique(root, "backends", [b.name for b in backends])
    by_name = {b.name: b for b in backends}
    routes = tuple(_route(s, by_name) for s in root.sections("routes"))
    _unique(root, "routes", [r.name for r in routes])
    route_names = {r.name for r in routes}
    rules = tuple(_rule(s, route_names) for s in root.sections("rules"))
    default_route = root.text("default_route")
    if default_route and default_route not in route_names:
        raise root.error("default_route", f"names no route (routes: {', '.join(sorted(route_names)) or 'none'})")
    config = Config(
        listen=root.text("listen", Config().listen),
        metrics_listen=root.text("metrics_listen", Config().metrics_listen),
        workers=root.get("workers", int, Config().workers, _positive),
        default_route=default_route,
        shutdown_grace=root.duration("shutdown_grace", Config().shutdown_grace),
        health_check=_health_check(root.section("health_check")),
        scheduler=_scheduler(root.section("scheduler")),
        outlier_detection=_outlier(root.section("outlier_detection")),
        sessions=_sessions(root.section("sessions")),
        limits=_limits(root.section("limits")),
        logging=_logging(root.section("logging")),
        tls=_tls(root.section("tls")),
        tracing=_tracing(root.section("tracing")),
        api_keys=_api_keys(root),
        backends=backends,
        routes=routes,
        rules=rules,
    )
    root.done()
    return config


def _unique(root: Section, name: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(names):
        if item in seen:
            raise root.error(f"{name}[{i}].name", f"duplicate name {item!r}")
        seen.add(item)


def _backend(s: Section) -> BackendConfig:
    name = s.get("name", str, "", _name)
    if not name:
        raise s.error("name", "is required")
    kind_text = s.text("kind", required=True)
    try:
        kind = BackendKind(kind_text)
    except ValueError:
        raise s.error("kind", f"must be one of {', '.join(k.value for k in BackendKind)}, got {kind_text!r}") from None
    url = s.text("url", required=True).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise s.error("url", "must be an http:// or https:// URL")
    api_key = _api_key(s)
    http = HttpSettings(
        connect_timeout=s.duration("connect_timeout", HttpSettings().connect_timeout),
        read_timeout=s.duration("read_timeout", HttpSettings().read_timeout),
        max_connections=s.get("max_connections", int, HttpSettings().max_connections, _positive),
    )
    config = BackendConfig(
        name=name,
        kind=kind,
        url=url,
        api_key=api_key,
        weight=s.get("weight", int, 1, _positive),
        priority=s.get("priority", int, 0, _non_negative),
        models=tuple(_strings(s, "models")),
        http=http,
        max_tokens_field=_max_tokens_field(s, kind),
        send_reasoning=_send_reasoning(s, kind),
        max_concurrency=s.get("max_concurrency", int, 0, _positive) or None,
        load_signal=_choice(s, "load_signal", LOAD_SIGNALS, "auto"),
    )
    s.done()
    return config


def _send_reasoning(s: Section, kind: BackendKind) -> bool:
    """Whether assistant messages go to an OpenAI-compatible backend with their
    reasoning as `reasoning_content` (Ollama always gets it as `thinking`)."""
    if kind is not BackendKind.OPENAI and s.raw("send_reasoning") is not None:
        raise s.error("send_reasoning", "applies only to kind: openai (Ollama always gets reasoning as `thinking`)")
    return s.get("send_reasoning", bool, False)


def _max_tokens_field(s: Section, kind: BackendKind) -> str:
    """The request field an OpenAI-compatible backend reads the token limit
    from: `max_completion_tokens` (OpenAI, vLLM, llama.cpp) unless the server
    reads only the deprecated `max_tokens` (Ollama's /v1, older servers)."""
    field = s.get("max_tokens_field", str, MAX_TOKENS_FIELDS[0])
    if field not in MAX_TOKENS_FIELDS:
        raise s.error("max_tokens_field", f"must be one of {', '.join(MAX_TOKENS_FIELDS)}, got {field!r}")
    if kind is not BackendKind.OPENAI and s.raw("max_tokens_field") is not None:
        raise s.error("max_tokens_field", "applies only to kind: openai (Ollama's /api/chat reads num_predict)")
    return field


def _api_key(s: Section) -> str | None:
    """API keys come from the environment (${VAR}) or a file, never from the
    config text itself, so a config can be shared without leaking a secret."""
    raw = s.raw("api_key")
    key_file = s.text("api_key_file")
    if raw is not None and key_file:
        raise s.error("api_key", "set api_key or api_key_file, not both")
    if key_file:
        try:
            return Path(key_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise s.error("api_key_file", f"cannot read {key_file!r}: {exc.strerror}") from exc
    if raw is None:
        return None
    if not isinstance(raw, str) or not is_env_reference(raw):
        raise s.error("api_key", "must be an environment reference such as ${CLOUD_KEY} (or use api_key_file); "
                      "secrets are not accepted as literal config text")
    return s.interpolate("api_key", raw.strip()) or None


def _strings(s: Section, name: str) -> list[str]:
    value = s.raw(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise s.error(name, "must be a list of non-empty strings")
    return [s.interpolate(name, v) for v in value]


def _route(s: Section, backends: Mapping[str, BackendConfig]) -> RouteConfig:
    name = s.get("name", str, "", _name)
    if not name:
        raise s.error("name", "is required")
    strategy = s.text("strategy", "priority")
    if strategy not in STRATEGIES:
        raise s.error("strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    targets = []
    for t in s.sections("targets"):
        backend_name = t.text("backend", required=True)
        backend = backends.get(backend_name)
        if backend is None:
            raise t.error("backend", f"names no backend (backends: {', '.join(backends) or 'none'})")
        targets.append(
            TargetConfig(
                backend=backend_name,
                model=t.text("model", required=True),
                weight=t.get("weight", int, backend.weight, _positive),
                priority=t.get("priority", int, backend.priority, _non_negative),
                first_token_timeout=_optional_duration(t, "first_token_timeout"),
                options=_options(t),
            )
        )
        t.done()
    if not targets:
        raise s.error("targets", "a route needs at least one target")
    affinity = s.text("affinity", "none")
    if affinity not in AFFINITIES:
        raise s.error("affinity", f"must be one of {', '.join(AFFINITIES)}, got {affinity!r}")
    config = RouteConfig(
        name=name,
        strategy=strategy,
        targets=tuple(targets),
        retry=_retry(s.section("retry")),
        first_token_timeout=_optional_duration(s, "first_token_timeout"),
        affinity=affinity,
        options=_options(s),
        queue=_queue(s.section("queue")),
        spill=_spill(s.section("spill")) if s.data.get("spill") is not None else None,
    )
    s.done()
    return config


def _options(s: Section) -> dict[str, object]:
    """`options:` backend option defaults (a mapping passed through as JSON),
    overridden key by key by a request's backend_options."""
    value = s.raw("options")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise s.error("options", "must be a mapping of option names to values, e.g. {num_ctx: 8192}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise s.error("options", f"must hold JSON values only ({exc})") from None
    return value


def _choice(s: Section, name: str, choices: tuple[str, ...], default: str) -> str:
    value = s.text(name, default)
    if value not in choices:
        raise s.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _queue(s: Section) -> QueueConfig:
    defaults = QueueConfig()
    config = QueueConfig(
        max_wait=s.duration("max_wait", defaults.max_wait),
        max_size=s.get("max_size", int, defaults.max_size, _non_negative),
    )
    if config.max_wait < 0:
        raise s.error("max_wait", "must be 0 or more")
    s.done()
    return config


def _spill(s: Section) -> SpillConfig:
    utilization = s.get("utilization", float, -1.0)
    if s.data.get("utilization") is not None and not 0 < utilization <= 1:
        raise s.error("utilization", "must be a fraction in (0, 1]")
    config = SpillConfig(
        utilization=utilization if utilization > 0 else None,
        max_queue_wait=s.duration("max_queue_wait", SpillConfig().max_queue_wait),
    )
    if config.max_queue_wait < 0:
        raise s.error("max_queue_wait", "must be 0 or more")
    s.done()
    return config


def _redis_url(s: Section, default: str) -> str:
    """A URL the Redis client accepts (checked here, not when the store is first built)."""
    url = s.text("redis_url", default)
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise s.error("redis_url", f"is not a Redis URL: {exc}") from None
    return url


def _scheduler(s: Section) -> SchedulerConfig:
    defaults = SchedulerConfig()
    config = SchedulerConfig(
        store=_choice(s, "store", SCHEDULER_STORES, defaults.store),
        redis_url=_redis_url(s, defaults.redis_url),
        poll_interval=s.duration("poll_interval", defaults.poll_interval),
        lease_ttl=s.duration("lease_ttl", defaults.lease_ttl),
        prefix_blocks=s.get("prefix_blocks", int, defaults.prefix_blocks, _positive),
    )
    for name in ("poll_interval", "lease_ttl"):
        if getattr(config, name) <= 0:
            raise s.error(name, "must be greater than 0")
    s.done()
    return config


def _optional_duration(s: Section, name: str) -> float | None:
    value = s.duration(name, 0.0)
    if s.data.get(name) is not None and value <= 0:
        raise s.error(name, "must be greater than 0")
    return value or None


def _retry(s: Section) -> RetryConfig:
    defaults = RetryConfig()
    config = RetryConfig(
        attempts=s.get("attempts", int, defaults.attempts, _positive),
        backoff=s.duration("backoff", defaults.backoff),
        max_backoff=s.duration("max_backoff", defaults.max_backoff),
        budget_percent=s.get("budget_percent", float, defaults.budget_percent, _percent),
        min_retry_concurrency=s.get("min_retry_concurrency", int, defaults.min_retry_concurrency, _non_negative),
    )
    s.done()
    return config


def _health_check(s: Section) -> HealthCheckConfig:
    defaults = HealthCheckConfig()
    config = HealthCheckConfig(
        interval=s.duration("interval", defaults.interval),
        timeout=s.duration("timeout", defaults.timeout),
        unhealthy_interval=s.duration("unhealthy_interval", defaults.unhealthy_interval),
    )
    for name in ("interval", "timeout", "unhealthy_interval"):
        value = getattr(config, name)
        if value <= 0:
            raise s.error(name, "must be greater than 0")
    s.done()
    return config


def _outlier(s: Section) -> OutlierPolicy:
    defaults = OutlierPolicy()
    config = OutlierPolicy(
        consecutive_failures=s.get("consecutive_failures", int, defaults.consecutive_failures, _positive),
        base_ejection=s.duration("base_ejection", defaults.base_ejection),
        max_ejection=s.duration("max_ejection", defaults.max_ejection),
    )
    if config.max_ejection < config.base_ejection:
        raise s.error("max_ejection", "must be at least base_ejection")
    s.done()
    return config


def _rule(s: Section, routes: set[str]) -> RuleConfig:
    when = s.section("when")
    task = when.text("task") or None
    pattern = when.text("match") or None
    when.done()
    if task is None and pattern is None:
        raise s.error("when", "needs `task` or `match`")
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise when.error("match", f"is not a valid regular expression: {exc}") from exc
    route = s.text("route", required=True)
    if route not in routes:
        raise s.error("route", f"names no route (routes: {', '.join(sorted(routes)) or 'none'})")
    s.done()
    return RuleConfig(route=route, task=task, match=compiled)


def _sessions(s: Section) -> SessionsConfig:
    store = s.text("store", SessionsConfig().store)
    if store not in SESSION_STORES:
        raise s.error("store", f"must be one of {', '.join(SESSION_STORES)}, got {store!r}")
    config = SessionsConfig(
        store=store,
        path=s.text("path", SessionsConfig().path),
        redis_url=_redis_url(s, SessionsConfig().redis_url),
        ttl=s.duration("ttl", SessionsConfig().ttl),
        max_turns=s.get("max_turns", int, SessionsConfig().max_turns, _positive),
        max_tokens=s.get("max_tokens", int, SessionsConfig().max_tokens, _positive),
        max_frames=s.get("max_frames", int, SessionsConfig().max_frames, _positive),
    )
    s.done()
    return config


def _tls(s: Section) -> TlsConfig:
    config = TlsConfig(cert=s.text("cert"), key=s.text("key"), client_ca=s.text("client_ca"))
    if bool(config.cert) != bool(config.key):
        raise s.error("key" if config.cert else "cert", "tls needs both cert and key")
    if config.client_ca and not config.cert:
        raise s.error("client_ca", "mutual TLS needs cert and key too")
    for name in ("cert", "key", "client_ca"):
        path = getattr(config, name)
        if path and not Path(path).is_file():
            raise s.error(name, f"no such file: {path}")
    s.done()
    return config


def _tracing(s: Section) -> TracingConfig:
    """`tracing:`, falling back to the standard OTEL_* variables for what it
    leaves out; header values, like API keys, only from the environment."""
    env = s.env
    endpoint = s.text("endpoint")
    protocol = s.text("protocol") or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL") or TracingConfig().protocol
    if protocol not in OTLP_PROTOCOLS:
        raise s.error("protocol", f"must be one of {', '.join(OTLP_PROTOCOLS)}, got {protocol!r}")
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        raise s.error("endpoint", "must be an http:// or https:// URL, such as http://127.0.0.1:4318")
    ratio = None if s.raw("sampler_ratio") is None else s.get("sampler_ratio", float, 1.0, _fraction)
    headers_section = s.section("headers")
    headers = []
    for name, raw in headers_section.data.items():
        if not isinstance(raw, str) or not is_env_reference(raw):
            raise headers_section.error(name, "must be an environment reference such as ${OTLP_TOKEN}; "
                                        "header values are not accepted as literal config text")
        headers.append((name.lower(), headers_section.interpolate(name, raw.strip())))
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    from_env = bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    config = TracingConfig(
        enabled=bool(endpoint or from_env) and not disabled,
        endpoint=endpoint,
        protocol=protocol,
        sampler_ratio=ratio,
        headers=tuple(headers),
        service_name=s.text("service_name") or env.get("OTEL_SERVICE_NAME") or TracingConfig().service_name,
        metadata=tuple(_strings(s, "metadata")),
    )
    s.done()
    return config


def _api_keys(root: Section) -> tuple[ApiKey, ...]:
    """`auth.keys`: each names exactly one source: `sha256` (hex digest of the
    key, safe to keep in config), `key_env` or `key_file`. `routes` lists the
    route or model names the key may use (omitted or "*": all); a name that
    matches nothing only denies."""
    auth = root.section("auth")
    keys = []
    for k in auth.sections("keys"):
        name = k.get("name", str, "", _name)
        if not name:
            raise k.error("name", "is required")
        sources = {source: k.text(source) for source in ("sha256", "key_env", "key_file")}
        given = [source for source, value in sources.items() if value]
        if len(given) != 1:
            raise k.error("name", "give exactly one of sha256, key_env, key_file")
        if sources["sha256"]:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", sources["sha256"]):
                raise k.error("sha256", "must be 64 hexadecimal characters (sha256 of the key)")
            key_digest = bytes.fromhex(sources["sha256"])
        elif sources["key_env"]:
            if not k.env.get(sources["key_env"]):
                raise k.error("key_env", f"environment variable {sources['key_env']} is not set")
            key_digest = digest(k.env[sources["key_env"]])
        else:
            try:
                key_digest = digest(Path(sources["key_file"]).read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise k.error("key_file", f"cannot read {sources['key_file']!r}: {exc.strerror}") from exc
        allowed = _strings(k, "routes")
        keys.append(ApiKey(
            name=name, digest=key_digest,
            routes=None if not allowed or "*" in allowed else frozenset(allowed),
            admin=k.get("admin", bool, False),
            max_concurrent_streams=k.get("max_concurrent_streams", int, 0, _non_negative) or None,
            requests_per_minute=k.get("requests_per_minute", int, 0, _non_negative) or None,
        ))
        k.done()
    names = [key.name for key in keys]
    _unique(auth, "keys", names)
    auth.done()
    return tuple(keys)


def _logging(s: Section) -> LoggingConfig:
    config = LoggingConfig(level=s.text("level", "info").lower(), format=s.text("format", "text").lower())
    if config.level not in LEVELS:
        raise s.error("level", f"must be one of {', '.join(LEVELS)}, got {config.level!r}")
    if config.format not in FORMATS:
        raise s.error("format", f"must be one of {', '.join(FORMATS)}, got {config.format!r}")
    s.done()
    return config


def _limits(s: Section) -> LimitsConfig:
    config = LimitsConfig(
        max_messages=s.get("max_messages", int, LimitsConfig().max_messages, _positive),
        max_message_bytes=s.get("max_message_bytes", int, LimitsConfig().max_message_bytes, _positive),
        max_request_bytes=s.get("max_request_bytes", int, LimitsConfig().max_request_bytes, _positive),
        max_tools=s.get("max_tools", int, LimitsConfig().max_tools, _positive),
        max_metadata_entries=s.get("max_metadata_entries", int, LimitsConfig().max_metadata_entries, _positive),
        max_metadata_bytes=s.get("max_metadata_bytes", int, LimitsConfig().max_metadata_bytes, _positive),
        max_embed_inputs=s.get("max_embed_inputs", int, LimitsConfig().max_embed_inputs, _positive),
        max_embed_input_bytes=s.get("max_embed_input_bytes", int, LimitsConfig().max_embed_input_bytes, _positive),
        max_response_bytes=s.get("max_response_bytes", int, LimitsConfig().max_response_bytes, _positive),
    )
    s.done()
    return config
