"""SIGHUP: re-read the config file and apply it while serving.

The file is validated in full first (`config.load`, the same check as
`turnout check-config`); an invalid file is logged with its key and line and
changes nothing. A valid one is compared with the running config section by
section:

- backends, routes, rules, default_route, limits, scheduler, health_check
  and outlier_detection: a new routing runtime is built from the new config
  by the builder the server starts with (gateway/runtime.py), its backends
  are probed, and it is swapped in with one reference swap: every call after
  it uses the new one, every call in flight finishes on the one it started
  on (whose HTTP clients are closed when the last of them ends). A backend
  whose definition did not change keeps its connections, health, ejection
  and load figures. If building or starting the new runtime fails, nothing
  changed.
- api_keys (and their limits) and logging take effect for the next call.
- listen, metrics_listen, workers, sessions, tls and tracing need a restart:
  they are logged as such and not applied (the TLS certificate and key files
  are re-read on every SIGHUP all the same). So does raising
  limits.max_request_bytes above its value at start: gRPC's own message limit
  was set then.

One log line says what changed (for backends and routes, which names were
added, removed or changed). Each reload is counted in
turnout_config_reloads_total{result="ok"|"error"}. Reloads run one at a time,
in the order the signals came.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from gateway import config as config_module
from gateway import logs
from gateway.auth import KeyRing

if TYPE_CHECKING:
    from gateway.server import Gateway

log = logging.getLogger("turnout")
RESTART_ONLY = ("listen", "metrics_listen", "workers", "sessions", "tls", "tracing")
ROUTING = ("backends", "routes", "rules", "default_route", "limits", "scheduler", "health_check", "outlier_detection")
NAMED = ("backends", "routes")


class Named(Protocol):
    name: str


def changed_sections(old: config_module.Config, new: config_module.Config) -> list[str]:
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def applicable(running: config_module.Config, new: config_module.Config) -> config_module.Config:
    """`new` as a running gateway applies it: what needs a restart stays as it runs."""
    return dataclasses.replace(new, **{name: getattr(running, name) for name in RESTART_ONLY})


def named_changes(old: Sequence[Named], new: Sequence[Named]) -> str:
    """`added a, b; removed c; changed d` for backends or routes, by name."""
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    parts = [
        ("added", [name for name in after if name not in before]),
        ("removed", [name for name in before if name not in after]),
        ("changed", [name for name in after if name in before and before[name] != after[name]]),
    ]
    return "; ".join(f"{verb} {', '.join(names)}" for verb, names in parts if names)


class Reloader:
    """Called on SIGHUP. `overrides` are the command-line settings that
    replace the file's (`--listen`, ...), applied to the re-read file too."""

    def __init__(self, gateway: Gateway, path: str | None, overrides: Mapping[str, object] | None = None) -> None:
        self._gateway = gateway
        self._path = path
        self._overrides = dict(overrides or {})
        self._started_with = gateway.config.limits.max_request_bytes
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        async with self._lock:
            try:
                await self._reload()
            except Exception:
                log.exception("config reload failed, nothing changed")
                self._gateway.metrics.config_reloads.labels("error").inc()

    async def _reload(self) -> None:
        gateway = self._gateway
        if gateway.tls is not None:
            gateway.tls.reload()
        if self._path is None:
            log.info("SIGHUP: running the built-in default config (no --config file); nothing to reload")
            return
        try:
            new = dataclasses.replace(config_module.load(self._path), **self._overrides)
        except (config_module.ConfigError, OSError) as exc:
            log.error("config reload failed, nothing changed: %s: %s", self._path, exc)
            gateway.metrics.config_reloads.labels("error").inc()
            return
        old = gateway.config
        changed = changed_sections(old, new)
        restart = [name for name in changed if name in RESTART_ONLY]
        if new.limits.max_request_bytes > self._started_with:
            restart.append("limits.max_request_bytes (raised above its value at start)")
        applied = applicable(old, new)
        live = [name for name in changed if name not in RESTART_ONLY]
        if any(name in ROUTING for name in live):
            try:
                await gateway.apply(applied)
            except Exception as exc:
                log.error("config reload failed, nothing changed: could not start the new backends and routes: %s",
                          exc)
                gateway.metrics.config_reloads.labels("error").inc()
                return
        gateway.config = applied
        if "api_keys" in live:
            gateway.guard.use_keys(KeyRing(new.api_keys))
        if "logging" in live:
            logs.configure(new.logging.level, new.logging.format)
        gateway.metrics.config_reloads.labels("ok").inc()
        described = [
            f"{name} ({named_changes(getattr(old, name), getattr(new, name))})" if name in NAMED else name
            for name in live
        ]
        log.info("config reloaded from %s: %s%s", self._path,
                 f"applied {', '.join(described)}" if described else "nothing to apply",
                 f"; changed but needs a restart: {', '.join(restart)}" if restart else "")
