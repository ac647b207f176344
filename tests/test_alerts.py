"""The alert rules behave as intended on fixtures (`promtool test rules`):
the caller's own deadlines and per-key limits never page as errors, a gateway
that is not scraped and a route with no healthy target do, a saturated
scheduler queue warns. The dashboard
filters by instance and labels its rates with units."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "turnout.json"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH; scripts/system-deps.sh installs it (Debian's prometheus)", pytrace=False)
    return path


def test_alert_rules_pass_their_fixtures():
    result = subprocess.run([_promtool(), "test", "rules", str(ROOT / "tests" / "prometheus" / "alerts_test.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_fixtures():
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    fixtures = yaml.safe_load((ROOT / "tests" / "prometheus" / "alerts_test.yml").read_text())
    tested = {case["alertname"] for test in fixtures["tests"] for case in test["alert_rule_test"]}
    untested = {"TurnoutBackendDown", "TurnoutAllBackendsDown", "TurnoutSlowFirstToken", "TurnoutRetryStorm"}
    assert alerts - untested <= tested, f"alerts without fixtures: {sorted(alerts - untested - tested)}"


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_the_dashboard_filters_every_query_by_instance():
    dashboard = json.loads(DASHBOARD.read_text())
    instance = next(v for v in dashboard["templating"]["list"] if v["name"] == "instance")
    assert instance["includeAll"] and instance["query"] == "label_values(turnout_build_info, instance)"
    for panel in _panels():
        for target in panel["targets"]:
            selectors = re.findall(r"turnout_[a-z_]+(\{[^}]*\})?", target["expr"])
            assert selectors and all('instance=~"$instance"' in s for s in selectors), target["expr"]


def test_every_rate_panel_has_a_unit():
    for panel in _panels():
        if any("rate(" in t["expr"] and "histogram_quantile" not in t["expr"] for t in panel["targets"]):
            assert panel["fieldConfig"]["defaults"].get("unit", "none") != "none", panel["title"]


def test_the_dashboards_error_ratio_counts_what_the_alert_counts():
    rules = yaml.safe_load(ALERTS.read_text())
    alert = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "TurnoutHighErrorRatio")
    codes = re.search(r'code=~"([^"]+)"', alert["expr"]).group(1)
    panel = next(p for p in _panels() if p["title"].startswith("Error ratio"))
    assert f'code=~"{codes}"' in panel["targets"][0]["expr"]
