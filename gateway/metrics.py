"""Every metric turnout exports, declared in one place (SPEC §6).

| name                                   | type      | labels                      | counted                      |
|----------------------------------------|-----------|-----------------------------|------------------------------|
| turnout_requests_total                 | counter   | route, backend, model, code | once per Generate/Complete   |
| turnout_request_duration_seconds       | histogram | route, backend, model       | once per request that reached a backend |
| turnout_embed_requests_total           | counter   | route, backend, model, code | once per Embed               |
| turnout_embed_duration_seconds         | histogram | route, backend, model       | once per Embed that reached a backend |
| turnout_time_to_first_token_seconds    | histogram | route, backend, model       | once per request with a first token |
| turnout_upstream_errors_total          | counter   | backend, kind               | once per failed attempt      |
| turnout_retries_total                  | counter   | route, reason               | once per attempt after the first |
| turnout_retry_budget_refusals_total   | counter   | route                       | once per retry the budget refused |
| turnout_in_flight_requests             | gauge     | backend                     | attempts running now         |
| turnout_backend_up                     | gauge     | backend                     | 1/0 from the last health probe |
| turnout_route_healthy_targets          | gauge     | route                       | targets of a configured route on a backend that takes traffic, after each probe round |
| turnout_tokens_total                   | counter   | backend, model, kind        | tokens the backend reported (prompt, completion) |
| turnout_config_reloads_total          | counter   | result                      | once per SIGHUP reload (ok, error) |
| turnout_build_info                     | gauge     | version                     | always 1                     |
| turnout_key_requests_total             | counter   | key, code                   | once per Generate/Complete/Embed, by API key name ("none" without auth) |
| turnout_key_streams_in_flight          | gauge     | key                         | generations holding one of the key's concurrency slots |
| turnout_queue_depth                    | gauge     | route                       | requests waiting in turnout for a slot now |
| turnout_queue_wait_seconds             | histogram | route                       | once per admitted attempt (0 when a slot was free) |
| turnout_spills_total                   | counter   | route                       | attempts sent to a later tier because the best was saturated |
| turnout_backend_capacity               | gauge     | backend                     | max_concurrency, configured or discovered (absent: unlimited) |
| turnout_backend_reported_requests      | gauge     | backend, state              | running / waiting as the backend last reported |
| turnout_prefix_affinity_total          | counter   | route, result               | adaptive choices on a target holding part of the prompt (hit) or none (miss) |

Embed has series of its own for requests and duration, rather than an `rpc`
label on Generate's: a vector's latency is not a generation's, and mixing them
would skew the generation histograms and alerts. The per-backend series
(upstream errors, retries, in-flight, tokens as kind="prompt") count
embedding attempts too: they describe the backend, whatever it was asked.

Label values are bounded: routes and backends come from config, models from
config or discovery, codes and kinds from fixed enums; a request that never
resolved a route is labelled "none". No session ids, request ids or user text.

Metrics take a CollectorRegistry, so each test gets a fresh one. With several
worker processes, prometheus-client's multiprocess mode aggregates them; the
gauges declare how (in-flight is summed over live workers, backend_up is the
most recent probe).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NONE = "none"
# LLM latencies: tens of milliseconds (a cached short answer) to minutes (a long generation).
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600)
QUEUE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        by_target = ["route", "backend", "model"]
        self.requests = Counter(
            "turnout_requests", "Generate and Complete calls, by gRPC status code",
            [*by_target, "code"], registry=registry,
        )
        self.request_duration = Histogram(
            "turnout_request_duration_seconds", "Time from receiving a request to its last byte",
            by_target, buckets=DURATION_BUCKETS, registry=registry,
        )
        self.embed_requests = Counter(
            "turnout_embed_requests", "Embed calls, by gRPC status code",
            [*by_target, "code"], registry=registry,
        )
        self.embed_duration = Histogram(
            "turnout_embed_duration_seconds", "Time from receiving an Embed request to its answer",
            by_target, buckets=DURATION_BUCKETS, registry=registry,
        )
        self.time_to_first_token = Histogram(
            "turnout_time_to_first_token_seconds", "Time from receiving a request to its first token",
            by_target, buckets=FIRST_TOKEN_BUCKETS, registry=registry,
        )
        self.upstream_errors = Counter(
            "turnout_upstream_errors", "Failed attempts against a backend, by kind of failure",
            ["backend", "kind"], registry=registry,
        )
        self.retries = Counter(
            "turnout_retries", "Attempts after the first, by the failure that caused them",
            ["route", "reason"], registry=registry,
        )
        self.retry_budget_refusals = Counter(
            "turnout_retry_budget_refusals", "Retries not started because the route's retry budget was spent",
            ["route"], registry=registry,
        )
        self.in_flight = Gauge(
            "turnout_in_flight_requests", "Attempts in flight to a backend",
            ["backend"], registry=registry, multiprocess_mode="livesum",
        )
        self.backend_up = Gauge(
            "turnout_backend_up", "1 when the backend's last health probe succeeded, else 0",
            ["backend"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.route_healthy_targets = Gauge(
            "turnout_route_healthy_targets", "Targets of the route whose backend takes traffic (probed up, not ejected)",
            ["route"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.tokens = Counter(
            "turnout_tokens", "Tokens as backends reported them",
            ["backend", "model", "kind"], registry=registry,
        )
        self.key_requests = Counter(
            "turnout_key_requests", "Generate, Complete and Embed calls by API key name and gRPC status code",
            ["key", "code"], registry=registry,
        )
        self.key_streams_in_flight = Gauge(
            "turnout_key_streams_in_flight", "Generations holding one of the API key's concurrency slots",
            ["key"], registry=registry, multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "turnout_queue_depth", "Requests waiting in turnout for a free slot",
            ["route"], registry=registry, multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "turnout_queue_wait_seconds", "Time a request waited in turnout for a slot",
            ["route"], buckets=QUEUE_BUCKETS, registry=registry,
        )
        self.spills = Counter(
            "turnout_spills", "Attempts sent to a later tier because the best tier was saturated",
            ["route"], registry=registry,
        )
        self.backend_capacity = Gauge(
            "turnout_backend_capacity", "Most requests turnout keeps in flight on the backend",
            ["backend"], registry=registry, multiprocess_mode="livemax",
        )
        self.backend_reported = Gauge(
            "turnout_backend_reported_requests", "Requests the backend reported running or waiting",
            ["backend", "state"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.prefix_affinity = Counter(
            "turnout_prefix_affinity", "Adaptive choices of a target that holds part of the prompt (hit) or none",
            ["route", "result"], registry=registry,
        )
        self.config_reloads = Counter(
            "turnout_config_reloads",
            "SIGHUP config reloads, by result (ok; error: the file was invalid or its backends could not be started)",
            ["result"], registry=registry,
        )
        self.build_info = Gauge(
            "turnout_build_info", "Always 1; the version label says which build runs",
            ["version"], registry=registry, multiprocess_mode="livemax",
        )
        self.build_info.labels(version).set(1)

    def declare_backends(self, backends: list[str]) -> None:
        """Creates the per-backend series at zero, so dashboards show every
        backend before its first request."""
        for backend in backends:
            self.in_flight.labels(backend)

    def forget(self, backends: list[str], routes: list[str]) -> None:
        """Drops the health and capacity series of backends and routes a
        config reload removed, so no alert keeps reading their last value.
        prometheus-client cannot drop a series in multiprocess mode (workers):
        there they stay until a restart."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            return
        for backend in backends:
            for gauge in (self.backend_up, self.backend_capacity):
                gauge.remove(backend)
        for route in routes:
            self.route_healthy_targets.remove(route)
