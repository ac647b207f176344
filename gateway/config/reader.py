"""Reading YAML with the line of every key, `${VAR}` / `${VAR:-default}`
interpolation, and typed getters whose errors name the key path and line
(`routes[0].targets[1].backend (line 14): ...`)."""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, TypeVar

import yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

T = TypeVar("T")


class ConfigError(Exception):
    """A config problem; the message names the key path and, from a file, the line."""


def read(text: str, env: Mapping[str, str]) -> "Section":
    """The document's root mapping, ready for typed reading."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config is not valid YAML: {exc}") from exc
    if node is None:
        return Section({}, "", {}, env)
    lines: dict[str, int] = {}
    return Section(_plain(node, "", lines), "", lines, env)


def is_env_reference(text: str) -> bool:
    return bool(_ENV.fullmatch(text.strip()))


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


class Section:
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

    def sections(self, name: str) -> list[Section]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(name, "must be a list")
        return [Section(item, f"{self.key(name)}[{i}]", self.lines, self.env) for i, item in enumerate(value)]

    def section(self, name: str) -> Section:
        value = self.raw(name)
        return Section({} if value is None else value, self.key(name), self.lines, self.env)

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
