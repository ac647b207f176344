"""Configuration: the only module that reads config files and the environment.

`load(path)` parses one YAML file, interpolates `${VAR}` / `${VAR:-default}`
from the environment, rejects unknown keys, and returns frozen, typed values.
Every error names the key path and the line (`routes[0].targets[1].backend
(line 14): ...`). `embedded_default(env)` is what `turnout serve` runs with no
file: Ollama at $OLLAMA_HOST, plus an OpenAI-compatible fallback when
OPENAI_BASE_URL or OPENAI_API_KEY is set.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from adapters.http import HttpSettings
from gateway.auth import ApiKey, digest
from gateway.domain import BackendKind
from gateway.logs import FORMATS, LEVELS
from gateway.routing.state import OutlierPolicy

STRATEGIES = ("weighted_round_robin", "least_used", "priority")
AFFINITIES = ("none", "session")
SESSION_STORES = ("memory", "sqlite", "redis")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

T = TypeVar("T")


class ConfigError(Exception):
    """A config problem; the message names the key path and, from a file, the line."""


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


@dataclass(frozen=True, slots=True)
class TargetConfig:
    backend: str
    model: str
    weight: int
    priority: int
    first_token_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """`attempts` includes the first; backoff before attempt n is
    min(backoff * 2^(n-2), max_backoff) with +-20% jitter."""

    attempts: int = 3
    backoff: float = 0.025
    max_backoff: float = 0.25


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    strategy: str
    targets: tuple[TargetConfig, ...]
    retry: RetryConfig = RetryConfig()
    first_token_timeout: float | None = None
    affinity: str = "none"


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active probes: each backend's model list is read every `interval`;
    success marks it up (and refreshes its models), failure marks it down."""

    interval: float = 10.0
    timeout: float = 5.0


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
class Config:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    workers: int = 1
    default_route: str = ""
    shutdown_grace: float = 10.0
    health_check: HealthCheckConfig = HealthCheckConfig()
    outlier_detection: OutlierPolicy = OutlierPolicy()
    sessions: SessionsConfig = SessionsConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    tls: TlsConfig = TlsConfig()
    api_keys: tuple[ApiKey, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()


def redact_url(url: str) -> str:
    """The URL with any user:password replaced by '***'."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    return parse(text, os.environ if env is None else env)


def parse(text: str, env: Mapping[str, str]) -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config is not valid YAML: {exc}") from exc
    if node is None:
        return _build(_Section({}, "", {}, env))
    lines: dict[str, int] = {}
    data = _plain(node, "", lines)
    return _build(_Section(data, "", lines, env))


def embedded_default(env: Mapping[str, str]) -> Config:
    """Ollama at $OLLAMA_HOST (default 127.0.0.1:11434) with its models
    discovered, plus an OpenAI-compatible fallback in priority tier 1 when
    OPENAI_BASE_URL or OPENAI_API_KEY is set."""
    host = env.get("OLLAMA_HOST", "").strip() or "127.0.0.1:11434"
    if "://" not in host:
        host = "http://" + host
    backends = [BackendConfig(name="ollama", kind=BackendKind.OLLAMA, url=host.rstrip("/"))]
    if env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY"):
        backends.append(
            BackendConfig(
                name="openai",
                kind=BackendKind.OPENAI,
                url=(env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/"),
                api_key=env.get("OPENAI_API_KEY") or None,
                priority=1,
            )
        )
    return Config(backends=tuple(backends))


def _plain(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    """YAML node -> plain Python values, recording the line of every key path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError(f"{child} (line {key_node.start_mark.line + 1}): duplicate key")
            out[key] = _plain(value_node, child, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, f"{path}[{i}]", lines) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node, deep=True)


class _Section:
    """A mapping being read: typed getters that know the key path and line."""

    def __init__(self, data: Any, path: str, lines: dict[str, int], env: Mapping[str, str]):
        self.path, self.lines, self.env = path, lines, env
        if not isinstance(data, dict):
            raise self.error("", f"must be a mapping, not {type(data).__name__}")
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        path = self.key(name) if name else (self.path or "the config")
        line = self.lines.get(path) or self.lines.get(self.path)
        where = f" (line {line})" if line else ""
        return ConfigError(f"{path}{where}: {message}")

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def get(self, name: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None) -> T:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, str) and kind is not str:
            value = self.interpolate(name, value)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"must be {kind.__name__}, got {value!r}")
        if kind is str:
            value = self.interpolate(name, value)  # type: ignore[assignment]
        problem = check(value) if check else None
        if problem:
            raise self.error(name, problem)
        return value

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        value = self.get(name, str, default)
        if required and not value:
            raise self.error(name, "is required")
        return value

    def duration(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        text = self.interpolate(name, str(value)).strip()
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise self.error(name, f"must be a duration such as 500ms, 10s, 5m or 24h, got {value!r}")
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)

    def sections(self, name: str) -> list[_Section]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(name, "must be a list")
        return [_Section(item, f"{self.key(name)}[{i}]", self.lines, self.env) for i, item in enumerate(value)]

    def section(self, name: str) -> _Section:
        value = self.raw(name)
        return _Section({} if value is None else value, self.key(name), self.lines, self.env)

    def interpolate(self, name: str, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            if var in self.env:
                return self.env[var]
            if default is not None:
                return default
            raise self.error(name, f"environment variable {var} is not set")

        return _ENV.sub(substitute, value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], f"unknown key (known keys: {', '.join(sorted(self.used))})")


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _name(value: str) -> str | None:
    return None if _NAME.match(value) else "must be a name of letters, digits and . _ : / -"


def _build(root: _Section) -> Config:
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
        outlier_detection=_outlier(root.section("outlier_detection")),
        sessions=_sessions(root.section("sessions")),
        limits=_limits(root.section("limits")),
        logging=_logging(root.section("logging")),
        tls=_tls(root.section("tls")),
        api_keys=_api_keys(root),
        backends=backends,
        routes=routes,
        rules=rules,
    )
    root.done()
    return config


def _unique(root: _Section, name: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(names):
        if item in seen:
            raise root.error(f"{name}[{i}].name", f"duplicate name {item!r}")
        seen.add(item)


def _backend(s: _Section) -> BackendConfig:
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
    )
    s.done()
    return config


def _api_key(s: _Section) -> str | None:
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
    if not isinstance(raw, str) or not _ENV.fullmatch(raw.strip()):
        raise s.error("api_key", "must be an environment reference such as ${CLOUD_KEY} (or use api_key_file); "
                      "secrets are not accepted as literal config text")
    return s.interpolate("api_key", raw.strip()) or None


def _strings(s: _Section, name: str) -> list[str]:
    value = s.raw(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise s.error(name, "must be a list of non-empty strings")
    return [s.interpolate(name, v) for v in value]


def _route(s: _Section, backends: Mapping[str, BackendConfig]) -> RouteConfig:
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
    )
    s.done()
    return config


def _optional_duration(s: _Section, name: str) -> float | None:
    value = s.duration(name, 0.0)
    if s.data.get(name) is not None and value <= 0:
        raise s.error(name, "must be greater than 0")
    return value or None


def _retry(s: _Section) -> RetryConfig:
    defaults = RetryConfig()
    config = RetryConfig(
        attempts=s.get("attempts", int, defaults.attempts, _positive),
        backoff=s.duration("backoff", defaults.backoff),
        max_backoff=s.duration("max_backoff", defaults.max_backoff),
    )
    s.done()
    return config


def _health_check(s: _Section) -> HealthCheckConfig:
    defaults = HealthCheckConfig()
    config = HealthCheckConfig(
        interval=s.duration("interval", defaults.interval),
        timeout=s.duration("timeout", defaults.timeout),
    )
    for name, value in (("interval", config.interval), ("timeout", config.timeout)):
        if value <= 0:
            raise s.error(name, "must be greater than 0")
    s.done()
    return config


def _outlier(s: _Section) -> OutlierPolicy:
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


def _rule(s: _Section, routes: set[str]) -> RuleConfig:
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


def _sessions(s: _Section) -> SessionsConfig:
    store = s.text("store", SessionsConfig().store)
    if store not in SESSION_STORES:
        raise s.error("store", f"must be one of {', '.join(SESSION_STORES)}, got {store!r}")
    config = SessionsConfig(
        store=store,
        path=s.text("path", SessionsConfig().path),
        redis_url=s.text("redis_url", SessionsConfig().redis_url),
        ttl=s.duration("ttl", SessionsConfig().ttl),
        max_turns=s.get("max_turns", int, SessionsConfig().max_turns, _positive),
        max_tokens=s.get("max_tokens", int, SessionsConfig().max_tokens, _positive),
        max_frames=s.get("max_frames", int, SessionsConfig().max_frames, _positive),
    )
    s.done()
    return config


def _tls(s: _Section) -> TlsConfig:
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


def _api_keys(root: _Section) -> tuple[ApiKey, ...]:
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


def _logging(s: _Section) -> LoggingConfig:
    config = LoggingConfig(level=s.text("level", "info").lower(), format=s.text("format", "text").lower())
    if config.level not in LEVELS:
        raise s.error("level", f"must be one of {', '.join(LEVELS)}, got {config.level!r}")
    if config.format not in FORMATS:
        raise s.error("format", f"must be one of {', '.join(FORMATS)}, got {config.format!r}")
    s.done()
    return config


def _limits(s: _Section) -> LimitsConfig:
    config = LimitsConfig(
        max_messages=s.get("max_messages", int, LimitsConfig().max_messages, _positive),
        max_message_bytes=s.get("max_message_bytes", int, LimitsConfig().max_message_bytes, _positive),
        max_request_bytes=s.get("max_request_bytes", int, LimitsConfig().max_request_bytes, _positive),
        max_tools=s.get("max_tools", int, LimitsConfig().max_tools, _positive),
        max_metadata_entries=s.get("max_metadata_entries", int, LimitsConfig().max_metadata_entries, _positive),
        max_metadata_bytes=s.get("max_metadata_bytes", int, LimitsConfig().max_metadata_bytes, _positive),
    )
    s.done()
    return config
