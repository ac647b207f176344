"""`turnout health`: the gateway's grpc.health.v1 answer as an exit code (0
when SERVING), for container HEALTHCHECKs and exec probes, which, unlike the
kubelet's built-in gRPC probe, can speak TLS."""

from __future__ import annotations

import argparse
import sys

from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.commands.client import add_command, channel, metadata


async def health(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout, metadata=metadata(args))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status, file=sys.stdout if response.status == health_pb2.HealthCheckResponse.SERVING else sys.stderr)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def add(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "health", health, "check the gateway's gRPC health (exit 0 when SERVING)")
    p.add_argument("--service", default="", help="a service name (default: the whole gateway)")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
