"""`make bench-routing-real`: two real llama.cpp servers (SmolLM2-135M, 2 slots,
1 thread each, started by tests/real/llama.py) behind `turnout serve`, freshly
started for each strategy, and six 3-turn conversations over three shared
system prompts (~500 to ~1,300 tokens), one conversation starting every few
seconds, each turn sending the whole history. Reports each strategy's TTFT
(through the gRPC stubs) and what the servers computed, from their /metrics:
`llamacpp:prompt_tokens_total` (prompt tokens computed, cached ones excluded)
and `llamacpp:prompt_tokens_cached_total` (reused from the cache). Writes
bench/routing-real-results.json.

    .venv/bin/python -m bench.routing_real [--strategies least_used,adaptive]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path

import grpc
import yaml

from bench.routing import ROLES, commit, quantile, scheduling_available, strategies_available, turnout
from bench.run import ROOT, free_port
from tests.real.llama import llama_server, metrics
from turnout.v1 import generate_pb2, generate_pb2_grpc

TENANTS, CONVERSATIONS, TURNS, START_EVERY = 3, 6, 3, 6.0
SYSTEM_WORDS = (500, 900, 1300)  # about as many SmolLM2 tokens
VOCABULARY = ("the customer order account service please check answer question policy refund shipping "
              "delivery product support team daily report update status price invoice payment address "
              "phone email message reply always never only when before after during first second last "
              "number name date time week month year open close help guide rule note list item group "
              "level value place start end change keep send give take make find show tell ask need").split()


def _prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)) + "."


def conversations(seed: int = 7) -> list[tuple[str, list[str]]]:
    """(system prompt, user turns) per conversation; tenants share system prompts."""
    rng = random.Random(seed)
    systems = [f"You are the assistant of tenant {i}. Follow these notes. " + _prose(rng, words)
               for i, words in enumerate(SYSTEM_WORDS[:TENANTS])]
    return [(systems[c % TENANTS], [f"Question {t}: " + _prose(rng, 25) for t in range(TURNS)])
            for c in range(CONVERSATIONS)]


async def converse(stub, system: str, turns: list[str], delay: float) -> list[dict]:
    """One conversation, starting after `delay` seconds; each turn sends the whole history."""
    await asyncio.sleep(delay)
    history = [generate_pb2.Message(role=ROLES["system"], content=system)]
    out = []
    for question in turns:
        history.append(generate_pb2.Message(role=ROLES["user"], content=question))
        request = generate_pb2.GenerateRequest(model="chat", messages=history,
                                               options=generate_pb2.GenerationOptions(max_tokens=8,
                                                                                      temperature=0))
        start, ttft, backend, answer, error = time.perf_counter(), None, "", [], ""
        try:
            async for response in stub.Generate(request, timeout=600):
                if response.HasField("started"):
                    backend = response.started.backend
                elif response.HasField("delta") and response.delta.content:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    answer.append(response.delta.content)
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        out.append({"ttft": ttft, "backend": backend, "error": error,
                    "prompt_chars": sum(len(m.content) for m in history)})
        if error:
            break
        history.append(generate_pb2.Message(role=ROLES["assistant"], content="".join(answer)))
    return out


async def drive(address: str) -> list[dict]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        runs = await asyncio.gather(*(converse(stub, system, turns, i * START_EVERY)
                                      for i, (system, turns) in enumerate(conversations())))
    return [r for run in runs for r in run]


def run_one(strategy: str, directory: Path) -> dict:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(llama_server(parallel=2, ctx_size=8192, threads=1, log_dir=directory))
                   for _ in range(2)]
        port = free_port()
        backends = [{"name": f"llama-{i}", "kind": "openai", "url": server.url, "models": ["smollm2"]}
                    for i, server in enumerate(servers)]
        body = {"listen": f"127.0.0.1:{port}", "metrics_listen": f"127.0.0.1:{free_port()}",
                "sessions": {"store": "memory"}, "logging": {"level": "warning"}, "backends": backends,
                "routes": [{"name": "chat", "strategy": strategy, "first_token_timeout": "600s",
                            "targets": [{"backend": b["name"], "model": "smollm2"} for b in backends]}]}
        if scheduling_available():
            body["scheduler"] = {"store": "memory", "poll_interval": "500ms"}
            body["routes"][0]["queue"] = {"max_wait": "600s", "max_size": 64}
        path = directory / f"real-{strategy}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        began = time.monotonic()
        with turnout(path, port):
            results = asyncio.run(drive(f"127.0.0.1:{port}"))
        seconds = time.monotonic() - began
        counters = {f"llama-{i}": {k: v for k, v in metrics(server).items() if k.startswith("llamacpp:prompt")}
                    for i, server in enumerate(servers)}
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None] or [float("nan")]
    return {"requests": len(results), "seconds": round(seconds, 1),
            "errors": [r["error"] for r in results if r["error"]],
            "ttft_p50_s": quantile(ttfts, 0.5), "ttft_p90_s": quantile(ttfts, 0.9), "ttft_max_s": max(ttfts),
            "ttft_mean_s": sum(ttfts) / len(ttfts),
            "prompt_tokens_total": sum(c.get("llamacpp:prompt_tokens_total", 0) for c in counters.values()),
            "prompt_tokens_cached_total": sum(c.get("llamacpp:prompt_tokens_cached_total", 0)
                                              for c in counters.values()),
            "per_server": counters, "requests_log": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategies", default="least_used,adaptive")
    parser.add_argument("--output", default=str(ROOT / "bench/routing-real-results.json"))
    args = parser.parse_args()
    chosen = [s for s in args.strategies.split(",") if s in strategies_available()]
    results: dict = {"commit": commit(), "servers": "2 x llama-server -np 2 -t 1 -c 8192, SmolLM2-135M-Instruct Q4_1",
                     "workload": f"{CONVERSATIONS} conversations x {TURNS} turns over {TENANTS} shared system "
                                 f"prompts, one starting every {START_EVERY:g} s, max_tokens 8", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="turnout-bench-real-") as tmp:
        for strategy in chosen:
            r = results["runs"][strategy] = run_one(strategy, Path(tmp))
            print(f"{strategy:12} TTFT p50 {r['ttft_p50_s']:.2f} s p90 {r['ttft_p90_s']:.2f} s "
                  f"mean {r['ttft_mean_s']:.2f} s  prompt tokens computed {r['prompt_tokens_total']:.0f}, "
                  f"cached {r['prompt_tokens_cached_total']:.0f}, errors {len(r['errors'])}  "
                  f"({r['seconds']:.0f} s)", flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
