"""Several worker processes on one port, one metrics view.

The parent process spawns `workers` processes that each run a whole gateway
bound to the same address with SO_REUSEPORT, so the kernel spreads
connections over both cores. Metrics use prometheus-client's multiprocess
mode: every worker writes its samples to files in a directory the parent
made, and the parent alone serves the metrics port, aggregating them
(counters and histograms summed; gauges as each declares). On SIGTERM or
SIGINT the parent forwards the signal, each worker drains with its grace
period, and the parent exits 0 once all have exited 0. SIGHUP is forwarded
too (each worker reloads its config: gateway/reload.py), and the parent
re-reads the file as well, so that a worker started later runs the config
the others reloaded (a file that does not load leaves it as it was; the
workers log why). A worker that exits
on its own (a crash, a SIGKILL) is started again after a backoff that doubles
from 0.5 s to 30 s and resets once a worker has run for a minute; the others
serve meanwhile. However the parent ends (an exception, SIGKILL), no worker
outlives it: the parent stops its workers on every way out, and each worker
drains as on SIGTERM once its parent is gone.

Each worker keeps its own routing state (ejections, in-flight, affinity),
as Envoy's worker threads do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable

from gateway import config as config_module
from gateway import logs
from gateway.config import Config
from gateway.reload import applicable

log = logging.getLogger("turnout")

FIRST_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0


def _exit_with_parent() -> None:
    """SIGTERM to this worker when its parent has exited: the parent's end of
    the spawn pipe closes however it went (multiprocessing.parent_process)."""
    parent = multiprocessing.parent_process()

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="turnout-parent-watch", daemon=True).start()


def _forward(processes: list, sig: int) -> None:
    for process in processes:
        if process.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # exited since
                os.kill(process.pid, sig)


def _worker(config: Config, path: str | None, overrides: dict[str, object] | None) -> None:
    from gateway.reload import Reloader
    from gateway.server import Gateway, run_until_signalled

    _exit_with_parent()
    logs.configure(config.logging.level, config.logging.format)
    gateway = Gateway(config)
    asyncio.run(run_until_signalled(gateway, Reloader(gateway, path, overrides)))


def _reread(running: Config, path: str | None, overrides: dict[str, object] | None) -> Config:
    """The config file as a reloading worker applies it; `running` when there is none or it does not load."""
    if path is None:
        return running
    try:
        return applicable(running, dataclasses.replace(config_module.load(path), **(overrides or {})))
    except (config_module.ConfigError, OSError):
        return running


class _Slot:
    """One worker's place: its current process, and when and how soon to
    start it again after it exits on its own."""

    def __init__(self, start: Callable[[], multiprocessing.process.BaseProcess]) -> None:
        self._start = start
        self.process = start()
        self.started = time.monotonic()
        self.backoff = FIRST_BACKOFF
        self.restart_at: float | None = None

    def supervise(self, directory: str) -> None:
        """Notices an exited worker and schedules its restart; restarts it when due."""
        from prometheus_client import multiprocess

        now = time.monotonic()
        if self.restart_at is None and not self.process.is_alive():
            if now - self.started >= STABLE_AFTER:
                self.backoff = FIRST_BACKOFF
            multiprocess.mark_process_dead(self.process.pid, directory)
            log.error("worker %s (pid %d) exited with code %s; restarting it in %.1fs",
                      self.process.name, self.process.pid, self.process.exitcode, self.backoff)
            self.restart_at = now + self.backoff
            self.backoff = min(2 * self.backoff, MAX_BACKOFF)
        elif self.restart_at is not None and now >= self.restart_at:
            self.process = self._start()
            self.started, self.restart_at = now, None
            log.warning("worker %s restarted as pid %d", self.process.name, self.process.pid)


def serve_workers(config: Config, path: str | None = None, overrides: dict[str, object] | None = None) -> int:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from gateway.server import split_address

    if split_address(config.listen)[1] == 0:
        raise ValueError("workers > 1 needs a fixed listen port, not 0")
    with tempfile.TemporaryDirectory(prefix="turnout-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        metrics_server, _ = start_http_server(*reversed(split_address(config.metrics_listen)), registry=registry)
        context = multiprocessing.get_context("spawn")

        latest = [config]  # what a worker starts with: the config of the last SIGHUP that found the file valid

        def starter(i: int) -> Callable[[], multiprocessing.process.BaseProcess]:
            def start() -> multiprocessing.process.BaseProcess:
                process = context.Process(
                    target=_worker, args=(latest[0], path, overrides), name=f"turnout-worker-{i}"
                )
                handler = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # inherited until the worker can reload
                try:
                    process.start()
                finally:
                    signal.signal(signal.SIGHUP, handler)
                return process
            return start

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        slots: list[_Slot] = []
        try:
            for i in range(config.workers):
                slots.append(_Slot(starter(i)))
            def hangup(*_: object) -> None:
                latest[0] = _reread(latest[0], path, overrides)
                _forward([slot.process for slot in slots], signal.SIGHUP)

            signal.signal(signal.SIGHUP, hangup)
            log.info("turnout started %d workers on %s; metrics on %s", config.workers, config.listen,
                     config.metrics_listen)
            while not stop.wait(0.2):
                for slot in slots:
                    slot.supervise(directory)
        finally:
            processes = [slot.process for slot in slots]
            _forward([p for p in processes if p.is_alive()], signal.SIGTERM)
            codes = []
            for slot in slots:
                process = slot.process
                process.join()
                if slot.restart_at is None:
                    multiprocess.mark_process_dead(process.pid, directory)
                    codes.append(process.exitcode)
        metrics_server.shutdown()
    failed = [code for code in codes if code != 0]
    if failed:
        log.error("worker exit codes: %s", codes)
    return 1 if failed else 0
