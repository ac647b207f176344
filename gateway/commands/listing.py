"""`turnout models | backends | ps | routes`: what the gateway can reach, as tables."""

from __future__ import annotations

import argparse
import sys

from gateway.commands.client import add_command, channel, metadata
from turnout.v1 import model_pb2, model_pb2_grpc


def _name(enum: type, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


async def models(args: argparse.Namespace) -> int:
    """The models table; backends whose models could not be listed are named on
    stderr, and an empty table because of them exits 1."""
    async with channel(args) as ch:
        stub = model_pb2_grpc.ModelServiceStub(ch)
        listed = await stub.ListModels(model_pb2.ListModelsRequest(), timeout=10, metadata=metadata(args))
        backends = await stub.ListBackends(model_pb2.ListBackendsRequest(), timeout=10, metadata=metadata(args))
    print(f"{'MODEL':40} {'HEALTHY':8} {'FAMILY':10} BACKENDS")
    for m in listed.models:
        print(f"{m.name:40} {'yes' if m.healthy else 'no':8} {m.family or '-':10} {', '.join(m.backends)}")
    down = [b for b in backends.backends if b.state == model_pb2.BACKEND_STATE_DOWN]
    for b in down:
        print(f"could not list the models of backend {b.name!r} at {b.endpoint}: it is down", file=sys.stderr)
    return 1 if down and not listed.models else 0


async def backends(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        response = await model_pb2_grpc.ModelServiceStub(ch).ListBackends(
            model_pb2.ListBackendsRequest(), timeout=10, metadata=metadata(args))
    print(f"{'BACKEND':16} {'KIND':7} {'STATE':9} {'SLOTS':>7} {'QUEUED':>6} {'REPORTED':>9} {'REQUESTS':>8} "
          f"{'ERRORS':>6}  {'ENDPOINT':32} LOADED")
    for b in response.backends:
        kind = _name(model_pb2.BackendKind, b.kind, "BACKEND_KIND_")
        state = _name(model_pb2.BackendState, b.state, "BACKEND_STATE_")
        slots = f"{b.in_flight}/{b.capacity if b.HasField('capacity') else '-'}"
        reported = "-"
        if b.HasField("reported_running") or b.HasField("reported_waiting"):
            reported = f"{b.reported_running}+{b.reported_waiting}"
        print(f"{b.name:16} {kind:7} {state:9} {slots:>7} {b.queued:>6} {reported:>9} {b.requests_total:>8} "
              f"{b.errors_total:>6}  {b.endpoint:32} {', '.join(b.loaded_models) or '-'}")
    return 0


async def ps(args: argparse.Namespace) -> int:
    """What is loaded where, as the backends report it (Ollama's /api/ps, polled by the gateway)."""
    async with channel(args) as ch:
        response = await model_pb2_grpc.ModelServiceStub(ch).ListBackends(
            model_pb2.ListBackendsRequest(), timeout=10, metadata=metadata(args))
    print(f"{'MODEL':40} BACKEND")
    for b in response.backends:
        for model in b.loaded_models:
            print(f"{model:40} {b.name}")
    return 0


def _rule(rule: model_pb2.RouteRule) -> str:
    return f"task={rule.task}" if rule.task else f"match=/{rule.match}/"


async def routes(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        response = await model_pb2_grpc.ModelServiceStub(ch).ListRoutes(
            model_pb2.ListRoutesRequest(), timeout=10, metadata=metadata(args))
    if not response.routes:
        print("no routes configured: a model name is routed over every backend serving it (see `turnout models`)")
        return 0
    print(f"{'ROUTE':24} {'STRATEGY':21} {'ATTEMPTS':>8}  TARGETS (backend/model weight priority)  RULES")
    for r in response.routes:
        name = r.name + (" (default)" if r.is_default else "")
        targets = ", ".join(f"{t.backend}/{t.model} w{t.weight} p{t.priority}" for t in r.targets)
        rules = ", ".join(_rule(rule) for rule in r.rules) or "-"
        print(f"{name:24} {r.strategy:21} {r.attempts:>8}  {targets}  {rules}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "models", models, "list the models the gateway can reach")
    add_command(sub, "backends", backends, "list backends and their state")
    add_command(sub, "ps", ps, "list the models loaded in memory on each backend (Ollama /api/ps)")
    add_command(sub, "routes", routes, "list routes: strategy, targets and the rules leading to each")
