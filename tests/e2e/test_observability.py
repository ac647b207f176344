"""What operators see: one metrics view over two worker processes, scraped
by a real Prometheus that also evaluates every dashboard and alert query, and
one JSON log line per request with no message text and no secrets."""

import asyncio
import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import SECRET, spawn
from tests.e2e.helpers import ask, collect
from tests.fakes import FakeOpenAI, unused_port
from turnout.v1 import generate_pb2_grpc

ROOT = Path(__file__).parents[2]
PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus"
CALL_TIMEOUT = 10  # seconds for any one gRPC call: a gateway that stopped answering fails the test, never hangs it


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; install it with: {PROMETHEUS_INSTALL}", pytrace=False)
    return path


async def _traffic_until_both_workers_served(address: str, stderr: asyncio.StreamReader) -> int:
    """Sends 3 calls on a new connection at a time until request log lines
    from two different worker pids were seen; returns the calls sent."""
    pids: set[int] = set()
    sent = logged = 0
    for _ in range(40):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            for _ in range(3):
                await collect(stub.Generate(ask(model="llama3.2:1b"), timeout=CALL_TIMEOUT))
        sent += 3
        while logged < sent:
            raw = await asyncio.wait_for(stderr.readline(), 10)
            assert raw, "the gateway's processes all exited"
            if not raw.startswith(b"{"):
                continue  # gRPC's own log lines
            line = json.loads(raw)
            if line["message"] == "request":
                logged += 1
                pids.add(line["pid"])
        if len(pids) == 2:
            return sent
    raise AssertionError("SO_REUSEPORT never sent a connection to the second worker")


async def _scrape_total(metrics_address: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://{metrics_address}/metrics")).text
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "turnout_requests_total")


def _queries() -> list[str]:
    """Every PromQL expression of the dashboard and the alert rules, with
    Grafana's variables replaced by what Grafana would send."""
    dashboard = json.loads((ROOT / "deploy/grafana/turnout.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return [e.replace("$__rate_interval", "1m").replace("$route", ".*").replace("$instance", ".*") for e in exprs]


def test_alert_rules_pass_promtool():
    result = subprocess.run([_binary("promtool"), "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_scrapes_one_view_of_two_workers(ollama, tmp_path):
    prometheus = _binary("prometheus")
    async with spawn(f"workers: 2\nlogging: {{format: json}}\nsessions: {{store: memory}}\n"
                     f"backends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n", tmp_path) as gateway:
        sent = await _traffic_until_both_workers_served(gateway.address, gateway.process.stderr)
        assert await _scrape_total(gateway.metrics_address) == sent

        web = f"127.0.0.1:{unused_port()}"
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 500ms}\n"
            f"scrape_configs:\n  - job_name: turnout\n    static_configs: [{{targets: ['{gateway.metrics_address}']}}]\n"
        )
        server = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={web}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://{web}/api/v1") as api:
                async def query(expr: str) -> dict:
                    for _ in range(200):
                        with contextlib.suppress(httpx.TransportError):
                            answer = await api.get("/query", params={"query": expr})
                            if answer.status_code != 503:  # 503: still starting
                                return answer.json()
                        await asyncio.sleep(0.1)
                    raise AssertionError("prometheus never answered")

                deadline = time.monotonic() + 30
                while True:
                    result = (await query("sum(turnout_requests_total)"))["data"]["result"]
                    if result and float(result[0]["value"][1]) == sent:
                        break
                    assert time.monotonic() < deadline, f"prometheus saw {result}"
                    await asyncio.sleep(0.2)
                up = (await query("max by (backend) (turnout_backend_up)"))["data"]["result"]
                assert [(r["metric"]["backend"], r["value"][1]) for r in up] == [("local", "1")]
                for expr in _queries():
                    answer = await query(expr)
                    assert answer["status"] == "success", f"{expr}: {answer}"
        finally:
            server.terminate()
            server.wait(timeout=10)
        gateway.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.process.wait(), 20) == 0


async def test_json_logs_have_one_line_per_request_and_no_text_or_secret(tmp_path):
    async with FakeOpenAI(api_key=SECRET) as openai:
        config = ("logging: {format: json}\nsessions: {store: memory}\n"
                  f"backends:\n  - {{name: cloud, kind: openai, url: '{openai.url}', api_key: '${{CLOUD_KEY}}'}}\n")
        async with spawn(config, tmp_path, env={"CLOUD_KEY": SECRET}) as gateway:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                await collect(stub.Generate(ask("my private question", model="gpt-4o-mini", metadata={"k": "v"}),
                                            timeout=CALL_TIMEOUT))
            gateway.process.send_signal(signal.SIGTERM)
            stderr = (await asyncio.wait_for(gateway.process.stderr.read(), 20)).decode()
            await asyncio.wait_for(gateway.process.wait(), 20)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["message"] == "request"]
    assert len(requests) == 1
    entry = requests[0]
    assert re.fullmatch(r"[0-9a-f]{32}", entry["request_id"])
    assert {k: entry[k] for k in ("route", "backend", "model", "attempts", "code", "prompt_tokens",
                                  "completion_tokens")} == {
        "route": "gpt-4o-mini", "backend": "cloud", "model": "gpt-4o-mini", "attempts": 1, "code": "OK",
        "prompt_tokens": 10, "completion_tokens": 5}
    assert entry["metadata"] == {"k": "v"}
    assert entry["duration_ms"] >= entry["ttft_ms"] > 0
    assert "private question" not in stderr and SECRET not in stderr and "Hello" not in stderr
