"""Which models each backend serves: configured lists plus what the health
probes found (Ollama /api/tags, OpenAI /v1/models), and which backends could
not be listed (so "no such model" can say where it could not look). Pure
state; the server's health-check loop feeds it."""

from __future__ import annotations

from typing import Iterable, Sequence

from gateway.domain import ModelInfo


# Ollama reports embedding models with a BERT family ("bert", "nomic-bert");
# their names (nomic-embed-text, mxbai-embed-large, text-embedding-3-small) say "embed".
_EMBEDDING_FAMILIES = ("bert",)


def is_embedding_model(info: ModelInfo) -> bool:
    """Whether a model only embeds text (so it must never be the default for chat)."""
    return "embed" in info.name.lower() or any(f in info.family.lower() for f in _EMBEDDING_FAMILIES)


def _aliases(name: str) -> tuple[str, ...]:
    """Ollama treats "llama3.2" and "llama3.2:latest" as one model."""
    if name.endswith(":latest"):
        return (name, name.removesuffix(":latest"))
    return (name,) if ":" in name else (name, name + ":latest")


class Catalog:
    def __init__(self, configured: dict[str, Sequence[str]]) -> None:
        self._configured = {b: tuple(models) for b, models in configured.items()}
        self._discovered: dict[str, dict[str, ModelInfo]] = {b: {} for b in configured}
        self._unreachable: dict[str, str] = {}
        self.version = 0

    def unreachable(self, backend: str, reason: str) -> None:
        """The backend's model list could not be read (its last probe failed)."""
        self._unreachable[backend] = reason

    def unreachable_backends(self) -> dict[str, str]:
        """Backend -> why its models could not be listed, in configuration order."""
        return {b: self._unreachable[b] for b in self._configured if b in self._unreachable}

    def update(self, backend: str, models: Iterable[ModelInfo]) -> None:
        self._unreachable.pop(backend, None)
        found = {m.name: m for m in models}
        if found != self._discovered.get(backend):
            self._discovered[backend] = found
            self.version += 1

    def models_of(self, backend: str) -> list[str]:
        names = dict.fromkeys(self._configured.get(backend, ()))
        names.update(dict.fromkeys(self._discovered.get(backend, {})))
        return list(names)

    def info(self, backend: str, model: str) -> ModelInfo:
        return self._discovered.get(backend, {}).get(model) or ModelInfo(name=model)

    def serving(self, model: str) -> list[tuple[str, str]]:
        """(backend, the model's name on that backend) for every backend serving it."""
        wanted = set(_aliases(model))
        found = []
        for backend in self._configured:
            for name in self.models_of(backend):
                if name in wanted:
                    found.append((backend, name))
                    break
        return found

    def all_models(self) -> dict[str, list[str]]:
        """Model name -> backends serving it, sorted by name."""
        out: dict[str, list[str]] = {}
        for backend in self._configured:
            for name in self.models_of(backend):
                out.setdefault(name, []).append(backend)
        return dict(sorted(out.items()))
