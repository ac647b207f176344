"""`make bench-routing`: how well each routing strategy places requests on
simulated local model servers (bench/sim), in one run, side by side.

For every scenario (bench/sim/scenarios.py) and strategy: the scenario's
engines start in their own process, `turnout serve` in another, and this
process replays the seeded workload through the generated gRPC stubs (open
loop), measuring each request's time to first token. The engines' own
counters give the prompt tokens computed and the model loads. Prints one
table and writes bench/routing-results.json.

The sim runs in real time beside a real gateway, so one run of a scenario
depends on how the machine's cores were shared while it ran. With `--repeat
N` every scenario and strategy runs N times: the table shows each figure's
median, and the verdicts give the ratios' range over the runs too.

    .venv/bin/python -m bench.routing [--only tenants,burst] [--strategies least_used,adaptive] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import yaml

from bench.run import PYTHON, ROOT, free_port, wait_or_kill, wait_port
from bench.sim.scenarios import SCENARIOS, STRATEGIES, Scenario, config, route_name
from bench.sim.workloads import Request
from gateway.config import types as config_types
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc

ROLES = {"system": common_pb2.ROLE_SYSTEM, "user": common_pb2.ROLE_USER, "assistant": common_pb2.ROLE_ASSISTANT}
CHANNELS = 4
DEADLINE = 20.0


def commit() -> str:
    """The checkout measured (its HEAD, with "+dirty" when it has uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def scheduling_available() -> bool:
    """Whether this build has SPEC §4b's config (capacity, queue, spill, load signals)."""
    return "queue" in config_types.RouteConfig.__dataclass_fields__


def strategies_available() -> list[str]:
    return [s for s in STRATEGIES if s == "reference" or s in config_types.STRATEGIES]


@contextlib.contextmanager
def engines(scenario: str) -> Iterator[dict[str, str]]:
    proc = subprocess.Popen([PYTHON, "-m", "bench.sim.serve", scenario], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        wait_or_kill(proc, 10)


@contextlib.contextmanager
def turnout(config_path: Path, port: int) -> Iterator[None]:
    """`turnout serve` on that config; its log goes beside the config and is
    shown if the gateway exited before the run ended."""
    log = config_path.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([PYTHON, "-m", "gateway.cli", "serve", "--config", str(config_path)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        time.sleep(1.0)  # the first load-signal polls
        yield
    finally:
        if proc.poll() is not None:
            sys.stderr.write(f"turnout exited ({proc.returncode}); its log:\n{log.read_text()[-4000:]}\n")
        proc.terminate()
        wait_or_kill(proc, 20)


def counters(urls: dict[str, str]) -> dict[str, dict]:
    out = {}
    for name, url in urls.items():
        root = url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/sim/counters", timeout=10) as response:
            out[name] = json.loads(response.read())
    return out


async def replay(address: str, scenario: Scenario, strategy: str, requests: list[Request]) -> list[dict]:
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    stubs = [generate_pb2_grpc.GenerateServiceStub(c) for c in channels]

    async def one(i: int, r: Request) -> dict:
        await asyncio.sleep(max(0.0, start + r.at - time.perf_counter()))
        message = generate_pb2.GenerateRequest(
            model=route_name(scenario, strategy, r.key), session_id=r.session,
            messages=[generate_pb2.Message(role=ROLES[m["role"]], content=m["content"]) for m in r.messages])
        stub = stubs[i % CHANNELS]
        begin, backend, ttft = time.perf_counter(), "", None
        try:
            async for response in stub.Generate(message, timeout=DEADLINE):
                if response.HasField("started"):
                    backend = response.started.backend
                elif ttft is None and response.HasField("delta") and response.delta.content:
                    ttft = time.perf_counter() - begin
            error = "" if ttft is not None else "no content"
        except grpc.aio.AioRpcError as exc:
            error = exc.code().name
        return {"key": r.key, "phase": r.phase, "backend": backend, "ttft": ttft, "error": error}

    start = time.perf_counter() + 0.2
    try:
        return await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(scenario: Scenario, results: list[dict], engine_counters: dict[str, dict]) -> dict:
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    cloud = {e.name for e in scenario.engines if e.priority > 0}
    spilled = [r for r in results if r["backend"] in cloud]
    by_phase: dict[str, dict] = {}
    for phase in dict.fromkeys(r["phase"] for r in results):
        rows = [r for r in results if r["phase"] == phase]
        by_phase[phase or "all"] = {"requests": len(rows),
                                    "spilled": sum(1 for r in rows if r["backend"] in cloud)}
    errors: dict[str, int] = {}
    for r in results:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "requests": len(results),
        "ttft_p50_s": quantile(ttfts, 0.5),
        "ttft_p99_s": quantile(ttfts, 0.99),
        "goodput": sum(1 for t in ttfts if t <= scenario.slo) / len(results),
        "prompt_tokens": sum(c["prompt_tokens"] for c in engine_counters.values()),
        "cached_tokens": sum(c["cached_tokens"] for c in engine_counters.values()),
        "model_loads": sum(c["model_loads"] for c in engine_counters.values()),
        "engine_max_waiting": max(c["max_waiting"] for c in engine_counters.values()),
        "spill_share": len(spilled) / len(results),
        "lost": sum(errors.values()),
        "errors": errors,
        "phases": by_phase,
        "per_engine": {name: c for name, c in engine_counters.items()},
    }


def run_one(scenario: Scenario, strategy: str, requests: list[Request], directory: Path) -> dict:
    with engines(scenario.name) as urls:
        port = free_port()
        body = config(scenario, strategy, urls, scheduling_available(), f"127.0.0.1:{port}",
                      f"127.0.0.1:{free_port()}")
        path = directory / f"{scenario.name}-{strategy}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        with turnout(path, port):
            results = asyncio.run(replay(f"127.0.0.1:{port}", scenario, strategy, requests))
        return summarize(scenario, results, counters(urls))


MEDIAN_OF = ("ttft_p50_s", "ttft_p99_s", "goodput", "prompt_tokens", "cached_tokens", "model_loads", "spill_share")


def combine(repeats: list[dict]) -> dict:
    """One row for N runs of a scenario and strategy: the median of each
    figure, the most requests lost in any run, the rest (phases, engines)
    from the run of median goodput, and every run's figures under `repeats`."""
    if len(repeats) == 1:
        return repeats[0]
    middle = sorted(repeats, key=lambda r: r["goodput"])[len(repeats) // 2]
    row = dict(middle)
    for key in MEDIAN_OF:
        values = [r[key] for r in repeats if r[key] is not None]
        row[key] = statistics.median(values) if values else None
    row["lost"] = max(r["lost"] for r in repeats)
    row["repeats"] = [{key: r[key] for key in (*MEDIAN_OF, "lost")} for r in repeats]
    return row


def ratios(adaptive: dict, reference: dict, key: str) -> list[float]:
    """adaptive / reference for `key`, run by run."""
    pairs = zip(adaptive.get("repeats", [adaptive]), reference.get("repeats", [reference]), strict=False)
    return [a[key] / b[key] for a, b in pairs if b[key]]


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: dict) -> str:
    rows = [("scenario", "strategy", "TTFT p50", "TTFT p99", "goodput", "prompt tok", "spill", "loads", "lost",
             "good/ref", "tok/ref")]
    for name, runs in results["scenarios"].items():
        reference = runs.get("reference")
        for strategy, r in runs.items():
            if not isinstance(r, dict) or "goodput" not in r:
                continue
            good = tok = None
            if reference and strategy != "reference":
                good = r["goodput"] / reference["goodput"] if reference["goodput"] else None
                tok = r["prompt_tokens"] / reference["prompt_tokens"] if reference["prompt_tokens"] else None
            rows.append((name, strategy, _cell(r["ttft_p50_s"], ".3f"), _cell(r["ttft_p99_s"], ".3f"),
                         f"{r['goodput']:.2f}", f"{r['prompt_tokens']:.0f}", f"{r['spill_share']:.2f}",
                         f"{r['model_loads']:.0f}", str(r["lost"]), _cell(good, ".2f"), _cell(tok, ".2f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def verdicts(results: dict) -> list[str]:
    """The issue's targets, checked for `adaptive` against the reference."""
    lines = []
    for name, runs in results["scenarios"].items():
        adaptive, reference = runs.get("adaptive"), runs.get("reference")
        if not adaptive or not reference:
            continue
        good = adaptive["goodput"] / reference["goodput"] if reference["goodput"] else float("inf")
        tok = adaptive["prompt_tokens"] / max(1, reference["prompt_tokens"])
        spread = {key: ratios(adaptive, reference, key) for key in ("goodput", "prompt_tokens")}
        runs = {key: f" (runs {min(v):.2f}-{max(v):.2f})" if len(v) > 1 else "" for key, v in spread.items()}
        checks = [f"goodput {good:.2f}x ref{runs['goodput']} ({'ok' if good >= 0.9 else 'MISS'} >= 0.9)",
                  f"prompt tokens {tok:.2f}x ref{runs['prompt_tokens']} ({'ok' if tok <= 1.5 else 'MISS'} <= 1.5)"
                  if adaptive["lost"] <= reference["lost"] else
                  f"prompt tokens {tok:.2f}x ref (not comparable: {adaptive['lost']} requests lost)"]
        if name == "burst":
            phases, overflow = adaptive["phases"], SCENARIOS[name].overflow
            before = phases["before"]["spilled"] / phases["before"]["requests"]
            burst = phases["burst"]["spilled"] / phases["burst"]["requests"]
            checks += [f"lost {adaptive['lost']} ({'ok' if not adaptive['lost'] else 'MISS'})",
                       f"spilled before the burst {before:.2f} ({'ok' if before <= 0.1 else 'MISS'} <= 0.1)",
                       f"in the burst {burst:.2f} vs overflow {overflow:.2f} "
                       f"({'ok' if abs(burst - overflow) <= 0.15 else 'MISS'} within 0.15)"]
        lines.append(f"{name}: " + "; ".join(checks))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    parser.add_argument("--strategies", default="", help="comma-separated strategies")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario and strategy (medians shown)")
    parser.add_argument("--output", default=str(ROOT / "bench/routing-results.json"))
    args = parser.parse_args()
    names = [n for n in SCENARIOS if not args.only or n in args.only.split(",")]
    chosen = [s for s in strategies_available() if not args.strategies or s in args.strategies.split(",")]
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "commit": commit(), "scheduling_config": scheduling_available(), "repeat": args.repeat,
                     "scenarios": {}}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="turnout-bench-routing-") as tmp:
        for name in names:
            scenario = SCENARIOS[name]
            requests = scenario.workload()
            runs: dict = {"about": scenario.about, "slo_s": scenario.slo, "requests": len(requests)}
            results["scenarios"][name] = runs
            repeats: dict[str, list[dict]] = {strategy: [] for strategy in chosen}
            for _ in range(args.repeat):  # strategies interleaved, so a slow spell of the machine hits them alike
                for strategy in chosen:
                    r = run_one(scenario, strategy, requests, Path(tmp))
                    repeats[strategy].append(r)
                    print(f"{name:8} {strategy:21} p50 {_cell(r['ttft_p50_s'], '.3f')} "
                          f"p99 {_cell(r['ttft_p99_s'], '.3f')} goodput {r['goodput']:.2f} "
                          f"tokens {r['prompt_tokens']} loads {r['model_loads']} spill {r['spill_share']:.2f} "
                          f"lost {r['lost']}", flush=True)
            runs.update({strategy: combine(rows) for strategy, rows in repeats.items()})
    results["seconds"] = round(time.monotonic() - began, 1)
    results["verdicts"] = verdicts(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print()
    for line in results["verdicts"]:
        print(line)
    print(f"({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
