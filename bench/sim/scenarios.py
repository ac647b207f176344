"""The scenarios of `make bench-routing`: which simulated engines run,
the seeded workload, the TTFT objective, and turnout's config for each
strategy — the same for every strategy but the `strategy` itself, except the
hand-placed reference, which pins each tenant or model to one backend (or, with
nothing to pin, weights targets by hand) and writes every backend's capacity.

Sim time: prefill 0.2 ms per uncached token (a 1,500-token system prompt costs
0.3 s), decode 15 ms per token (16 per answer), model load 1.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from bench.sim.engine import Profile
from bench.sim.workloads import Request, conversations, phases

STRATEGIES = ("weighted_round_robin", "least_used", "adaptive", "reference")
BASE = Profile(slots=2, prefill_per_token=0.0002, decode_per_token=0.015, batch_slowdown=0.1)


@dataclass(frozen=True)
class EngineSpec:
    name: str
    personality: str
    profile: Profile
    models: tuple[str, ...]
    priority: int = 0
    max_concurrency: int | None = None  # what an operator would write; None: discovered or unlimited


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    engines: tuple[EngineSpec, ...]
    workload: Callable[[], list[Request]]
    slo: float  # TTFT objective, seconds
    pins: dict[str, str]  # reference placement: key -> engine
    ref_strategy: str = "priority"
    ref_weights: dict[str, int] = field(default_factory=dict)
    spill: bool = False
    keyed_routes: bool = False  # a route per key (per model) for every strategy, not one `chat` route
    overflow: float = 0.0  # burst: the share of the burst the local tier cannot serve


def service_seconds(profile: Profile, prompt_tokens: int) -> float:
    """One request's time in a slot when every slot is decoding."""
    slowdown = 1 + profile.batch_slowdown * ((profile.slots or 1) - 1)
    return prompt_tokens * profile.prefill_per_token + profile.output_tokens * profile.decode_per_token * slowdown


def _engines(personality: str, profiles: list[Profile], models=("smol",), **extra) -> tuple[EngineSpec, ...]:
    return tuple(EngineSpec(f"{personality}-{i}", personality, p, tuple(models), **extra)
                 for i, p in enumerate(profiles))


def _tenants(sessions: bool = False) -> Scenario:
    llama = _engines("llamacpp", [replace(BASE, cache_blocks=320)] * 2)
    vllm = _engines("vllm", [replace(BASE, cache_blocks=320)] * 2, max_concurrency=2)
    engines = llama + vllm
    return Scenario(
        "sessions" if sessions else "tenants",
        "as tenants, but each turn sends only its new messages with a session_id (turnout adds the history)"
        if sessions else
        "8 tenants, 1.5k-token system prompts, 4-turn conversations with whole history; "
        "4 engines x 2 slots (2 llama.cpp, 2 vLLM), cache fits ~3 tenants each, ~60% of pinned capacity",
        engines, lambda: conversations(seed=11, tenants=8, system_tokens=1500, rate=16.0, seconds=12.0,
                                       sessions=sessions),
        slo=0.5, pins={f"t{i}": engines[i % 4].name for i in range(8)})


def _burst() -> Scenario:
    local = _engines("llamacpp", [BASE, BASE])
    cloud = (EngineSpec("cloud", "cloud", Profile(slots=None, fixed_latency=0.4, decode_per_token=0.01),
                        ("smol",), priority=1),)
    capacity = sum(e.profile.slots / service_seconds(e.profile, 200) for e in local)  # ~13 requests/s
    plan = [("before", 4.0, 6.0), ("burst", 4.0, round(3 * capacity)), ("after", 4.0, 6.0)]
    return Scenario(
        "burst", "2 llama.cpp x 2 slots (~13 req/s) + cloud tier (0.4 s fixed latency, unlimited); "
        "6 req/s, then 3x capacity (39 req/s) for 4 s, then 6 req/s; 200-token unique prompts",
        local + cloud, lambda: phases(seed=12, keys=["chat"], prompt_tokens=200, plan=plan),
        slo=1.0, pins={}, ref_strategy="least_used", spill=True, overflow=1 - capacity / round(3 * capacity))


def _slots() -> Scenario:
    engines = _engines("llamacpp", [replace(BASE, slots=n) for n in (1, 1, 2, 4)])
    return Scenario(
        "slots", "4 llama.cpp with 1, 1, 2 and 4 slots (capacity from /props); 300-token unique prompts "
        "at ~75% of total capacity; the reference weights targets by slots",
        engines, lambda: phases(seed=13, keys=["chat"], prompt_tokens=300, plan=[("steady", 10.0, 17.0)]),
        slo=0.5, pins={}, ref_strategy="weighted_round_robin",
        ref_weights={e.name: e.profile.slots for e in engines})


def _models() -> Scenario:
    models = ("m-a", "m-b", "m-c")
    host = replace(BASE, max_loaded=1, load_delay=1.5)
    engines = _engines("ollama", [host] * 3, models=models, max_concurrency=2)
    return Scenario(
        "models", "3 Ollama hosts x 2 slots, each fits 1 model in memory (1.5 s load); 3 models at "
        "3 req/s each; 200-token unique prompts",
        engines, lambda: phases(seed=14, keys=list(models), prompt_tokens=200, plan=[("steady", 12.0, 9.0)]),
        slo=1.0, pins={m: engines[i].name for i, m in enumerate(models)}, keyed_routes=True)


SCENARIOS = {s.name: s for s in (_tenants(), _tenants(sessions=True), _burst(), _slots(), _models())}


def route_name(scenario: Scenario, strategy: str, key: str) -> str:
    """The `model` a caller sends for a request of `key`."""
    if scenario.keyed_routes or (strategy == "reference" and scenario.pins):
        return key
    return "chat"


def config(scenario: Scenario, strategy: str, urls: dict[str, str], scheduling: bool, listen: str,
           metrics_listen: str) -> dict:
    """turnout's config for one run. `scheduling`: the build knows SPEC §4b's keys."""
    backends = []
    for e in scenario.engines:
        backend = {"name": e.name, "kind": "ollama" if e.personality == "ollama" else "openai",
                   "url": urls[e.name], "models": list(e.models), "priority": e.priority}
        if scheduling:
            backend["load_signal"] = "none" if e.personality == "cloud" else "auto"
            hand = e.profile.slots if strategy == "reference" else None  # the reference writes every capacity
            if e.max_concurrency or hand:
                backend["max_concurrency"] = e.max_concurrency or hand
        backends.append(backend)
    routes = []
    chosen = scenario.ref_strategy if strategy == "reference" else strategy

    def route(name: str, engines, model: str) -> dict:
        targets = [{"backend": e.name, "model": model} | (
            {"weight": scenario.ref_weights[e.name]} if strategy == "reference" and scenario.ref_weights else {})
            for e in engines]
        body = {"name": name, "strategy": chosen, "targets": targets, "first_token_timeout": "30s"}
        if scheduling:
            body["queue"] = {"max_wait": "20s", "max_size": 4096}
            if scenario.spill:
                body["spill"] = {"utilization": 1.0, "max_queue_wait": "300ms"}
        return body

    by_name = {e.name: e for e in scenario.engines}
    if strategy == "reference" and scenario.pins:
        routes = [route(key, [by_name[engine]], by_name[engine].models[0] if not scenario.keyed_routes else key)
                  for key, engine in scenario.pins.items()]
    elif scenario.keyed_routes:
        keys = sorted({m for e in scenario.engines for m in e.models})
        routes = [route(key, scenario.engines, key) for key in keys]
    else:
        routes = [route("chat", scenario.engines, "smol")]
    result = {"listen": listen, "metrics_listen": metrics_listen, "workers": 1,
              "sessions": {"store": "memory"}, "logging": {"level": "warning"},
              "health_check": {"interval": "30s", "timeout": "5s"}, "backends": backends, "routes": routes}
    if scheduling:
        result["scheduler"] = {"store": "memory", "poll_interval": "200ms"}
    return result
