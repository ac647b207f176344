"""`make bench-routing-real`: two real llama.cpp servers (SmolLM2-135M, 2 slots,
1 thread each; ../shared/scripts/llama-server.sh builds them) behind
`turnout serve`, and several conversations that share long system prompts,
run once per strategy on freshly started servers. Reports each strategy's TTFT
(through the gRPC stubs) and what the servers computed: llama.cpp's
prompt-token counters from /metrics (`llamacpp:prompt_tokens_total` counts the
prompt tokens it evaluated, so cache hits lower it). Writes
bench/routing-real-results.json.

    .venv/bin/python -m bench.routing_real [--strategies least_used,adaptive]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import yaml

from bench.routing import ROLES, _quantile, scheduling_available, strategies_available
from bench.run import ROOT, free_port, process
from bench.sim.workloads import _text
from turnout.v1 import generate_pb2, generate_pb2_grpc

SCRIPT = ROOT.parent / "shared/scripts/llama-server.sh"
TENANTS, CONVERSATIONS, TURNS, CONCURRENCY = 3, 6, 3, 4
SYSTEM_WORDS = (900, 1400, 2000)  # ~500 to ~1,300 SmolLM2 tokens


def llama_paths() -> tuple[str, str]:
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=True).stdout.split()
    return out[-2], out[-1]


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {name: float(value) for line in text.splitlines() if line.startswith("llamacpp:")
            for name, value in [line.rsplit(" ", 1)]}


def wait_healthy(port: int, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise SystemExit(f"llama-server on port {port} not healthy after {limit:.0f}s")


@contextlib.contextmanager
def llama_servers(binary: str, model: str, directory: Path) -> Iterator[list[int]]:
    ports, procs = [free_port(), free_port()], []
    try:
        for port in ports:
            log = open(directory / f"llama-{port}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen(
                [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-np", "2", "-t", "1",
                 "-c", "8192", "--metrics", "--slots", "-a", "smollm2"],
                stdout=log, stderr=subprocess.STDOUT), log))
        for port in ports:
            wait_healthy(port)
        yield ports
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def conversations(seed: int = 7) -> list[tuple[str, list[str]]]:
    """(system prompt, user turns) per conversation; tenants share system prompts."""
    rng = random.Random(seed)
    systems = [f"You are the assistant of tenant {i}. Follow these notes. " + _text(rng, words * 5)
               for i, words in enumerate(SYSTEM_WORDS[:TENANTS])]
    return [(systems[c % TENANTS], [f"Question {t}: " + _text(rng, 60) for t in range(TURNS)])
            for c in range(CONVERSATIONS)]


async def converse(stub, system: str, turns: list[str], gate: asyncio.Semaphore) -> list[dict]:
    history = [generate_pb2.Message(role=ROLES["system"], content=system)]
    out = []
    async with gate:
        for question in turns:
            history.append(generate_pb2.Message(role=ROLES["user"], content=question))
            request = generate_pb2.GenerateRequest(model="chat", messages=history,
                                                   options=generate_pb2.GenerationOptions(max_tokens=8,
                                                                                          temperature=0))
            start, ttft, backend, answer = time.perf_counter(), None, "", []
            async for response in stub.Generate(request, timeout=600):
                if response.HasField("started"):
                    backend = response.started.backend
                elif response.HasField("delta") and response.delta.content:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    answer.append(response.delta.content)
            out.append({"ttft": ttft, "backend": backend, "prompt_chars": sum(len(m.content) for m in history)})
            history.append(generate_pb2.Message(role=ROLES["assistant"], content="".join(answer)))
    return out


async def drive(address: str) -> list[dict]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub, gate = generate_pb2_grpc.GenerateServiceStub(channel), asyncio.Semaphore(CONCURRENCY)
        runs = await asyncio.gather(*(converse(stub, s, t, gate) for s, t in conversations()))
    return [r for run in runs for r in run]


def run_one(strategy: str, binary: str, model: str, directory: Path) -> dict:
    with llama_servers(binary, model, directory) as ports:
        port = free_port()
        backends = [{"name": f"llama-{i}", "kind": "openai", "url": f"http://127.0.0.1:{p}/v1", "models": ["smollm2"]}
                    for i, p in enumerate(ports)]
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
        with process([str(ROOT / ".venv/bin/python"), "-m", "gateway.cli", "serve", "--config", str(path)], port):
            time.sleep(1.0)
            results = asyncio.run(drive(f"127.0.0.1:{port}"))
        seconds = time.monotonic() - began
        counters = {f"llama-{i}": metrics(p) for i, p in enumerate(ports)}
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    return {"requests": len(results), "seconds": round(seconds, 1),
            "ttft_p50_s": _quantile(ttfts, 0.5), "ttft_p90_s": _quantile(ttfts, 0.9), "ttft_max_s": max(ttfts),
            "ttft_mean_s": sum(ttfts) / len(ttfts),
            "prompt_tokens_total": sum(c.get("llamacpp:prompt_tokens_total", 0) for c in counters.values()),
            "per_server": counters, "requests_log": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategies", default="least_used,adaptive")
    parser.add_argument("--output", default=str(ROOT / "bench/routing-real-results.json"))
    args = parser.parse_args()
    binary, model = llama_paths()
    chosen = [s for s in args.strategies.split(",") if s in strategies_available()]
    results: dict = {"servers": "2 x llama-server -np 2 -t 1 -c 8192, SmolLM2-135M-Instruct Q4_1",
                     "workload": f"{CONVERSATIONS} conversations x {TURNS} turns over {TENANTS} shared system "
                                 f"prompts, {CONCURRENCY} at a time, max_tokens 8", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="turnout-bench-real-") as tmp:
        for strategy in chosen:
            r = results["runs"][strategy] = run_one(strategy, binary, model, Path(tmp))
            print(f"{strategy:12} TTFT p50 {r['ttft_p50_s']:.2f} s p90 {r['ttft_p90_s']:.2f} s "
                  f"mean {r['ttft_mean_s']:.2f} s  prompt tokens evaluated {r['prompt_tokens_total']:.0f}  "
                  f"({r['seconds']:.0f} s)", flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
