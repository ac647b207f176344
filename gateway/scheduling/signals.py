"""Load signals are data: small pure functions that read what a model server
says about itself (SPEC §4b) into one LoadReport.

- llama.cpp `/metrics` (Prometheus text, with --metrics): requests_processing
  (running), requests_deferred (waiting), kv_cache_usage_ratio when present;
  `/slots` (JSON list, with --slots): slots whose `is_processing` is true;
  `/props`: `total_slots`, the server's capacity, and each slot's n_ctx.
- vLLM `/metrics`: vllm:num_requests_running, vllm:num_requests_waiting,
  vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before v0.10), summed
  over the `model_name` label sets; the KV-cache size from
  vllm:cache_config_info's labels.
- Ollama `/api/ps`: the models loaded in memory now (no queue figures: Ollama
  does not expose them).

A value a server does not report is None, never 0, so the scheduler can tell
"idle" from "unknown" and fall back to turnout's own counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LLAMACPP_RUNNING = "llamacpp:requests_processing"
LLAMACPP_WAITING = "llamacpp:requests_deferred"
LLAMACPP_KV = "llamacpp:kv_cache_usage_ratio"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
VLLM_CACHE_INFO = "vllm:cache_config_info"


class SignalError(ValueError):
    """The server's answer is not in the format its kind documents."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None
    loaded_models: frozenset[str] | None = None
    cache_tokens: int | None = None

    @property
    def busy(self) -> int | None:
        """Requests the server holds (running + waiting), when it says."""
        if self.running is None and self.waiting is None:
            return None
        return (self.running or 0) + (self.waiting or 0)


def prometheus_samples(text: str) -> dict[str, float]:
    """Each sample name's value summed over its label sets (the Prometheus
    text exposition format, read by prometheus-client's own parser)."""
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    except (ValueError, TypeError, IndexError) as exc:
        raise SignalError(f"not Prometheus text: {exc}") from exc
    return totals


def _count(value: float | None) -> int | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise SignalError(f"a request count of {value} is not a count")
    return max(0, int(round(value)))


def llamacpp_metrics(text: str) -> LoadReport:
    samples = prometheus_samples(text)
    if LLAMACPP_RUNNING not in samples and LLAMACPP_WAITING not in samples:
        raise SignalError("no llamacpp: request gauges in /metrics")
    return LoadReport(
        running=_count(samples.get(LLAMACPP_RUNNING)),
        waiting=_count(samples.get(LLAMACPP_WAITING)),
        kv_usage=samples.get(LLAMACPP_KV),
    )


def vllm_metrics(text: str) -> LoadReport:
    samples = prometheus_samples(text)
    if VLLM_RUNNING not in samples and VLLM_WAITING not in samples:
        raise SignalError("no vllm: request gauges in /metrics")
    kv = next((samples[name] for name in VLLM_KV if name in samples), None)
    return LoadReport(
        running=_count(samples.get(VLLM_RUNNING)), waiting=_count(samples.get(VLLM_WAITING)), kv_usage=kv,
        cache_tokens=_vllm_cache_tokens(text),
    )


def _vllm_cache_tokens(text: str) -> int | None:
    """KV-cache size from vLLM's `vllm:cache_config_info` labels (num_gpu_blocks x block_size)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == VLLM_CACHE_INFO:
                try:
                    return int(sample.labels["num_gpu_blocks"]) * int(sample.labels["block_size"])
                except (KeyError, ValueError):
                    return None
    return None


def llamacpp_slots(data: object) -> LoadReport:
    if not isinstance(data, list) or not all(isinstance(slot, dict) for slot in data):
        raise SignalError("/slots is not a list of slot objects")
    return LoadReport(running=sum(1 for slot in data if slot.get("is_processing")))


def llamacpp_cache_tokens(data: object) -> int | None:
    """Prompt-cache size from llama.cpp's /props: each slot keeps its own
    context of `default_generation_settings.n_ctx` tokens."""
    total = llamacpp_total_slots(data)
    settings = data.get("default_generation_settings") if isinstance(data, dict) else None
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if total is None or not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx <= 0:
        return None
    return total * n_ctx


def llamacpp_total_slots(data: object) -> int | None:
    """`total_slots` from llama.cpp's /props, when it is a positive integer."""
    if not isinstance(data, dict):
        raise SignalError("/props is not a JSON object")
    total = data.get("total_slots")
    return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None


def ollama_ps(data: object) -> LoadReport:
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise SignalError("/api/ps is not an object with a models list")
    names: set[str] = set()
    for model in data.get("models") or ():
        if isinstance(model, dict):
            names.update(str(model[key]) for key in ("name", "model") if model.get(key))
    return LoadReport(loaded_models=frozenset(names))
