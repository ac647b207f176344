"""What the scheduler knows and learns of one backend: its capacity (from
config, else from the server's own word), the last load report polled from
it, and what it learned from the requests it served — how long a request
holds a slot, the first token's base time (what a request with next to
nothing to compute waits: network, queueing in the server, a decode step),
prefill seconds per uncached prompt token beyond that base, seconds from the
first token to the end, and seconds a cold model load costs. Each running
request is expected to end when those say (its own prefill, a load if its
model was cold, then the answer), so a slot held by a long uncached prompt
frees later than one held by a cached conversation. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from gateway.scheduling.signals import LoadReport

SMOOTHING = 0.2
DEFAULT_PREFILL_PER_TOKEN = 0.001
DEFAULT_LOAD_TIME = 10.0
DEFAULT_SERVICE_TIME = 1.0
MIN_TOKENS_TO_LEARN = 256  # fewer uncached tokens teach the base time; more, the prefill rate
RESIDENT_FOR = 300.0  # Ollama keeps a model loaded 5 minutes after its last use by default


@dataclass(frozen=True, slots=True)
class Rates:
    """The guess for a backend that has not learned a rate yet: what the
    others learned, on average (a pool is mostly alike hardware), else the
    defaults. A backend that guessed the default 10 s load while another had
    learned 1.5 s made that other one the cheap place to load every model."""

    prefill_per_token: float = DEFAULT_PREFILL_PER_TOKEN
    load_time: float = DEFAULT_LOAD_TIME
    service_time: float = DEFAULT_SERVICE_TIME


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def pooled(loads: Iterable[BackendLoad]) -> Rates:
    loads = list(loads)

    def learned(name: str) -> list[float]:
        return [value for backend in loads if (value := getattr(backend, name)) is not None]

    return Rates(_mean(learned("prefill_per_token"), DEFAULT_PREFILL_PER_TOKEN),
                 _mean(learned("load_time"), DEFAULT_LOAD_TIME),
                 _mean(learned("service_time"), DEFAULT_SERVICE_TIME))


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else SMOOTHING * new + (1 - SMOOTHING) * old


def _same_model(a: str, b: str) -> bool:
    """Ollama names without a tag mean `:latest`."""
    return a == b or (":" not in a and f"{a}:latest" == b) or (":" not in b and f"{b}:latest" == a)


class BackendLoad:
    def __init__(self, name: str, configured_capacity: int | None = None, stale_after: float = 5.0) -> None:
        self.name = name
        self.configured_capacity = configured_capacity
        self.discovered_capacity: int | None = None
        self.cache_tokens: int | None = None
        self.signal = "none"
        self.report: LoadReport | None = None
        self.report_time = 0.0
        self._own_at_report = 0
        self.stale_after = stale_after
        self.service_time: float | None = None
        self.prefill_per_token: float | None = None
        self.first_token_base: float | None = None
        self._base_tokens: float | None = None  # the uncached tokens of the requests the base was learned from
        self.decode_time: float | None = None
        self.load_time: float | None = None
        self._served: dict[str, float] = {}
        self._running: dict[str, tuple[float, float | None]] = {}  # lease: start, expected slot time

    @property
    def capacity(self) -> int | None:
        return self.configured_capacity or self.discovered_capacity

    def update(self, report: LoadReport, own_in_flight: int, now: float) -> None:
        self.report, self.report_time, self._own_at_report = report, now, own_in_flight

    def current(self, now: float) -> LoadReport | None:
        if self.report is None or now - self.report_time > self.stale_after:
            return None
        return self.report

    def reported_busy(self, own_in_flight: int, now: float) -> int | None:
        """The server's running + waiting at the last poll, moved by what
        turnout started or finished there since."""
        report = self.current(now)
        if report is None or report.busy is None:
            return None
        return max(0, report.busy + own_in_flight - self._own_at_report)

    def resident(self, model: str, now: float) -> bool | None:
        """Whether `model` is loaded there now; None when nothing says."""
        served = max((t for m, t in self._served.items() if _same_model(m, model)), default=None)
        report = self.current(now)
        if report is not None and report.loaded_models is not None and (served is None or served < self.report_time):
            return any(_same_model(model, loaded) for loaded in report.loaded_models)
        if served is not None and now - served < RESIDENT_FOR:
            return True
        if report is not None and report.loaded_models is None:
            return True  # a llama.cpp or vLLM server holds the one model it serves
        return None

    def loaded(self, now: float) -> list[str]:
        """Models known to be in memory: the last /api/ps and those served
        since; for a server without such a list, those served within
        RESIDENT_FOR."""
        report = self.current(now)
        listed = report is not None and report.loaded_models is not None
        names = set(report.loaded_models or ()) if listed else set()
        since = self.report_time if listed else now - RESIDENT_FOR
        names.update(m for m, t in self._served.items() if t >= since)
        return sorted(names)

    def begin(self, lease: str, now: float, uncached_tokens: int = 0, cold: bool = False,
              pool: Rates = Rates()) -> None:
        self._running[lease] = (now, self.slot_time(uncached_tokens, cold, pool))

    def rates(self, pool: Rates) -> Rates:
        """This backend's learned rates, the pool's guess for those it has not learned."""
        service = self.service_time
        if service is None and self.decode_time is not None:  # no warm request ended yet: a short one's time
            service = (self.first_token_base or 0.0) + self.decode_time

        def known(value: float | None, guess: float) -> float:
            return guess if value is None else value

        return Rates(known(self.prefill_per_token, pool.prefill_per_token), known(self.load_time, pool.load_time),
                     known(service, pool.service_time))

    def slot_time(self, uncached_tokens: int, cold: bool, pool: Rates = Rates()) -> float | None:
        """The seconds a request will hold its slot, from what was learned;
        None until an answer's length was."""
        if self.decode_time is None:
            return None
        rates = self.rates(pool)
        load = rates.load_time if cold else 0.0
        return (self.first_token_base or 0.0) + rates.prefill_per_token * uncached_tokens + load + self.decode_time

    def end(self, lease: str) -> None:
        self._running.pop(lease, None)

    def expected_wait(self, waiting_ahead: float, capacity: int, now: float, pool: Rates = Rates(),
                      held: int | None = None) -> float:
        """Seconds until a slot frees for a request with `waiting_ahead`
        requests before it. A running request is expected to end at its own
        slot time (else the mean service time); one that has run past it is
        expected to run on for as long as it has overrun (generation lengths
        are heavy-tailed), so the wait for a backend busy with a long answer
        grows until other choices win. Slots `held` beyond the requests
        running here (another worker's or replica's, or one just handed over)
        are expected to free in half a service time."""
        service = self.rates(pool).service_time
        remaining = sorted(abs((service if expected is None else expected) - (now - start))
                           for start, expected in self._running.values())
        unknown = max(0, min(capacity, held) - len(remaining)) if held is not None else 0
        free = max(0, capacity - len(remaining) - unknown)
        slots = sorted([0.0] * free + [service / 2] * unknown + remaining)[:capacity]
        k = int(waiting_ahead)
        return slots[k % capacity] + (k // capacity) * service

    def sent(self, model: str, now: float) -> None:
        """A request for `model` was admitted here: it is loaded, or loading."""
        self._served[model] = now

    def learn_first_token(self, model: str, seconds: float, uncached_tokens: int, was_resident: bool | None,
                          now: float) -> None:
        base = self.first_token_base or 0.0
        if was_resident is False:
            prefill = (self.prefill_per_token or 0.0) * uncached_tokens
            self.load_time = _ewma(self.load_time, max(0.0, seconds - base - prefill))
        elif uncached_tokens >= MIN_TOKENS_TO_LEARN:  # the base already holds the prefill of _base_tokens
            beyond = max(1.0, uncached_tokens - (self._base_tokens or 0.0))
            self.prefill_per_token = _ewma(self.prefill_per_token, max(0.0, seconds - base) / beyond)
        elif was_resident:  # a model that may have been loading says nothing of the base
            self._base_tokens = _ewma(self._base_tokens, uncached_tokens)
            self.first_token_base = _ewma(self.first_token_base, seconds)
        self._served[model] = now

    def learn_service(self, seconds: float | None, after_first_token: float | None = None) -> None:
        """An attempt held its slot `seconds` (None for one that waited for a
        model load: that says nothing of the slot time), `after_first_token`
        of them answering (as long loaded cold or warm)."""
        if seconds is not None:
            self.service_time = _ewma(self.service_time, seconds)
        if after_first_token is not None:
            self.decode_time = _ewma(self.decode_time, after_first_token)
