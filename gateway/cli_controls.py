"""The generation-control flags of `turnout chat` (--json, --schema, --think,
--options) and `turnout embed`, which prints a vector summary for a quick
check. cli.py wires them in; everything else about the commands lives there."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from turnout.v1 import embedding_pb2, embedding_pb2_grpc, generate_pb2

THINK = {
    "off": generate_pb2.REASONING_OFF, "on": generate_pb2.REASONING_ON, "low": generate_pb2.REASONING_LOW,
    "medium": generate_pb2.REASONING_MEDIUM, "high": generate_pb2.REASONING_HIGH,
}
SHOWN_VALUES = 5


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="ask for a JSON object as the answer")
    fmt.add_argument("--schema", metavar="SCHEMA",
                     help="ask for JSON following this JSON Schema (JSON text, or @FILE to read it from a file)")
    p.add_argument("--think", choices=THINK, help="reasoning: off, on, or an effort (low, medium, high); "
                   "-v shows the reasoning on stderr")
    p.add_argument("--options", default="", metavar="JSON",
                   help='backend options as a JSON object, e.g. \'{"num_ctx": 8192}\'')


def generation_fields(args: argparse.Namespace) -> dict[str, object]:
    """The GenerateRequest fields the flags ask for; the gateway validates them."""
    fields: dict[str, object] = {"backend_options": args.options}
    if args.json:
        fields["response_format"] = generate_pb2.ResponseFormat(type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    elif args.schema:
        schema = Path(args.schema[1:]).read_text(encoding="utf-8") if args.schema.startswith("@") else args.schema
        fields["response_format"] = generate_pb2.ResponseFormat(
            type=generate_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=generate_pb2.JsonSchema(schema=schema))
    if args.think:
        fields["reasoning"] = THINK[args.think]
    return fields


def add_embed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+", help="the texts to embed")
    p.add_argument("--model", "-m", default="", help="route or model name (default: the gateway's default)")
    p.add_argument("--dimensions", type=int, help="vector length, for models that can shorten them")
    p.add_argument("--task", default="", help="task label for routing rules")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")


async def embed(args: argparse.Namespace, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> int:
    """Prints where the request went, then per input its dimensions and first values."""
    request = embedding_pb2.EmbedRequest(model=args.model, inputs=args.texts, task=args.task)
    if args.dimensions is not None:
        request.dimensions = args.dimensions
    response = await embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(
        request, timeout=args.timeout, metadata=metadata)
    tokens = f", {response.usage.prompt_tokens} tokens" if response.usage.HasField("prompt_tokens") else ""
    print(f"{response.route} -> {response.backend}/{response.model}, attempt {response.attempt}{tokens}")
    for i, vector in enumerate(response.embeddings):
        values = ", ".join(f"{v:.4f}" for v in vector.values[:SHOWN_VALUES])
        more = ", ..." if len(vector.values) > SHOWN_VALUES else ""
        print(f"[{i}] {len(vector.values)} dimensions: [{values}{more}]")
    return 0
