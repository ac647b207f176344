"""`turnout serve | check-config`, and the client commands of gateway/commands
(chat, embed, models, backends, ps, routes, pull, rm, health)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import grpc

from gateway import __version__, config as config_module, logs
from gateway.commands import chat, embed, health, listing, manage


def _load_config(path: str | None) -> config_module.Config:
    path = path or os.environ.get("TURNOUT_CONFIG")
    if path:
        return config_module.load(path)
    return config_module.embedded_default(os.environ)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    config = _load_config(args.config)
    overrides = {"listen": args.listen, "metrics_listen": args.metrics_listen, "workers": args.workers}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = dataclasses.replace(config, **overrides)
    logs.configure(args.log_level or config.logging.level, config.logging.format)
    return serve(config, args.config, overrides)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_module.load(args.file)
    print(f"{args.file}: ok")
    print(f"  listen {config.listen}, metrics {config.metrics_listen}, sessions {config.sessions.store}, "
          f"scheduler {config.scheduler.store}")
    tracing = config.tracing
    if tracing.enabled:
        endpoint = config_module.redact_url(tracing.endpoint) if tracing.endpoint else "the OTEL_EXPORTER_OTLP endpoint"
        sampler = "from OTEL_TRACES_SAMPLER" if tracing.sampler_ratio is None else f"ratio {tracing.sampler_ratio:g}"
        print(f"  tracing: OTLP {tracing.protocol} to {endpoint}, sampler {sampler}, {len(tracing.headers)} header(s)")
    for b in config.backends:
        discovers = b.kind.value == "openai" and b.load_signal in ("auto", "llamacpp")
        capacity = b.max_concurrency or ("from /props" if discovers else "unlimited")
        print(f"  backend {b.name}: {b.kind.value} {config_module.redact_url(b.url)} weight={b.weight} "
              f"priority={b.priority} api_key={'set' if b.api_key else 'none'} max_concurrency={capacity} "
              f"load_signal={b.load_signal}")
    for r in config.routes:
        targets = ", ".join(f"{t.backend}/{t.model}" for t in r.targets)
        spill = "" if r.spill is None else f", spill at {r.spill.utilization or 'full'}/{r.spill.max_queue_wait:g}s"
        print(f"  route {r.name}: {r.strategy} over {targets} (attempts {r.retry.attempts}, queue "
              f"{r.queue.max_size}/{r.queue.max_wait:g}s{spill})")
    for rule in config.rules:
        when = f"task={rule.task}" if rule.task else f"match=/{rule.match.pattern}/"  # type: ignore[union-attr]
        print(f"  rule {when} -> {rule.route}")
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

    for commands in (chat, embed, listing, manage, health):
        commands.add(sub)

    args = parser.parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader left (`turnout models | head`): stop quietly, and point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except config_module.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:  # gateway.server.ListenError: the port is taken
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
