"""`make bench`: measures, in one run on this machine, the same streams
fetched straight from a non-Python upstream (nginx, the floor), from a bare
grpc.aio server (the gRPC ceiling: one message per upstream chunk; and the
gRPC floor: the three messages turnout sends once chunks are coalesced),
through turnout with 1 and N workers, through one turnout worker with
tracing on (every request sampled, then one in ten; spans exported with
OTLP/HTTP to a local sink; beside turnout_1w, its cost), and through the LiteLLM proxy; then
2,000 concurrent open streams on one turnout worker. Prints one table with
the ratios and writes bench/results.json.

    .venv/bin/python -m bench.run [--quick] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bench import upstream

ROOT = Path(__file__).parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {limit:.0f}s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def load(kind: str, target: str, mode: str, **options: object) -> dict:
    args = [PYTHON, "-m", "bench.load", kind, target, mode]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


@contextlib.contextmanager
def process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        wait_or_kill(proc, 20)


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    """Waits `timeout` seconds for a process that was asked to end, then kills it."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def turnout(backend_url: str, kind: str, workers: int, directory: Path, extra: str = "") -> Iterator[tuple[str, int]]:
    port = free_port()
    config = directory / f"turnout-{kind}-{workers}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{free_port()}\nworkers: {workers}\n"
        "sessions: {store: memory}\n"
        f"backends:\n  - {{name: up, kind: {kind}, url: '{backend_url}', models: [{upstream.MODEL}]}}\n{extra}"
    )
    with process([PYTHON, "-m", "gateway.cli", "serve", "--config", str(config)], port) as proc:
        yield f"127.0.0.1:{port}", proc.pid


def measure(kind: str, target: str, pid: int | None, quick: bool, key: str = "") -> dict:
    requests, seconds = (100, 3) if quick else (400, 8)
    extra = {"key": key} if key else {}
    low = load(kind, target, "latency", requests=requests, **extra)
    high = load(kind, target, "throughput", concurrency=64, seconds=seconds, **extra)
    return {"latency": low, "throughput": high, "rss_mb": rss_mb(pid) if pid else None}


def traced(base: str, directory: Path, quick: bool, ratio: float) -> dict:
    """turnout_1w with tracing on, `ratio` of the requests sampled and exported to bench.otlp_sink."""
    port, counts = free_port(), directory / f"otlp-counts-{ratio}.json"
    with process([PYTHON, "-m", "bench.otlp_sink", str(port), str(counts)], port):
        tracing = f"tracing: {{endpoint: 'http://127.0.0.1:{port}', sampler_ratio: {ratio}}}\n"
        with turnout(base, "ollama", 1, directory, tracing) as (address, pid):
            result = measure("grpc", address, pid, quick)
        result["otlp"] = json.loads(counts.read_text()) if counts.exists() else {"exports": 0, "bytes": 0}
    return result


def memory(nginx_port: int, directory: Path, streams: int) -> dict:
    with turnout(f"http://127.0.0.1:{nginx_port}/slow", "ollama", 1, directory) as (address, pid):
        idle = rss_mb(pid)
        held = subprocess.run([PYTHON, "-m", "bench.hold", address, str(streams), str(pid)],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        if held.returncode != 0:
            raise SystemExit(f"hold failed: {held.stderr[-2000:]}")
        rss = json.loads(held.stdout)["rss_mb"]
        return {"streams": streams, "idle_rss_mb": idle, "rss_mb": rss,
                "per_stream_kb": round((rss - idle) * 1024 / streams, 1)}


def table(results: dict) -> str:
    rows = [("target", "p50 ms", "p99 ms", "added p50", "added p99", "streams/s", "chunks/s", "RSS MB")]
    floor = results["direct"]["latency"]
    for name, r in results.items():
        if not isinstance(r, dict) or "latency" not in r:
            continue
        lat, thr = r["latency"], r["throughput"]
        added = name != "direct"
        rows.append((name, f"{lat['p50_ms']:.2f}", f"{lat['p99_ms']:.2f}",
                     f"{lat['p50_ms'] - floor['p50_ms']:.2f}" if added else "-",
                     f"{lat['p99_ms'] - floor['p99_ms']:.2f}" if added else "-",
                     f"{thr['streams_per_s']:.0f}", f"{thr['chunks_per_s']:.0f}",
                     f"{r['rss_mb']:.0f}" if r["rss_mb"] else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def ratios(results: dict) -> dict[str, float]:
    def rate(name: str) -> float | None:
        r = results.get(name)
        return r["throughput"]["streams_per_s"] if isinstance(r, dict) and "throughput" in r else None

    out = {}
    pairs = [("turnout_1w / direct", "turnout_1w", "direct"), ("turnout_1w / grpc_ceiling", "turnout_1w", "grpc_ceiling"),
             ("turnout_1w / grpc_floor", "turnout_1w", "grpc_floor"),
             ("turnout_2w / grpc_ceiling_2w", "turnout_2w", "grpc_ceiling_2w"),
             ("turnout_1w_traced / turnout_1w", "turnout_1w_traced", "turnout_1w"),
             ("turnout_1w_traced_10pct / turnout_1w", "turnout_1w_traced_10pct", "turnout_1w"),
             ("turnout_1w / litellm_1w", "turnout_1w", "litellm_1w"), ("turnout_2w / direct", "turnout_2w", "direct")]
    for label, a, b in pairs:
        if rate(a) and rate(b):
            out[label] = round(rate(a) / rate(b), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated subset of the stages")
    parser.add_argument("--streams", type=int, default=2000, help="concurrent open streams for the memory stage")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    def wanted(stage: str) -> bool:
        return not only or stage in only

    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="turnout-bench-") as tmp:
        directory = Path(tmp)
        nginx_port = free_port()
        nginx = upstream.start(directory / "nginx", nginx_port)
        try:
            wait_port(nginx_port)
            base = f"http://127.0.0.1:{nginx_port}"
            if wanted("direct"):
                results["direct"] = measure("ollama", base, None, args.quick)
                print("direct", results["direct"], flush=True)
            if wanted("grpc_ceiling"):
                port = free_port()
                with process([PYTHON, "-m", "bench.ceiling", str(port)], port) as proc:
                    results["grpc_ceiling"] = measure("grpc", f"127.0.0.1:{port}", proc.pid, args.quick)
                print("grpc_ceiling", results["grpc_ceiling"], flush=True)
            if wanted("grpc_floor"):
                port = free_port()
                with process([PYTHON, "-m", "bench.ceiling", str(port), "1", "coalesced"], port) as proc:
                    results["grpc_floor"] = measure("grpc", f"127.0.0.1:{port}", proc.pid, args.quick)
                print("grpc_floor", results["grpc_floor"], flush=True)
            if wanted("grpc_ceiling_2w"):
                port = free_port()
                with process([PYTHON, "-m", "bench.ceiling", str(port), "2"], port) as proc:
                    results["grpc_ceiling_2w"] = measure("grpc", f"127.0.0.1:{port}", proc.pid, args.quick)
                print("grpc_ceiling_2w", results["grpc_ceiling_2w"], flush=True)
            for workers in (1, 2):
                name = f"turnout_{workers}w"
                if wanted(name):
                    with turnout(base, "ollama", workers, directory) as (address, pid):
                        results[name] = measure("grpc", address, pid, args.quick)
                    print(name, results[name], flush=True)
            for name, ratio in (("turnout_1w_traced", 1.0), ("turnout_1w_traced_10pct", 0.1)):
                if wanted(name):
                    results[name] = traced(base, directory, args.quick, ratio)
                    print(name, results[name], flush=True)
            if wanted("turnout_openai_1w"):
                with turnout(f"{base}/v1", "openai", 1, directory) as (address, pid):
                    results["turnout_openai_1w"] = measure("grpc", address, pid, args.quick)
                print("turnout_openai_1w", results["turnout_openai_1w"], flush=True)
            if wanted("litellm_1w") and not args.skip_litellm:
                from bench import litellm

                port = free_port()
                litellm.ensure_venv(ROOT / ".bench/litellm-venv")
                proc = litellm.start(f"{base}/v1", port, directory / "litellm", workers=1)
                try:
                    results["litellm_1w"] = measure("openai", f"http://127.0.0.1:{port}/v1", proc.pid, args.quick,
                                                    key="sk-bench-master")
                finally:
                    litellm.stop(proc)
                print("litellm_1w", results["litellm_1w"], flush=True)
            if wanted("memory"):
                results["memory"] = memory(nginx_port, directory, args.streams)
                print("memory", results["memory"], flush=True)
        finally:
            nginx.terminate()
            nginx.wait()
    results["ratios"] = ratios(results)
    if isinstance(results.get("grpc_floor"), dict) and isinstance(results.get("turnout_1w"), dict):
        own = results["turnout_1w"]["latency"]["p50_ms"] - results["grpc_floor"]["latency"]["p50_ms"]
        results["turnout_1w_p50_ms_beyond_grpc_floor"] = round(own, 2)
    if isinstance(results.get("turnout_1w_traced"), dict) and isinstance(results.get("turnout_1w"), dict):
        on, off = results["turnout_1w_traced"]["latency"], results["turnout_1w"]["latency"]
        results["tracing_cost_p50_ms"] = round(on["p50_ms"] - off["p50_ms"], 2)
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    if "direct" in results:
        print()
        print(table(results))
    print()
    for label, value in results["ratios"].items():
        print(f"{label:32} {value:>6.2f}x")
    if "turnout_1w_p50_ms_beyond_grpc_floor" in results:
        print(f"turnout 1 worker, p50 beyond the gRPC floor: {results['turnout_1w_p50_ms_beyond_grpc_floor']:.2f} ms")
    if "tracing_cost_p50_ms" in results:
        print(f"tracing on vs off, 1 worker: p50 {results['tracing_cost_p50_ms']:+.2f} ms, "
              f"{results['ratios'].get('turnout_1w_traced / turnout_1w', 0):.2f}x the streams/s; "
              f"{results['turnout_1w_traced']['otlp']['exports']} OTLP exports")
    if "memory" in results:
        m = results["memory"]
        print(f"memory: {m['streams']} open streams on one worker: {m['rss_mb']} MB RSS (idle {m['idle_rss_mb']} MB)")


if __name__ == "__main__":
    main()
