"""Seeded open-loop workloads: every request (arrival time, key, messages) is
written before the run starts, so each strategy sees exactly the same traffic.

Arrivals are Poisson. Multi-turn conversations send their whole history; the
assistant turns in it are the engine's own answers (`reply_for` is a pure
function of the prompt), so the history a caller sends is what a real caller
would have received.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.sim.engine import Profile, WORDS, render, reply_for

OUTPUT_TOKENS = Profile().output_tokens


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the start
    key: str  # the tenant or model it belongs to (hand placement pins keys)
    messages: tuple[dict, ...]
    phase: str = ""
    session: str = ""  # sent as session_id; then `messages` holds only this turn's new messages


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_bytes:
        words.append(rng.choice(WORDS) + str(rng.randrange(1000)))
        size += len(words[-1]) + 1
    return " ".join(words)


def _arrivals(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    times, t = [], start
    while (t := t + rng.expovariate(rate)) < end:
        times.append(t)
    return times


def conversations(seed: int, tenants: int, system_tokens: int, rate: float, seconds: float,
                  turns: int = 4, think: float = 1.0, user_tokens: int = 30, sessions: bool = False) -> list[Request]:
    """Tenants, each with one long system prompt, start conversations in turn
    (Poisson, `rate` requests per second overall); each conversation sends `turns`
    requests `think` seconds apart on average, each with the whole history —
    or, with `sessions`, each with only its new messages and a turnout session
    holding the rest."""
    rng = random.Random(seed)
    systems = [f"You are the assistant of tenant {i}. " + _text(rng, system_tokens * 4) for i in range(tenants)]
    requests = []
    for n, start in enumerate(_arrivals(rng, rate / turns, 0.0, seconds)):
        tenant = n % tenants
        history: list[dict] = [{"role": "system", "content": systems[tenant]}]
        at = start
        for _ in range(turns):
            history.append({"role": "user", "content": _text(rng, user_tokens * 4)})
            if sessions:
                new = history if len(history) == 2 else history[-1:]
                requests.append(Request(at, f"t{tenant}", tuple(new), session=f"conversation-{n}"))
            else:
                requests.append(Request(at, f"t{tenant}", tuple(history)))
            answer = "".join(reply_for(render(history), OUTPUT_TOKENS))
            history = history + [{"role": "assistant", "content": answer}]
            at += rng.expovariate(1 / think)
    return sorted(requests, key=lambda r: r.at)


def phases(seed: int, keys: list[str], prompt_tokens: int, plan: list[tuple[str, float, float]]) -> list[Request]:
    """Single-turn requests with unique prompts; `plan` is (phase, seconds,
    rate) in order; each request's key is drawn uniformly from `keys`."""
    rng = random.Random(seed)
    requests, start = [], 0.0
    for phase, seconds, rate in plan:
        for at in _arrivals(rng, rate, start, start + seconds):
            message = {"role": "user", "content": _text(rng, prompt_tokens * 4)}
            requests.append(Request(at, rng.choice(keys), (message,), phase))
        start += seconds
    return requests
