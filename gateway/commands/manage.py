"""`turnout pull | rm`: model management on one backend (Ollama), as `ollama
pull` and `ollama rm` do it: a progress bar per layer while pulling."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from gateway.commands.client import add_command, channel, metadata
from turnout.v1 import model_pb2, model_pb2_grpc


async def _default_backend(stub: model_pb2_grpc.ModelServiceStub, args: argparse.Namespace) -> str:
    """--backend, else the only Ollama backend (pulls need one to be named when there are several)."""
    if args.backend:
        return args.backend
    response = await stub.ListBackends(model_pb2.ListBackendsRequest(), timeout=10, metadata=metadata(args))
    ollamas = [b.name for b in response.backends if b.kind == model_pb2.BACKEND_KIND_OLLAMA]
    if len(ollamas) != 1:
        raise SystemExit(f"error: name the backend with --backend (Ollama backends: {', '.join(ollamas) or 'none'})")
    return ollamas[0]


async def pull(args: argparse.Namespace) -> int:
    bars: dict[str, tqdm] = {}
    async with channel(args) as ch:
        stub = model_pb2_grpc.ModelServiceStub(ch)
        backend = await _default_backend(stub, args)
        request = model_pb2.PullModelRequest(backend=backend, model=args.model)
        try:
            async for p in stub.PullModel(request, timeout=args.timeout, metadata=metadata(args)):
                if p.digest and p.total_bytes:
                    bar = bars.get(p.digest)
                    if bar is None:
                        bar = bars[p.digest] = tqdm(total=p.total_bytes, desc=p.status, unit="B", unit_scale=True,
                                                    unit_divisor=1024, file=sys.stderr, disable=None)
                    bar.update(p.completed_bytes - bar.n)
                elif p.status != "success":
                    print(p.status, file=sys.stderr)
        finally:
            for bar in bars.values():
                bar.close()
    print(f"pulled {args.model} onto {backend}")
    return 0


async def rm(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        stub = model_pb2_grpc.ModelServiceStub(ch)
        backend = await _default_backend(stub, args)
        await stub.DeleteModel(model_pb2.DeleteModelRequest(backend=backend, model=args.model),
                               timeout=60, metadata=metadata(args))
    print(f"deleted {args.model} from {backend}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pull", pull, "pull a model onto an Ollama backend, with progress")
    p.add_argument("model", help="model to pull, e.g. llama3.2:1b")
    p.add_argument("--backend", "-b", default="", help="backend to pull onto (default: the only Ollama backend)")
    p.add_argument("--timeout", type=float, default=3600.0, help="deadline in seconds")
    p = add_command(sub, "rm", rm, "delete a model from an Ollama backend")
    p.add_argument("model", help="model to delete")
    p.add_argument("--backend", "-b", default="", help="backend to delete from (default: the only Ollama backend)")
