"""What every client command shares: the gateway address, API key and TLS
options, the channel they make, and how a command's coroutine is run."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Awaitable, Callable

import grpc

DEFAULT_GATEWAY = "127.0.0.1:50051"
Command = Callable[[argparse.Namespace], Awaitable[int]]


def add_command(sub: argparse._SubParsersAction, name: str, command: Command, help: str) -> argparse.ArgumentParser:
    """A client command: `turnout NAME` with the connection options, running `command`."""
    p = sub.add_parser(name, help=help, description=help)
    gateway = os.environ.get("TURNOUT_ADDR", DEFAULT_GATEWAY)
    p.add_argument("--gateway", "-g", default=gateway, help=f"gateway address (default {gateway}; $TURNOUT_ADDR)")
    p.add_argument("--api-key", default=os.environ.get("TURNOUT_API_KEY", ""),
                   help="API key, sent as `authorization: Bearer` (default: $TURNOUT_API_KEY)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the gateway; enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
    p.add_argument("--tls-key", help="client key (PEM), for mutual TLS")
    p.set_defaults(run=lambda args: asyncio.run(command(args)))
    return p


def channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """A channel to the gateway: TLS when --tls-ca is given (mutual TLS with
    --tls-cert and --tls-key)."""
    if not args.tls_ca:
        return grpc.aio.insecure_channel(args.gateway)
    read = lambda path: open(path, "rb").read() if path else None  # noqa: E731
    credentials = grpc.ssl_channel_credentials(read(args.tls_ca), read(args.tls_key), read(args.tls_cert))
    return grpc.aio.secure_channel(args.gateway, credentials)


def metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The API key as bearer metadata, for every call."""
    return (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
