"""Configuration: the only package that reads config files and the environment.

`load(path)` parses one YAML file, interpolates `${VAR}` / `${VAR:-default}`
from the environment, rejects unknown keys, and returns frozen, typed values.
Every error names the key path and the line (`routes[0].targets[1].backend
(line 14): ...`). `embedded_default(env)` is what `turnout serve` runs with no
file: Ollama at $OLLAMA_HOST, plus an OpenAI-compatible fallback when
OPENAI_BASE_URL or OPENAI_API_KEY is set.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Mapping

from gateway.config.build import build
from gateway.config.ollama_host import ollama_base_url
from gateway.config.reader import ConfigError, read
from gateway.config.types import (
    AFFINITIES,
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

__all__ = [
    "AFFINITIES", "SESSION_STORES", "STRATEGIES", "BackendConfig", "Config", "ConfigError", "HealthCheckConfig",
    "LimitsConfig", "LoggingConfig", "QueueConfig", "RetryConfig", "RouteConfig", "RuleConfig", "SchedulerConfig",
    "SessionsConfig", "SpillConfig", "TargetConfig", "TlsConfig", "TracingConfig", "embedded_default", "load", "parse",
    "redact_url",
]


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
    return build(read(text, env))


def embedded_default(env: Mapping[str, str]) -> Config:
    """Ollama at $OLLAMA_HOST (read as Ollama reads it; default 127.0.0.1:11434) with its models
    discovered, plus an OpenAI-compatible fallback in priority tier 1 when
    OPENAI_BASE_URL or OPENAI_API_KEY is set."""
    host = ollama_base_url(env.get("OLLAMA_HOST", ""))
    backends = [BackendConfig(name="ollama", kind=BackendKind.OLLAMA, url=host)]
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
