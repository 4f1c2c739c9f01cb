"""deploy/grafana and deploy/prometheus: the alert rules pass `promtool check rules` and their
unit tests (`promtool test rules`), and every Grafana query is PromQL that Prometheus parses.
(tests/e2e/test_dashboard.py checks that the metrics they name are the ones pygw exports.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana" / "pygw-dashboard.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool absent (Debian's prometheus package; make system-packages)")
    return found


def run(*args: str) -> str:
    done = subprocess.run(
        args, cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GRAFANA.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def test_alert_rules_pass_promtool() -> None:
    tool = promtool()
    assert "SUCCESS: 9 rules found" in run(tool, "check", "rules", "pygw-alerts.yml")
    run(tool, "test", "rules", "pygw-alerts.test.yml")


def test_every_alert_named_in_the_docs_has_a_rule_and_a_severity() -> None:
    rules = yaml.safe_load((PROMETHEUS / "pygw-alerts.yml").read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {
        "PygwHighErrorRatio",
        "PygwHighLatencyP99",
        "PygwThrottling",
        "PygwUpstreamUnhealthy",
        "PygwConfigReloadFailed",
    } <= names
    assert all(rule["labels"]["severity"] in ("page", "warning") for rule in rules)


def test_grafana_queries_parse_as_promql(tmp_path: Path) -> None:
    tool = promtool()
    # Grafana's variables as Prometheus would see them once Grafana has substituted them.
    substituted = [
        (
            title,
            expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$api", ".*"),
        )
        for title, expr in queries()
    ]
    assert len(substituted) >= 20
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [
                    {"record": f"pygw:panel_{number}", "expr": expr}
                    for number, (_, expr) in enumerate(substituted)
                ],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    run(tool, "check", "rules", str(path))


def test_grafana_dashboard_is_importable() -> None:
    found = dashboard()
    assert found["uid"] == "pygw-gateway"
    panels = found["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in found["templating"]["list"]}
    assert names == {"datasource", "instance", "api"}
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    titles = " ".join(panel["title"] for panel in panels).lower()
    for topic in (
        "request rate",
        "p99",
        "error",
        "overhead",
        "stage",
        "throttled",
        "cache",
        "upstream",
        "websocket",
        "reload",
    ):
        assert topic in titles, topic
    assert all(re.search(r"pygw_\w+", expr) for _, expr in queries())
