"""`turnout serve | check-config | chat | embed | models | backends`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

import grpc

from gateway import __version__, cli_controls, config as config_module, logs
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc

DEFAULT_GATEWAY = "127.0.0.1:50051"


def _load_config(path: str | None) -> config_module.Config:
    path = path or os.environ.get("TURNOUT_CONFIG")
    if path:
        return config_module.load(path)
    return config_module.embedded_default(os.environ)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    config = _load_config(args.config)
    overrides = {"listen": args.listen, "metrics_listen": args.metrics_listen, "workers": args.workers}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    logs.configure(args.log_level or config.logging.level, config.logging.format)
    return serve(config)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_module.load(args.file)
    print(f"{args.file}: ok")
    print(f"  listen {config.listen}, metrics {config.metrics_listen}, sessions {config.sessions.store}")
    for b in config.backends:
        print(f"  backend {b.name}: {b.kind.value} {config_module.redact_url(b.url)} weight={b.weight} "
              f"priority={b.priority} api_key={'set' if b.api_key else 'none'}")
    for r in config.routes:
        targets = ", ".join(f"{t.backend}/{t.model}" for t in r.targets)
        print(f"  route {r.name}: {r.strategy} over {targets} (attempts {r.retry.attempts})")
    for rule in config.rules:
        when = f"task={rule.task}" if rule.task else f"match=/{rule.match.pattern}/"  # type: ignore[union-attr]
        print(f"  rule {when} -> {rule.route}")
    return 0


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """A channel to the gateway: TLS when --tls-ca is given (mutual TLS with
    --tls-cert and --tls-key), with the API key as bearer metadata on every call."""
    if not args.tls_ca:
        return grpc.aio.insecure_channel(args.gateway)
    read = lambda path: open(path, "rb").read() if path else None  # noqa: E731
    credentials = grpc.ssl_channel_credentials(read(args.tls_ca), read(args.tls_key), read(args.tls_cert))
    return grpc.aio.secure_channel(args.gateway, credentials)


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()


async def _chat(args: argparse.Namespace) -> int:
    messages = []
    if args.system:
        messages.append(generate_pb2.Message(role=common_pb2.ROLE_SYSTEM, content=args.system))
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    messages.append(generate_pb2.Message(role=common_pb2.ROLE_USER, content=prompt))
    request = generate_pb2.GenerateRequest(
        model=args.model, messages=messages, task=args.task, **cli_controls.generation_fields(args)
    )
    async with _channel(args) as channel:
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        async for response in stub.Generate(request, timeout=args.timeout, metadata=_metadata(args)):
            event = response.WhichOneof("event")
            if event == "started" and args.verbose:
                s = response.started
                print(f"[{s.route} -> {s.backend}/{s.model}, attempt {s.attempt}]", file=sys.stderr)
            elif event == "delta":
                if response.delta.reasoning and args.verbose:
                    print(response.delta.reasoning, end="", file=sys.stderr, flush=True)
                for call in response.delta.tool_calls:
                    print(f"\n[tool call {call.name}({call.arguments})]", flush=True)
                print(response.delta.content, end="", flush=True)
            elif event == "completed":
                print()
                if args.verbose:
                    c = response.completed
                    usage = c.usage
                    print(f"[{generate_pb2.FinishReason.Name(c.finish_reason)}, "
                          f"ttft {c.time_to_first_token.ToMilliseconds()} ms, total {c.total_time.ToMilliseconds()} ms, "
                          f"tokens {usage.prompt_tokens if usage.HasField('prompt_tokens') else '?'}"
                          f"+{usage.completion_tokens if usage.HasField('completion_tokens') else '?'}]", file=sys.stderr)
    return 0


async def _embed(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        return await cli_controls.embed(args, channel, _metadata(args))


async def _models(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        response = await model_pb2_grpc.ModelServiceStub(channel).ListModels(
            model_pb2.ListModelsRequest(), timeout=10, metadata=_metadata(args))
    print(f"{'MODEL':40} {'HEALTHY':8} {'FAMILY':10} BACKENDS")
    for m in response.models:
        print(f"{m.name:40} {'yes' if m.healthy else 'no':8} {m.family or '-':10} {', '.join(m.backends)}")
    return 0


async def _backends(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        response = await model_pb2_grpc.ModelServiceStub(channel).ListBackends(
            model_pb2.ListBackendsRequest(), timeout=10, metadata=_metadata(args))
    print(f"{'BACKEND':16} {'KIND':7} {'STATE':9} {'SLOTS':>7} {'QUEUED':>6} {'REPORTED':>9} {'REQUESTS':>8} "
          f"{'ERRORS':>6}  {'ENDPOINT':32} LOADED")
    for b in response.backends:
        kind = model_pb2.BackendKind.Name(b.kind).removeprefix("BACKEND_KIND_").lower()
        state = model_pb2.BackendState.Name(b.state).removeprefix("BACKEND_STATE_").lower()
        slots = f"{b.in_flight}/{b.capacity if b.HasField('capacity') else '-'}"
        reported = "-"
        if b.HasField("reported_running") or b.HasField("reported_waiting"):
            reported = f"{b.reported_running}+{b.reported_waiting}"
        print(f"{b.name:16} {kind:7} {state:9} {slots:>7} {b.queued:>6} {reported:>9} {b.requests_total:>8} "
              f"{b.errors_total:>6}  {b.endpoint:32} {', '.join(b.loaded_models) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turnout", description="gRPC model-routing gateway for LLMs")
    parser.add_argument("--version", action="version", version=f"turnout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", "-c", help="YAML config file (default: $TURNOUT_CONFIG, else the embedded default)")
    p.add_argument("--listen", help="override `listen` (host:port)")
    p.add_argument("--metrics-listen", help="override `metrics_listen` (host:port)")
    p.add_argument("--workers", type=int, help="override `workers` (processes sharing the port)")
    p.add_argument("--log-level", choices=logs.LEVELS, help="override `logging.level`")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(run=cmd_check_config)

    gateway = os.environ.get("TURNOUT_ADDR", DEFAULT_GATEWAY)
    p = sub.add_parser("chat", help="stream an answer to the terminal")
    p.add_argument("prompt", nargs="*", help="the prompt (default: read standard input)")
    p.add_argument("--model", "-m", default="", help="route or model name (default: the gateway's default)")
    p.add_argument("--system", "-s", default="", help="system prompt")
    p.add_argument("--task", default="", help="task label for routing rules")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--verbose", "-v", action="store_true", help="show route, backend, reasoning and timings on stderr")
    cli_controls.add_generation_flags(p)
    p.set_defaults(run=lambda a: asyncio.run(_chat(a)))

    p = sub.add_parser("embed", help="embed texts and print each vector's dimensions and first values")
    cli_controls.add_embed_flags(p)
    p.set_defaults(run=lambda a: asyncio.run(_embed(a)))

    for name, func, text in (("models", _models, "list reachable models"), ("backends", _backends, "list backends")):
        p = sub.add_parser(name, help=text)
        p.set_defaults(run=lambda a, f=func: asyncio.run(f(a)))
    for p in sub.choices.values():
        if p.prog.split()[-1] in ("chat", "embed", "models", "backends"):
            p.add_argument("--gateway", "-g", default=gateway, help=f"gateway address (default {gateway})")
            p.add_argument("--api-key", default=os.environ.get("TURNOUT_API_KEY", ""),
                           help="API key, sent as `authorization: Bearer` (default: $TURNOUT_API_KEY)")
            p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the gateway; enables TLS")
            p.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
            p.add_argument("--tls-key", help="client key (PEM), for mutual TLS")

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except config_module.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
