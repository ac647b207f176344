"""Polls each backend's own load endpoints every `scheduler.poll_interval`
(the I/O edge of the scheduler; parsing is in signals.py).

`load_signal` picks what is read: `ollama` /api/ps; `llamacpp` /metrics, else
/slots, and /props for the capacity; `vllm` /metrics; `none` nothing. `auto`
means `ollama` for Ollama backends and, for OpenAI-compatible ones, whatever
the server turns out to speak: /props and /metrics are tried (llama.cpp or
vLLM gauges), then /slots; a server that answers none of them (a cloud API) is
asked again only every REDETECT seconds and otherwise left to turnout's own
counts. A failed poll leaves the last report to go stale (BackendLoad), so a
server that stops answering stops steering the scheduler. Each backend is
polled by a loop of its own, so a hung server delays no other's figures.
With a shared scheduler store, the cluster-wide slot counts are read on the
same beat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import httpx

from adapters.http import HttpSettings, build_client
from gateway.config import BackendConfig
from gateway.domain import BackendKind
from gateway.metrics import Metrics
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.slots import MemorySlots, RedisSlots
from gateway.scheduling.signals import (
    LoadReport,
    SignalError,
    llamacpp_cache_tokens,
    llamacpp_metrics,
    llamacpp_slots,
    llamacpp_total_slots,
    ollama_ps,
    vllm_metrics,
)

log = logging.getLogger("turnout")
REDETECT = 30.0
T = TypeVar("T")


def _parsed(parse: Callable[[Any], T], data: Any) -> T | None:
    if data is None:
        return None
    try:
        return parse(data)
    except SignalError:
        return None


def server_root(backend: BackendConfig) -> str:
    """The server's root URL: OpenAI-compatible base URLs end in /v1."""
    url = backend.url
    if backend.kind is BackendKind.OPENAI and url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


class LoadPoller:
    def __init__(
        self,
        backends: Sequence[BackendConfig],
        loads: Mapping[str, BackendLoad],
        slots: MemorySlots | RedisSlots,
        metrics: Metrics,
        interval: float,
        on_capacity: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backends = {b.name: b for b in backends if b.load_signal != "none"}
        self._loads = loads
        self._slots = slots
        self._metrics = metrics
        self._interval = interval
        self._on_capacity = on_capacity
        self._clock = clock
        settings = HttpSettings(connect_timeout=min(2.0, interval * 4), read_timeout=min(5.0, interval * 4),
                                max_connections=2, max_keepalive_connections=2)
        self._clients = {
            b.name: build_client(
                server_root(b), settings,
                headers={"Authorization": f"Bearer {b.api_key}"} if b.api_key else None,
            )
            for b in self._backends.values()
        }
        self._signal = {
            b.name: "ollama" if b.load_signal == "auto" and b.kind is BackendKind.OLLAMA else b.load_signal
            for b in self._backends.values()
        }
        self._next_detect: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """A first poll of every backend (capacities are known before serving), then a loop each."""
        await asyncio.gather(*(self.poll(name) for name in self._backends), self._refresh())
        loops = [self._poll_forever(name) for name in self._backends]
        self._tasks = [asyncio.create_task(loop) for loop in (*loops, self._refresh_forever())]

    async def poll(self, name: str) -> None:
        load = self._loads[name]
        capacity = load.capacity
        try:
            report = await self._read(name)
        except Exception:  # a poll must never stop polling; the figures just go stale
            log.exception("polling backend %s failed", name)
            return
        if load.capacity != capacity:
            await self._on_capacity()
        if report is None:
            return
        load.update(report, self._slots.held(name), self._clock())
        if report.cache_tokens is not None:
            load.cache_tokens = report.cache_tokens
        load.signal = self._signal[name]
        for state, value in (("running", report.running), ("waiting", report.waiting)):
            if value is not None:
                self._metrics.backend_reported.labels(name, state).set(value)

    async def _read(self, name: str) -> LoadReport | None:
        signal = self._signal[name]
        if signal == "auto":
            if self._clock() < self._next_detect.get(name, 0.0):
                return None
            self._next_detect[name] = self._clock() + REDETECT
            await self._discover_capacity(name)
            text = await self._get(name, "/metrics", str)
            for parse, detected in ((llamacpp_metrics, "llamacpp"), (vllm_metrics, "vllm")):
                report = _parsed(parse, text)
                if report is not None:
                    self._signal[name] = detected
                    log.info("backend %s reports its load (%s /metrics)", name, detected)
                    return report
            report = await self._get(name, "/slots", lambda text: llamacpp_slots(json.loads(text)))
            if report is not None:
                self._signal[name] = "llamacpp"
            return report
        if signal == "ollama":
            return await self._get(name, "/api/ps", lambda text: ollama_ps(json.loads(text)))
        if signal == "vllm":
            return await self._get(name, "/metrics", vllm_metrics)
        if self._loads[name].capacity is None:
            await self._discover_capacity(name)
        return await self._get(name, "/metrics", llamacpp_metrics) or await self._get(
            name, "/slots", lambda text: llamacpp_slots(json.loads(text))
        )

    async def _discover_capacity(self, name: str) -> None:
        load = self._loads[name]
        props = await self._get(name, "/props", json.loads)
        if props is None:
            return
        load.cache_tokens = _parsed(llamacpp_cache_tokens, props) or load.cache_tokens
        if load.configured_capacity is not None:
            return
        total = _parsed(llamacpp_total_slots, props)
        if total is not None and total != load.discovered_capacity:
            load.discovered_capacity = total
            self._metrics.backend_capacity.labels(name).set(total)
            log.info("backend %s has %d slots (from /props)", name, total)

    async def _get(self, name: str, path: str, parse: Callable[[str], object]):
        try:
            response = await self._clients[name].get(path)
            if response.status_code != 200:
                return None
            return parse(response.text)
        except (httpx.HTTPError, SignalError, ValueError, OSError):
            return None

    async def _poll_forever(self, name: str) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.poll(name)

    async def _refresh(self) -> None:
        limited = [name for name, load in self._loads.items() if load.capacity is not None]
        try:
            if limited:
                await self._slots.refresh(limited)
        except Exception:  # never stops the loop; counts then go on from this process's own
            log.exception("reading the shared slot counts failed")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._refresh()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
