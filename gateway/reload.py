"""SIGHUP: re-read the config file and apply what can change while serving.

The file is validated in full first (`config.load`, the same check as
`turnout check-config`); an invalid file is logged with its key and line and
changes nothing. A valid one is compared with the running config section by
section and the log says what changed. API keys and their limits take effect
for every call after the reload in one reference swap (calls in flight keep
the key they were admitted with), and so does the log level; the TLS
certificate is re-read as before. Other changed sections (backends, routes,
rules, listen addresses, sessions, ...) are logged as needing a restart:
they are not applied. Each reload is counted in
turnout_config_reloads_total{result="ok"|"error"}.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Mapping

from gateway import config as config_module
from gateway import logs
from gateway.auth import KeyRing

if TYPE_CHECKING:
    from gateway.server import Gateway

log = logging.getLogger("turnout")
LIVE = ("api_keys", "logging")


def changed_sections(old: config_module.Config, new: config_module.Config) -> list[str]:
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


class Reloader:
    """Called on SIGHUP. `overrides` are the command-line settings that
    replace the file's (`--listen`, ...), applied to the re-read file too."""

    def __init__(self, gateway: Gateway, path: str | None, overrides: Mapping[str, object] | None = None) -> None:
        self._gateway = gateway
        self._path = path
        self._overrides = dict(overrides or {})

    def __call__(self) -> None:
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
        changed = changed_sections(gateway.config, new)
        live = [name for name in changed if name in LIVE]
        if "api_keys" in live:
            gateway.guard.use_keys(KeyRing(new.api_keys))
        if "logging" in live:
            logs.configure(new.logging.level, new.logging.format)
        gateway.config = dataclasses.replace(gateway.config, **{name: getattr(new, name) for name in live})
        gateway.metrics.config_reloads.labels("ok").inc()
        restart = [name for name in changed if name not in LIVE]
        log.info("config reloaded from %s: %s%s", self._path,
                 f"applied {', '.join(live)}" if live else "nothing to apply",
                 f"; changed but needs a restart: {', '.join(restart)}" if restart else "")
